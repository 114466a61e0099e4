"""`gss-segment`: the PNGs it writes, the class areas it prints, and how it refuses bad inputs (on a tiny model)."""

import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

from gss_hf import GSSForSemanticSegmentation, GSSImageProcessor
from gss_hf.segment_cli import class_areas, main
from tiny_models import NUM_TINY_LABELS, tiny_gss_config


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-gss")
    GSSForSemanticSegmentation(tiny_gss_config()).save_pretrained(folder)
    GSSImageProcessor(size={"shortest_edge": 48}).save_pretrained(folder)
    return folder


@pytest.fixture
def photo_path(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    path = tmp_path / "street.jpg"
    PIL.Image.fromarray(pixels).save(path)
    return path


def test_writes_overlay_maskige_and_labels_at_the_photo_size(model_folder, photo_path, tmp_path, capsys):
    output_dir = tmp_path / "out"
    assert main([str(photo_path), "--model", str(model_folder), "--output-dir", str(output_dir)]) == 0

    overlay = PIL.Image.open(output_dir / "street_overlay.png")
    maskige = PIL.Image.open(output_dir / "street_maskige.png")
    labels = PIL.Image.open(output_dir / "street_labels.png")
    for image, mode in ((overlay, "RGB"), (maskige, "RGB"), (labels, "L")):
        image.verify()
        assert image.size == (53, 37) and image.mode == mode
    label_values = np.array(PIL.Image.open(output_dir / "street_labels.png"))
    assert label_values.max() < NUM_TINY_LABELS

    printed = capsys.readouterr().out
    areas = class_areas(label_values, {index: f"class_{index}" for index in range(NUM_TINY_LABELS)})
    assert sum(percent for _, percent in areas) == pytest.approx(100.0)
    for name, percent in areas:
        assert f"{name:<14} {percent:5.1f} %" in printed


def test_sliding_window_writes_the_same_files(model_folder, photo_path, tmp_path):
    output_dir = tmp_path / "out"
    arguments = [str(photo_path), "--model", str(model_folder), "--output-dir", str(output_dir), "--sliding-window"]
    assert main(arguments) == 0
    assert PIL.Image.open(output_dir / "street_labels.png").size == (53, 37)


def test_class_areas_are_sorted_and_skip_absent_classes():
    labels = np.array([[0, 0, 0, 2]])
    assert class_areas(labels, {0: "road", 1: "sky", 2: "car"}) == [("road", 75.0), ("car", 25.0)]


@pytest.mark.parametrize("kind", ["missing", "directory", "not_an_image"])
def test_bad_inputs_fail_before_any_output(model_folder, photo_path, tmp_path, capsys, kind):
    bad = {"missing": tmp_path / "nope.png", "directory": tmp_path, "not_an_image": tmp_path / "notes.png"}[kind]
    if kind == "not_an_image":
        bad.write_text("not pixels")
    output_dir = tmp_path / "out"
    # The good photo comes first: nothing may be written for it when a later input is bad.
    assert main([str(photo_path), str(bad), "--model", str(model_folder), "--output-dir", str(output_dir)]) == 2
    error = capsys.readouterr().err
    expected = {"missing": "no such file", "directory": "is a directory", "not_an_image": "not an image"}[kind]
    assert str(bad) in error and expected in error
    assert not output_dir.exists()


def test_same_file_names_would_overwrite_each_other(model_folder, photo_path, tmp_path, capsys):
    other = tmp_path / "second"
    other.mkdir()
    twin = other / photo_path.name
    twin.write_bytes(photo_path.read_bytes())
    assert main([str(photo_path), str(twin), "--model", str(model_folder), "--output-dir", str(tmp_path / "o")]) == 2
    assert "share a file name" in capsys.readouterr().err


def test_console_script_is_installed_and_documents_itself():
    completed = subprocess.run([sys.executable, "-m", "gss_hf.segment_cli", "--help"], capture_output=True, text=True)
    assert completed.returncode == 0 and "--sliding-window" in completed.stdout
    from importlib.metadata import entry_points

    scripts = {entry.name: entry.value for entry in entry_points(group="console_scripts")}
    assert scripts.get("gss-segment") == "gss_hf.segment_cli:main"
