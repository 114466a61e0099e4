"""`gss-segment`: the PNGs it writes, the class areas it prints, and how it refuses bad inputs (on a tiny model)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from transformers.utils import logging as transformers_logging

from gss_hf import GSSForSemanticSegmentation, GSSImageProcessor, cli_paths, segment_cli
from gss_hf.segment_cli import main
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
    counts = np.bincount(label_values.ravel(), minlength=NUM_TINY_LABELS)
    for index, count in enumerate(counts):
        if count:
            assert f"{f'class_{index}':<14} {100.0 * count / label_values.size:5.1f} %" in printed


def test_sliding_window_writes_the_same_files(model_folder, photo_path, tmp_path):
    output_dir = tmp_path / "out"
    arguments = [str(photo_path), "--model", str(model_folder), "--output-dir", str(output_dir), "--sliding-window"]
    assert main(arguments) == 0
    assert PIL.Image.open(output_dir / "street_labels.png").size == (53, 37)


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


@pytest.mark.slow
def test_console_script_is_installed_and_documents_itself():
    completed = subprocess.run([sys.executable, "-m", "gss_hf.segment_cli", "--help"], capture_output=True, text=True)
    assert completed.returncode == 0 and "--sliding-window" in completed.stdout
    help_text = " ".join(completed.stdout.split())
    for words in ("_legend.json", "class id, 0..K-1", "--verbose", "at its own size", "resizes the photo"):
        assert words in help_text
    from importlib.metadata import entry_points

    scripts = {entry.name: entry.value for entry in entry_points(group="console_scripts")}
    assert scripts.get("gss-segment") == "gss_hf.segment_cli:main"


# --- 16-bit photos ---------------------------------------------------------------------------------------------------


def test_16_bit_grey_photo_overlay_is_the_8_bit_one_not_white(model_folder, tmp_path):
    grey = np.random.default_rng(1).integers(100, 160, size=(37, 53), dtype=np.uint8)
    PIL.Image.fromarray(grey).save(tmp_path / "grey8.png")
    PIL.Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    assert PIL.Image.open(tmp_path / "grey16.png").mode == "I;16"
    output_dir = tmp_path / "out"
    photos = [str(tmp_path / "grey8.png"), str(tmp_path / "grey16.png")]
    assert main([*photos, "--model", str(model_folder), "--output-dir", str(output_dir)]) == 0

    overlay_8 = np.array(PIL.Image.open(output_dir / "grey8_overlay.png"))
    overlay_16 = np.array(PIL.Image.open(output_dir / "grey16_overlay.png"))
    labels_8 = np.array(PIL.Image.open(output_dir / "grey8_labels.png"))
    np.testing.assert_array_equal(np.array(PIL.Image.open(output_dir / "grey16_labels.png")), labels_8)
    np.testing.assert_array_equal(overlay_16, overlay_8)
    # Half the photo's grey: far from the 255-clipped photo that convert("RGB") made of a 16-bit PNG.
    colors = np.asarray(GSSForSemanticSegmentation.config_class.from_pretrained(model_folder).palette)[labels_8]
    expected = (grey[..., None].astype(float) + colors) / 2
    assert np.abs(overlay_16 - expected).max() <= 1


# --- the output folder and the model: one line each, before anything is segmented ---------------------------------


def fail_if_loaded(argument):
    raise AssertionError("the model was loaded although the output folder is unusable")


def test_output_dir_under_a_file_fails_before_loading(model_folder, photo_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(segment_cli, "load_model", fail_if_loaded)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("text")
    for output_dir in (a_file, a_file / "out"):
        assert main([str(photo_path), "--model", str(model_folder), "--output-dir", str(output_dir)]) == 2
        error = capsys.readouterr().err
        assert error.startswith(f"gss-segment: error: --output-dir {output_dir}: ") and error.count("\n") == 1
        assert "is a file" in error


def test_unwritable_output_dir_fails_before_loading(model_folder, photo_path, tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # chmod does not stop root, so the permission check itself is what this test drives.
    monkeypatch.setattr(cli_paths.os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    monkeypatch.setattr(segment_cli, "load_model", fail_if_loaded)
    assert main([str(photo_path), "--model", str(model_folder), "--output-dir", str(locked / "out")]) == 2
    error = capsys.readouterr().err
    assert f"{locked} is not writable" in error and error.count("\n") == 1


def broken_model_folder(kind, model_folder, tmp_path):
    """`--model` for each kind of broken model, and the words its error must contain."""
    folder = tmp_path / kind
    if kind in ("other_model_type", "empty", "no_weights", "truncated_weights"):
        folder.mkdir()
    if kind == "other_model_type":
        (folder / "config.json").write_text(json.dumps({"model_type": "segformer"}))
        return str(folder), ["'segformer' model", "expects a GSS model"]
    if kind == "empty":
        return str(folder), ["folder is empty"]
    if kind == "no_weights":
        for name in ("config.json", "preprocessor_config.json"):
            shutil.copy(model_folder / name, folder)
        return str(folder), ["no weights"]
    if kind == "truncated_weights":
        for path in model_folder.iterdir():
            shutil.copy(path, folder)
        weights = (model_folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(weights[: len(weights) // 2])
        return str(folder), [str(folder / "model.safetensors"), "truncated"]
    if kind == "missing_absolute":
        return str(tmp_path / "gss-modle"), [f"--model {tmp_path / 'gss-modle'}: the folder does not exist"]
    if kind == "missing_relative":
        return "./models/gss-modle", ["--model ./models/gss-modle: the folder does not exist"]
    assert kind == "hub_id_offline"
    return "some-org/gss-model-that-is-not-cached", ["could not be downloaded", "offline mode is on", "local"]


@pytest.mark.parametrize(
    "kind",
    ["other_model_type", "empty", "no_weights", "truncated_weights", "missing_absolute", "missing_relative",
     "hub_id_offline"],
)  # fmt: skip
def test_bad_model_gives_one_line(model_folder, photo_path, tmp_path, capsys, kind):
    argument, expected = broken_model_folder(kind, model_folder, tmp_path)
    output_dir = tmp_path / "out"
    assert main([str(photo_path), "--model", argument, "--output-dir", str(output_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("gss-segment: error: ") and captured.err.count("\n") == 1, captured.err
    for words in expected:
        assert words in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not output_dir.exists()


# --- sliding window at native resolution --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("sliding_window", [False, True])
def test_sliding_window_runs_at_the_photo_size_and_whole_image_at_the_processor_size(
    model_folder, tmp_path, monkeypatch, sliding_window
):
    pixels = np.random.default_rng(2).integers(0, 256, size=(400, 800, 3), dtype=np.uint8)
    PIL.Image.fromarray(pixels).save(tmp_path / "wide.png")
    calls = []
    real_forward = GSSForSemanticSegmentation.forward

    def spy(self, pixel_values=None, **kwargs):
        calls.append((tuple(pixel_values.shape), kwargs.get("sliding_window")))
        return real_forward(self, pixel_values=pixel_values, **kwargs)

    monkeypatch.setattr(GSSForSemanticSegmentation, "forward", spy)
    arguments = [str(tmp_path / "wide.png"), "--model", str(model_folder), "--output-dir", str(tmp_path / "out")]
    assert main(arguments + ["--sliding-window"] * sliding_window) == 0
    # The fixture's processor resizes to a 48-pixel short edge; sliding window keeps the 400x800 photo as it is.
    assert calls == [((1, 3, 400, 800), True)] if sliding_window else [((1, 3, 48, 96), False)]
    assert PIL.Image.open(tmp_path / "out" / "wide_labels.png").size == (800, 400)


# --- the legend ---------------------------------------------------------------------------------------------------


def test_legend_matches_the_label_png(model_folder, photo_path, tmp_path):
    output_dir = tmp_path / "out"
    assert main([str(photo_path), "--model", str(model_folder), "--output-dir", str(output_dir)]) == 0
    labels = np.array(PIL.Image.open(output_dir / "street_labels.png"))
    legend = json.loads((output_dir / "street_legend.json").read_text())
    config = GSSForSemanticSegmentation.config_class.from_pretrained(model_folder)

    assert legend["labels"] == "street_labels.png"
    classes = legend["classes"]
    assert sorted(entry["id"] for entry in classes) == sorted(np.unique(labels).tolist())
    assert sum(entry["area_fraction"] for entry in classes) == pytest.approx(1.0)
    fractions = [entry["area_fraction"] for entry in classes]
    assert fractions == sorted(fractions, reverse=True)
    for entry in classes:
        assert entry["name"] == config.id2label[entry["id"]]
        assert entry["color"] == list(config.palette[entry["id"]])
        assert entry["area_fraction"] == pytest.approx((labels == entry["id"]).mean())


# --- quiet loading ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_loading_is_quiet_unless_verbose(model_folder, photo_path, tmp_path, capfd):
    verbosity = transformers_logging.get_verbosity()
    arguments = [str(photo_path), "--model", str(model_folder), "--output-dir", str(tmp_path / "out")]
    assert main(arguments) == 0
    captured = capfd.readouterr()
    assert "Loading weights" not in captured.out + captured.err
    assert transformers_logging.get_verbosity() == verbosity and transformers_logging.is_progress_bar_enabled()

    assert main(arguments + ["--verbose"]) == 0
    captured = capfd.readouterr()
    assert "Loading weights" in captured.out + captured.err


def test_samples_add_an_uncertainty_heat_map_and_keep_the_usual_label_map(model_folder, photo_path, tmp_path, capsys):
    usual, sampled = tmp_path / "usual", tmp_path / "sampled"
    base = [str(photo_path), "--model", str(model_folder)]
    assert main([*base, "--output-dir", str(usual)]) == 0
    assert main([*base, "--output-dir", str(sampled), "--samples", "3", "--temperature", "2", "--seed", "5"]) == 0
    assert "street_{labels,overlay,maskige,uncertainty}.png" in capsys.readouterr().out
    for name in ("labels", "maskige"):
        assert np.array_equal(np.array(PIL.Image.open(usual / f"street_{name}.png")),
                              np.array(PIL.Image.open(sampled / f"street_{name}.png"))), name  # fmt: skip
    heat_map = PIL.Image.open(sampled / "street_uncertainty.png")
    assert heat_map.mode == "RGB" and heat_map.height == 37 and heat_map.width > 53  # the colour bar on the right
    pixels = np.array(heat_map)
    assert len(np.unique(pixels[:, :53].reshape(-1, 3), axis=0)) > 1
    described = json.loads((sampled / "street_legend.json").read_text())["uncertainty"]
    assert described["samples"] == 3 and described["temperature"] == 2.0 and described["seed"] == 5
    assert 0 < described["mean_nats"] <= described["color_bar_max_nats"] == pytest.approx(np.log(3))
    again = tmp_path / "again"
    assert main([*base, "--output-dir", str(again), "--samples", "3", "--temperature", "2", "--seed", "5"]) == 0
    assert np.array_equal(pixels, np.array(PIL.Image.open(again / "street_uncertainty.png")))
    assert not (usual / "street_uncertainty.png").exists()


def test_hot_colour_ramp_runs_from_black_through_red_and_yellow_to_white():
    colors = segment_cli.hot_colors(np.array([-1.0, 0.0, 1 / 3, 2 / 3, 1.0, 2.0]))
    assert colors.tolist() == [[0, 0, 0], [0, 0, 0], [255, 0, 0], [255, 255, 0], [255, 255, 255], [255, 255, 255]]


@pytest.mark.parametrize(
    "arguments, says",
    [
        (["--samples", "0"], "argument --samples: must be a positive integer, got '0'"),
        (["--samples", "two"], "argument --samples: must be a positive integer, got 'two'"),
        (["--samples", "2", "--temperature", "0"], "argument --temperature: must be a finite number > 0, got '0'"),
        (["--samples", "2", "--temperature", "inf"], "argument --temperature: must be a finite number > 0, got 'inf'"),
        (["--temperature", "0.5"], "--temperature only applies with --samples N."),
        (["--seed", "3"], "--seed only applies with --samples N."),
    ],
)
def test_bad_sampling_options_fail_before_any_output(model_folder, photo_path, tmp_path, capsys, arguments, says):
    output_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main([str(photo_path), "--model", str(model_folder), "--output-dir", str(output_dir), *arguments])
    assert exit_.value.code == 2 and says in capsys.readouterr().err
    assert not output_dir.exists()
