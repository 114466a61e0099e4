"""The CamVid model shipped inside the package: it loads the ways users load models, stays small, and still scores
what `benchmarks/camvid_results.py` recorded for it (a regression guard recomputed from the model every run)."""

import json
from pathlib import Path

import PIL.Image
import pytest
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline

from gss_hf.segment_cli import EMBEDDED_MODEL
from training.data import read_camvid_val_photos
from training.evaluation import evaluate_photos


REPO = Path(__file__).resolve().parents[1]


EXAMPLE_PHOTO = REPO / "examples" / "camvid_0016E5_08115.png"
RESULTS = REPO / "benchmarks" / "camvid_results.json"
MAX_FOLDER_MEGABYTES = 40
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
    megabytes = sum(path.stat().st_size for path in EMBEDDED_MODEL.iterdir()) / 2**20
    assert megabytes <= MAX_FOLDER_MEGABYTES


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


def test_ten_val_photos_miou_matches_the_results_table(model_and_processor, reference, camvid_dir):
    assert reference["photos"]  # benchmarks/camvid_results.py writes its REGRESSION_PHOTOS here
    scores = evaluate_photos(*model_and_processor, *read_camvid_val_photos(camvid_dir, reference["photos"]))
    assert scores["mean_iou"] == pytest.approx(reference["photos_mean_iou"], abs=TOLERANCE)


def test_the_code_files_for_trust_remote_code_are_the_package_s_current_ones():
    """The folder's copies of the model code must follow every change to the package, or users loading it with
    `trust_remote_code` (without gss_hf) would run other code than the one tested here."""
    package = EMBEDDED_MODEL.parents[1]
    copies = sorted(EMBEDDED_MODEL.glob("*.py"))
    assert copies
    stale = [path.name for path in copies if path.read_text() != (package / path.name).read_text()]
    assert not stale, f"re-export the embedded model: {stale} differ from gss_hf/"
