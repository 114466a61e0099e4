"""Hub-native loading: Auto classes, a saved folder that loads with `trust_remote_code` where `gss_hf` is not
installed, and the image-segmentation pipeline on a real CamVid photo."""

import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from gss_hf import GSSConfig, GSSForSemanticSegmentation, GSSImageProcessor
from tiny_models import tiny_gss_config


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory):
    """A tiny GSS model and its processor, saved as a Hub repository would hold them."""
    folder = tmp_path_factory.mktemp("gss-tiny")
    torch.manual_seed(0)
    GSSForSemanticSegmentation(tiny_gss_config(inverse_type="learned")).save_pretrained(folder)
    GSSImageProcessor(size={"height": 64, "width": 96}).save_pretrained(folder)
    return folder


def test_save_pretrained_writes_weights_processor_code_and_auto_map(saved_folder):
    files = set(os.listdir(saved_folder))
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= files
    assert {"modeling_gss.py", "configuration_gss.py", "image_processing_gss.py", "maskige.py"} <= files
    auto_map = json.loads((saved_folder / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_gss.GSSConfig",
        "AutoModelForSemanticSegmentation": "modeling_gss.GSSForSemanticSegmentation",
    }
    processor_map = json.loads((saved_folder / "preprocessor_config.json").read_text())["auto_map"]
    assert processor_map["AutoImageProcessor"] == "image_processing_gss.GSSImageProcessor"
    for code_file in files - {"config.json", "model.safetensors", "preprocessor_config.json"}:
        imports = re.findall(r"^\s*(?:from|import) (\S+)", (saved_folder / code_file).read_text(), re.MULTILINE)
        assert not [name for name in imports if name.startswith("gss_hf")], f"{code_file} imports the package"


def test_auto_classes_resolve_to_gss(saved_folder):
    assert isinstance(AutoConfig.from_pretrained(saved_folder), GSSConfig)
    assert isinstance(AutoModelForSemanticSegmentation.from_pretrained(saved_folder), GSSForSemanticSegmentation)
    assert isinstance(AutoImageProcessor.from_pretrained(saved_folder), GSSImageProcessor)


REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    class RefuseGssHf(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "gss_hf" or name.startswith("gss_hf."):
                raise ImportError("gss_hf is hidden in this process")

    sys.meta_path.insert(0, RefuseGssHf())
    try:
        import gss_hf
    except ImportError:
        pass
    else:
        raise SystemExit("gss_hf is importable")

    import numpy as np, torch
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline

    folder = sys.argv[1]
    model = AutoModelForSemanticSegmentation.from_pretrained(folder, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    assert not type(model).__module__.startswith("gss_hf"), type(model).__module__
    photo = Image.fromarray(np.load(folder + "/photo.npy"))
    with torch.no_grad():
        logits = model(**processor(images=photo, return_tensors="pt")).logits
    torch.testing.assert_close(logits, torch.load(folder + "/expected_logits.pt"), rtol=0, atol=0)
    segments = pipeline("image-segmentation", model=folder, trust_remote_code=True)(photo)
    print("labels", sorted(segment["label"] for segment in segments))
    """
)


@pytest.mark.slow
def test_trust_remote_code_load_without_the_package(saved_folder, tmp_path):
    photo = (np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8)
    np.save(saved_folder / "photo.npy", photo)
    model = GSSForSemanticSegmentation.from_pretrained(saved_folder)
    processor = GSSImageProcessor.from_pretrained(saved_folder)
    with torch.no_grad():
        torch.save(model(**processor(images=Image.fromarray(photo), return_tensors="pt")).logits,
                   saved_folder / "expected_logits.pt")
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, str(saved_folder)],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "labels [" in result.stdout
    assert "is not supported for" not in result.stderr


def test_pipeline_segments_a_real_camvid_photo(saved_folder, camvid_dir, monkeypatch):
    photo_path = sorted((camvid_dir / "val").glob("*.png"))[0]
    photo = Image.open(photo_path)
    prompts = []
    monkeypatch.setattr("builtins.input", lambda prompt="": prompts.append(prompt) or "n")
    logger = logging.get_logger("transformers.pipelines.base")
    with CaptureLogger(logger) as captured:
        segmenter = pipeline("image-segmentation", model=str(saved_folder))
        segments = segmenter(str(photo_path))
    assert "not supported" not in captured.out
    assert prompts == [], "the installed package must load without asking to run remote code"
    id2label = AutoConfig.from_pretrained(saved_folder).id2label
    assert segments and {segment["label"] for segment in segments} <= set(id2label.values())
    masks = np.stack([np.array(segment["mask"]) > 0 for segment in segments])
    assert masks.shape[1:] == (photo.height, photo.width)
    assert (masks.sum(0) == 1).all(), "every pixel belongs to exactly one class mask"
