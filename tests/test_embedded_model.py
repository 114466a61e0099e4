"""The CamVid model shipped inside the package: it loads the ways users load models, stays small, and still scores
what `benchmarks/camvid_results.py` recorded for it (a regression guard recomputed from the model every run)."""

import json
from pathlib import Path

import PIL.Image
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline

from gss_hf.segment_cli import EMBEDDED_MODEL
from training.data import read_camvid_val_photos
from training.evaluation import evaluate_photos


REPO = Path(__file__).resolve().parents[1]


EXAMPLE_PHOTO = REPO / "examples" / "camvid_0016E5_08115.png"
RESULTS = REPO / "benchmarks" / "camvid_results.json"
MAX_FOLDER_MEGABYTES = 40
MAX_TOKEN_PRIOR_MEGABYTES = 10  # issue 18: the prior ships inside the package only while it stays this small
TOLERANCE = 0.01  # 1 mIoU point


@pytest.fixture(scope="module")
def model_and_processor():
    return (
        AutoModelForSemanticSegmentation.from_pretrained(EMBEDDED_MODEL),
        AutoImageProcessor.from_pretrained(EMBEDDED_MODEL),
    )


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(RESULTS.read_text())["regression_reference"]


def test_the_folder_is_a_complete_small_save_pretrained_folder():
    names = {path.name for path in EMBEDDED_MODEL.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "modeling_gss.py"} <= names
    megabytes = sum(path.stat().st_size for path in EMBEDDED_MODEL.rglob("*") if path.is_file()) / 2**20
    assert megabytes <= MAX_FOLDER_MEGABYTES
    prior_megabytes = sum(path.stat().st_size for path in (EMBEDDED_MODEL / "token_prior").iterdir()) / 2**20
    assert prior_megabytes <= MAX_TOKEN_PRIOR_MEGABYTES


def test_loads_through_auto_classes_and_pipeline(model_and_processor):
    model, processor = model_and_processor
    assert model.config.model_type == "gss" and model.config.num_labels == 11
    assert type(processor).__name__ == "GSSImageProcessor"
    photo = PIL.Image.open(EXAMPLE_PHOTO)
    segments = pipeline("image-segmentation", model=model, image_processor=processor)(photo)
    labels = {segment["label"] for segment in segments}
    assert labels <= set(model.config.id2label.values()) and {"road", "sky"} <= labels
    assert all(segment["mask"].size == photo.size for segment in segments)


def test_example_photo_is_the_shipped_camvid_val_photo(camvid_dir):
    shipped = PIL.Image.open(EXAMPLE_PHOTO).convert("RGB")
    original = PIL.Image.open(camvid_dir / "val" / EXAMPLE_PHOTO.name.removeprefix("camvid_")).convert("RGB")
    assert shipped.tobytes() == original.tobytes()


def test_example_photo_miou_matches_the_results_table(model_and_processor, reference, camvid_dir):
    assert reference["example_photo"] == EXAMPLE_PHOTO.name.removeprefix("camvid_")
    photos, labels = read_camvid_val_photos(camvid_dir, [reference["example_photo"]])
    scores = evaluate_photos(*model_and_processor, photos, labels)
    assert scores["mean_iou"] == pytest.approx(reference["example_photo_mean_iou"], abs=TOLERANCE)


@pytest.mark.slow
def test_ten_val_photos_miou_matches_the_results_table(model_and_processor, reference, camvid_dir):
    assert reference["photos"]  # benchmarks/camvid_results.py writes its REGRESSION_PHOTOS here
    scores = evaluate_photos(*model_and_processor, *read_camvid_val_photos(camvid_dir, reference["photos"]))
    assert scores["mean_iou"] == pytest.approx(reference["photos_mean_iou"], abs=TOLERANCE)


def test_the_folder_is_exactly_what_save_pretrained_writes_from_the_package(model_and_processor, tmp_path):
    """The folder is generated (training/export_embedded_model.py): saving its model and processor again with the
    package must give the same files, every code file for `trust_remote_code` (a new sibling module cannot be
    forgotten), the config and the processor config, and the same weights. Only the model card is the export's."""
    model, processor = model_and_processor
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    shipped = {path.name for path in EMBEDDED_MODEL.iterdir()}
    fresh = {path.name for path in tmp_path.iterdir()}
    assert shipped - fresh == {"README.md", "token_prior"}, "re-export the embedded model (training/export_embedded_model.py)"
    assert fresh - shipped == set(), "re-export the embedded model: a file is missing from it"
    stale = [
        name
        for name in sorted(fresh)
        if name != "model.safetensors" and (tmp_path / name).read_text() != (EMBEDDED_MODEL / name).read_text()
    ]
    assert not stale, f"re-export the embedded model: {stale} differ from a fresh save"
    saved, shipped_weights = load_file(tmp_path / "model.safetensors"), load_file(EMBEDDED_MODEL / "model.safetensors")
    assert saved.keys() == shipped_weights.keys()
    assert all(torch.equal(saved[key], shipped_weights[key]) for key in saved)
    assert "This folder is generated" in (EMBEDDED_MODEL / "README.md").read_text()


def test_the_token_prior_is_what_save_pretrained_writes_and_fits_the_tokenizer(model_and_processor, tmp_path):
    """The `token_prior` subfolder (`gss-generate`'s default) is a fresh save of the prior, for this tokenizer."""
    from gss_hf import GSSTokenPriorModel, sample_label_maps

    shipped = EMBEDDED_MODEL / "token_prior"
    prior = GSSTokenPriorModel.from_pretrained(shipped).eval()
    prior.save_pretrained(tmp_path)
    assert {path.name for path in shipped.iterdir()} == {path.name for path in tmp_path.iterdir()}
    for path in tmp_path.iterdir():
        if path.suffix != ".safetensors":
            assert path.read_text() == (shipped / path.name).read_text(), f"re-export: {path.name} is stale"
    saved, shipped_weights = load_file(tmp_path / "model.safetensors"), load_file(shipped / "model.safetensors")
    assert all(torch.equal(saved[key], shipped_weights[key]) for key in shipped_weights)
    model = model_and_processor[0]
    labels, _ = sample_label_maps(prior, model.tokenizer, model.config.palette, 1, num_steps=2,
                                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert labels.shape == (1, 96, 128)
