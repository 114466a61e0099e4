"""`python -m gss_hf.convert_official_gss` on checkpoint files: the folder and model card it writes, `--dalle_dir`,
`--push_to_hub`, and every kind of bad input it refuses with one line, leaving nothing behind. The numbers are
checked in tests/test_convert_official_gss.py; these use the official ADE20K GSS-FF test model
(`../shared/data/official_gss`, skipped when absent)."""

import os
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file

from gss_hf.convert_official_gss import (
    DVAE,
    RELEASED_MODELS,
    convert_official_state_dict,
    main,
    official_config,
    write_converted_model_card,
)
from gss_hf.modeling_dalle_dvae import DalleTokenizer
from official_gss import full_size_meta_state_dict, official_gss_file


@pytest.fixture(scope="module")
def official_state_dict() -> dict[str, torch.Tensor]:
    return load_file(official_gss_file("ade20k_ff_swin_tiny", "official_state_dict.safetensors"))


@pytest.fixture
def checkpoint(official_state_dict, tmp_path) -> Path:
    """An mmcv-style checkpoint file (`meta`, `state_dict`, `optimizer`), as the authors released theirs."""
    path = tmp_path / "gss-ff_ade20k.pth"
    torch.save({"meta": {"mmcv_version": "1.6.0", "iter": 160000}, "state_dict": official_state_dict,
                "optimizer": {"state": {}, "param_groups": [{"lr": 1e-6}]}}, path)  # fmt: skip
    return path


def official_dalle_dir() -> Path:
    return official_gss_file("dalle_tiny", "encoder.pkl").parent


def run(argv: list[str], capsys) -> tuple[int, str]:
    """`main(argv)` -> (exit status, stderr)."""
    try:
        main([str(argument) for argument in argv])
    except SystemExit as exit:
        return exit.code, capsys.readouterr().err
    return 0, capsys.readouterr().err


def refused(argv: list[str], capsys, message: str, output_dir: Path) -> None:
    """The command exits with status 2 and one `error:` line matching `message`, and writes nothing."""
    status, error = run(argv, capsys)
    assert status == 2, error
    last_line = error.strip().splitlines()[-1]  # after any progress bar of the save
    assert last_line.startswith("convert_official_gss: error: ") and message in last_line, error
    assert not output_dir.exists()
    assert not [path for path in output_dir.parent.iterdir() if path.name.startswith(f".{output_dir.name}-")]


# ---------------------------------------------------------------------------------------------------------------
# What a conversion writes
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_command_writes_a_complete_folder_with_a_model_card(checkpoint, tmp_path, capsys):
    output_dir = tmp_path / "gss-ff-converted"
    status, error = run(["--checkpoint", checkpoint, "--output_dir", output_dir], capsys)
    assert status == 0, error
    names = {path.name for path in output_dir.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "README.md"} <= names
    assert {"modeling_gss.py", "configuration_gss.py", "image_processing_gss.py", "modeling_dalle_dvae.py"} <= names
    card = ModelCard.load(output_dir / "README.md")
    assert card.data.license == "unknown" and card.data.pipeline_tag == "image-segmentation"
    import hashlib

    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() in card.text
    assert "gss-ff_ade20k.pth" in card.text and "matches none of the released models" in card.text
    assert "Modified MIT" in card.text and "@inproceedings{chen2023generative" in card.text
    assert "reported by the authors" not in card.text  # a shrunk test model has no reported score


def test_the_card_of_a_released_architecture_labels_the_reported_miou_as_reported(tmp_path):
    release = next(release for release in RELEASED_MODELS if release.preset == "gss-ftw-resnet101")
    config = official_config(full_size_meta_state_dict("state_dict_keys_cityscapes_ftw_r101.txt"))
    checkpoint = tmp_path / "iter_40000.pth"
    checkpoint.write_bytes(b"stand-in")
    card = write_converted_model_card(tmp_path / "card", "user/gss-ftw-r101", checkpoint, config, release, "cmd")
    assert "mIoU, reported by the authors (not re-measured here)" in card.text
    assert "| Cityscapes val | 78.46 |" in card.text and release.official_config in card.text
    assert "sliding window of 768-pixel crops every 512 pixels" in card.text
    assert 'from_pretrained("user/gss-ftw-r101"' in card.text


@pytest.mark.slow
def test_dalle_dir_gives_a_checkpoint_without_its_dvae_the_same_model(official_state_dict, tmp_path, capsys):
    without_dvae = {key: value for key, value in official_state_dict.items() if not key.startswith(DVAE)}
    dvae = DalleTokenizer.from_openai_pickles(official_dalle_dir() / "encoder.pkl", official_dalle_dir() / "decoder.pkl")
    config, weights = convert_official_state_dict(without_dvae, dvae=dvae)
    expected_config, expected = convert_official_state_dict(official_state_dict)
    assert config.tokenizer_config == expected_config.tokenizer_config
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[key], expected[key]) for key in expected)

    save_file(without_dvae, tmp_path / "without_dvae.safetensors")
    output_dir = tmp_path / "converted"
    argv = ["--checkpoint", tmp_path / "without_dvae.safetensors", "--output_dir", output_dir]
    status, error = run([*argv, "--dalle_dir", official_dalle_dir()], capsys)
    assert status == 0, error
    assert torch.equal(load_file(output_dir / "model.safetensors")["tokenizer.encoder.blocks.input.weight"],
                       expected["tokenizer.encoder.blocks.input.weight"])  # fmt: skip


@pytest.mark.slow
def test_push_to_hub_offline_fails_in_one_line_and_leaves_the_folder_intact(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output_dir = tmp_path / "converted"
    argv = ["--checkpoint", checkpoint, "--output_dir", output_dir, "--push_to_hub", "--hub_model_id", "user/gss"]
    status, error = run(argv, capsys)
    assert status == 2 and "Pushing" in error and "HF_HUB_OFFLINE" in error, error
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "README.md").is_file()
    assert 'from_pretrained("user/gss"' in (output_dir / "README.md").read_text()


def test_push_to_hub_needs_a_repository_id(checkpoint, tmp_path, capsys):
    status, error = run(["--checkpoint", checkpoint, "--output_dir", tmp_path / "out", "--push_to_hub"], capsys)
    assert status == 2 and "--push_to_hub needs --hub_model_id" in error


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2, nothing written
# ---------------------------------------------------------------------------------------------------------------
def test_a_checkpoint_without_dvae_and_no_dalle_dir_is_refused(official_state_dict, tmp_path, capsys):
    without_dvae = {key: value for key, value in official_state_dict.items() if not key.startswith(DVAE)}
    save_file(without_dvae, tmp_path / "without_dvae.safetensors")
    output_dir = tmp_path / "converted"
    argv = ["--checkpoint", tmp_path / "without_dvae.safetensors", "--output_dir", output_dir]
    refused(argv, capsys, "holds no dVAE (`decode_head.d_vae.*`): give OpenAI's encoder.pkl", output_dir)


def test_dalle_dir_for_a_checkpoint_with_its_own_dvae_is_refused(checkpoint, tmp_path, capsys):
    output_dir = tmp_path / "converted"
    argv = ["--checkpoint", checkpoint, "--output_dir", output_dir, "--dalle_dir", official_dalle_dir()]
    refused(argv, capsys, "holds its own dVAE", output_dir)


def test_a_dataset_that_disagrees_with_the_class_count_is_refused(checkpoint, tmp_path, capsys):
    output_dir = tmp_path / "converted"
    argv = ["--checkpoint", checkpoint, "--dataset", "cityscapes", "--output_dir", output_dir]
    refused(argv, capsys, "predicts 150 classes (a ade20k model); the cityscapes palette has 19", output_dir)


def test_an_mseg_checkpoint_is_refused_in_one_sentence():
    state_dict = full_size_meta_state_dict("state_dict_keys_ade20k_ff_swin-l.txt")
    for name in ("conv_seg_pixel.weight", "conv_seg_pixel.bias"):
        shape = state_dict[f"decode_head.{name}"].shape
        state_dict[f"decode_head.{name}"] = torch.empty(194, *shape[1:], device="meta")
    with pytest.raises(ValueError, match=r"This is an MSeg checkpoint \(194 universal classes\).*MSeg API"):
        convert_official_state_dict(state_dict)


def test_an_hrnet_backbone_is_refused_naming_its_keys_and_mseg():
    state_dict = {key: value for key, value in full_size_meta_state_dict("state_dict_keys_ade20k_ff_swin-l.txt").items()
                  if not key.startswith("backbone.")}  # fmt: skip
    for key in ("backbone.conv1.weight", "backbone.transition1.0.0.weight", "backbone.stage2.0.branches.0.weight"):
        state_dict[key] = torch.empty(1, device="meta")
    with pytest.raises(ValueError, match=r"neither mmseg Swin.*'backbone.conv1.weight'.*HRNet.*MSeg's"):
        convert_official_state_dict(state_dict)


def test_another_mmseg_model_is_refused_naming_its_head_keys(official_state_dict):
    backbone = {key: value for key, value in official_state_dict.items() if key.startswith("backbone.")}
    upernet = {**backbone, "decode_head.psp_modules.0.1.conv.weight": torch.zeros(8, 96, 1, 1),
               "decode_head.conv_seg.weight": torch.zeros(150, 8, 1, 1)}  # fmt: skip
    with pytest.raises(ValueError, match=r"Not an official GSS-FF / GSS-FT-W checkpoint.*psp_modules"):
        convert_official_state_dict(upernet)
    with pytest.raises(ValueError, match=r"Keys outside `backbone\.\*` and `decode_head\.\*`.*auxiliary_head"):
        convert_official_state_dict({**upernet, "auxiliary_head.conv_seg.weight": torch.zeros(150, 8, 1, 1)})


def test_unmapped_keys_are_named(official_state_dict):
    with pytest.raises(ValueError, match=r"mmseg Swin keys that have no transformers counterpart.*backbone.extra"):
        convert_official_state_dict({**official_state_dict, "backbone.extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"Official head keys with no gss_hf counterpart.*decode_head.extra"):
        convert_official_state_dict({**official_state_dict, "decode_head.extra.weight": torch.zeros(1)})


class RunsCode:
    """Unpickling it runs `touch marker`, as a malicious checkpoint would run anything."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_is_not_weights_only_is_refused_without_running_it(official_state_dict, tmp_path, capsys):
    path = tmp_path / "unsafe.pth"
    torch.save({"state_dict": official_state_dict, "meta": RunsCode(tmp_path / "marker")}, path)
    output_dir = tmp_path / "converted"
    refused(["--checkpoint", path, "--output_dir", output_dir], capsys, "is not a weights-only checkpoint", output_dir)
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_truncated_checkpoint_is_refused(official_state_dict, tmp_path, capsys, suffix):
    path = tmp_path / f"truncated{suffix}"
    if suffix == ".pth":
        torch.save({"state_dict": official_state_dict}, path)
    else:
        save_file(official_state_dict, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    output_dir = tmp_path / "converted"
    refused(["--checkpoint", path, "--output_dir", output_dir], capsys, "truncated", output_dir)


def test_a_file_without_a_state_dict_is_refused(tmp_path, capsys):
    path = tmp_path / "not_weights.pth"
    torch.save({"meta": {"iter": 1}, "state_dict": [1, 2]}, path)
    output_dir = tmp_path / "converted"
    refused(["--checkpoint", path, "--output_dir", output_dir], capsys, "holds no state dict", output_dir)


def test_a_missing_checkpoint_is_refused(tmp_path, capsys):
    output_dir = tmp_path / "converted"
    refused(["--checkpoint", tmp_path / "absent.pth", "--output_dir", output_dir], capsys, "No checkpoint file at",
            output_dir)  # fmt: skip


def test_an_output_dir_with_files_is_refused_before_any_work(checkpoint, tmp_path, capsys):
    output_dir = tmp_path / "converted"
    output_dir.mkdir()
    (output_dir / "notes.txt").write_text("mine")
    status, error = run(["--checkpoint", checkpoint, "--output_dir", output_dir], capsys)
    assert status == 2 and "already holds files" in error
    assert [path.name for path in output_dir.iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_a_failure_while_saving_leaves_nothing_behind(checkpoint, tmp_path, capsys, monkeypatch):
    import gss_hf.convert_official_gss as converter

    def fail(*args, **kwargs):
        raise ValueError("the card could not be written")

    monkeypatch.setattr(converter, "write_converted_model_card", fail)
    output_dir = tmp_path / "converted"
    refused(["--checkpoint", checkpoint, "--output_dir", output_dir], capsys, "the card could not be written",
            output_dir)  # fmt: skip
