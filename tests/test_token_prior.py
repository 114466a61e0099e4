"""The learned token prior: its config, the MaskGIT loss and decoder, label-map sampling and completion, the training
script on the tiny data set, and `gss-generate`. Tiny models only."""

import configparser
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModel

from gss_hf import (
    GSSConfig,
    GSSForSemanticSegmentation,
    GSSTokenPriorConfig,
    GSSTokenPriorModel,
    MaskigeTokenizer,
    complete_label_map,
    generate_palette,
    maskige_from_labels,
    sample_label_maps,
)
from gss_hf import generate_cli
from gss_hf.modeling_token_prior import mask_random_tokens
from test_training import TINY_SIZE, run_script, write_tiny_camvid
from tiny_models import NUM_TINY_LABELS, tiny_gss_config, tiny_tokenizer_config


CODES = 8
GRID = (3, 4)
TINY_PRIOR = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}


def tiny_prior(codebook_size: int = CODES, grid: tuple[int, int] = GRID, **overrides) -> GSSTokenPriorModel:
    torch.manual_seed(0)
    settings = {**TINY_PRIOR, "codebook_size": codebook_size, "grid_height": grid[0], "grid_width": grid[1]}
    return GSSTokenPriorModel(GSSTokenPriorConfig(**{**settings, **overrides})).eval()


@pytest.fixture(scope="module")
def tokenizer() -> MaskigeTokenizer:
    torch.manual_seed(0)
    return MaskigeTokenizer.from_config(tiny_tokenizer_config(codebook_size=64)).eval()


PALETTE = generate_palette(NUM_TINY_LABELS)
IGNORE_COLOR = [0, 0, 0]


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------------
# Config and model
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value"),
    [("codebook_size", 0), ("grid_height", -1), ("hidden_size", 2.5), ("hidden_dropout_prob", 1.0), ("grid_width", True)],
)
def test_config_refuses_bad_fields_by_name(field, value):
    with pytest.raises(StrictDataclassError, match=field):
        GSSTokenPriorConfig(**{field: value})
    config = GSSTokenPriorConfig()
    with pytest.raises(StrictDataclassError, match=field):
        setattr(config, field, value)


def test_config_refuses_heads_that_do_not_divide_the_width():
    with pytest.raises(StrictDataclassError, match="num_attention_heads"):
        GSSTokenPriorConfig(hidden_size=30, num_attention_heads=4)
    assert GSSTokenPriorConfig(codebook_size=5).mask_token_id == 5


def test_save_and_load_give_identical_logits(tmp_path):
    prior = tiny_prior()
    prior.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, GSSTokenPriorModel)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "gss_token_prior"
    token_ids = torch.randint(0, CODES + 1, (2, *GRID), generator=seeded(1))
    assert torch.equal(prior(token_ids).logits, loaded(token_ids).logits)


def test_logits_have_one_score_per_code_and_position():
    logits = tiny_prior()(torch.zeros(2, *GRID, dtype=torch.long)).logits
    assert logits.shape == (2, CODES, *GRID)


def test_loss_is_taken_at_masked_positions_only():
    prior = tiny_prior()
    labels = torch.randint(0, CODES, (1, *GRID), generator=seeded(0))
    token_ids = labels.clone()
    token_ids[0, 0, :2] = prior.config.mask_token_id
    loss = prior(token_ids, labels=labels).loss
    changed_unmasked = labels.clone()
    changed_unmasked[0, 2, 3] = (labels[0, 2, 3] + 1) % CODES
    assert torch.equal(prior(token_ids, labels=changed_unmasked).loss, loss)
    changed_masked = labels.clone()
    changed_masked[0, 0, 1] = (labels[0, 0, 1] + 1) % CODES
    assert not torch.equal(prior(token_ids, labels=changed_masked).loss, loss)


def test_mask_random_tokens_masks_at_least_one_token_per_grid_and_keeps_the_rest():
    token_ids = torch.randint(0, CODES, (64, *GRID), generator=seeded(0))
    masked = mask_random_tokens(token_ids, CODES, seeded(1))
    is_masked = masked == CODES
    assert is_masked.flatten(1).any(dim=1).all()
    assert torch.equal(masked[~is_masked], token_ids[~is_masked])
    fractions = is_masked.float().flatten(1).mean(dim=1)
    assert fractions.min() < 0.5 < fractions.max()  # the ratio varies from grid to grid


def test_generate_is_deterministic_under_a_seed_and_returns_codes_only():
    prior = tiny_prior()
    first = prior.generate(4, num_steps=3, generator=seeded(7))
    assert first.shape == (4, *GRID) and first.dtype == torch.long
    assert first.min() >= 0 and first.max() < CODES
    assert torch.equal(prior.generate(4, num_steps=3, generator=seeded(7)), first)
    assert not torch.equal(prior.generate(4, num_steps=3, generator=seeded(8)), first)


def test_generate_keeps_known_tokens_exactly():
    prior = tiny_prior()
    known_ids = torch.randint(0, CODES, (1, *GRID), generator=seeded(0))
    known_mask = torch.rand(1, *GRID, generator=seeded(1)) < 0.5
    samples = prior.generate(5, num_steps=4, generator=seeded(2), known_token_ids=known_ids, known_mask=known_mask)
    assert torch.equal(samples[:, known_mask[0]], known_ids[:, known_mask[0]].expand(5, -1))
    assert samples.max() < CODES


def test_a_prior_trained_on_constant_grids_generates_constant_grids():
    """Every training grid is all code 2 or all code 5: only a sampler that uses the model's context gets every
    sampled grid constant (a uniform or marginal sampler would mix the two codes)."""
    prior = tiny_prior(hidden_size=32, num_attention_heads=2, hidden_dropout_prob=0.0, attention_dropout_prob=0.0)
    prior.train()
    optimizer = torch.optim.Adam(prior.parameters(), lr=3e-3)
    generator = seeded(0)
    for _ in range(150):
        codes = torch.tensor([2, 5])[torch.randint(0, 2, (16,), generator=generator)]
        grids = codes[:, None, None].expand(-1, *GRID).contiguous()
        loss = prior(mask_random_tokens(grids, CODES, generator), labels=grids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    prior.eval()
    samples = prior.generate(16, num_steps=4, generator=seeded(1)).flatten(1)
    assert (samples == samples[:, :1]).all()
    assert set(samples[:, 0].tolist()) <= {2, 5}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": 2, "num_steps": 0}, "num_steps"),
        ({"num_samples": 2, "temperature": 0.0}, "temperature"),
        ({"num_samples": 2, "temperature": -1.0}, "temperature"),
    ],
)
def test_generate_refuses_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        tiny_prior().generate(**arguments)


def test_generate_refuses_known_tokens_of_the_wrong_shape_or_dtype():
    prior = tiny_prior()
    ids = torch.zeros(1, *GRID, dtype=torch.long)
    with pytest.raises(TypeError, match="known_mask"):
        prior.generate(2, known_token_ids=ids, known_mask=torch.ones(1, *GRID))
    with pytest.raises(ValueError, match="known_token_ids"):
        prior.generate(2, known_token_ids=torch.zeros(1, 2, 2, dtype=torch.long), known_mask=torch.ones(1, 2, 2) > 0)
    with pytest.raises(ValueError, match="neither"):
        prior.generate(2, known_token_ids=ids)


# ----------------------------------------------------------------------------------------------------------------
# Label maps
# ----------------------------------------------------------------------------------------------------------------
def test_sample_label_maps_gives_classes_and_their_maskiges(tokenizer):
    prior = tiny_prior(codebook_size=64)
    labels, maskiges = sample_label_maps(prior, tokenizer, PALETTE, 3, num_steps=2, generator=seeded(0))
    size = (GRID[0] * 4, GRID[1] * 4)
    assert labels.shape == (3, *size) and labels.dtype == torch.long
    assert labels.min() >= 0 and labels.max() < NUM_TINY_LABELS
    assert maskiges.shape == (3, 3, *size) and maskiges.dtype == torch.uint8
    again, _ = sample_label_maps(prior, tokenizer, PALETTE, 3, num_steps=2, generator=seeded(0))
    assert torch.equal(again, labels)


def test_complete_label_map_keeps_the_known_pixels_and_fills_the_rest(tokenizer):
    prior = tiny_prior(codebook_size=64)
    size = (GRID[0] * 4, GRID[1] * 4)
    label_map = torch.randint(0, NUM_TINY_LABELS, size, generator=seeded(0))
    known = torch.zeros(size, dtype=torch.bool)
    known[:, :6] = True  # one and a half token columns: partly known patches are generated, their pixels kept
    known[0, 0] = False
    completed = complete_label_map(
        prior, tokenizer, PALETTE, IGNORE_COLOR, label_map, known, num_steps=2, generator=seeded(1)
    )
    assert completed.shape == size and completed.dtype == torch.long
    assert torch.equal(completed[known], label_map[known])
    assert completed.min() >= 0 and completed.max() < NUM_TINY_LABELS


def test_complete_label_map_fixes_the_tokens_of_wholly_known_patches(tokenizer, monkeypatch):
    prior = tiny_prior(codebook_size=64)
    size = (GRID[0] * 4, GRID[1] * 4)
    label_map = torch.randint(0, NUM_TINY_LABELS, size, generator=seeded(0))
    known = torch.zeros(size, dtype=torch.bool)
    known[:, :6] = True
    known[0, 0] = False
    seen = {}
    generate = prior.generate

    def recording_generate(*arguments):
        seen["known_token_ids"], seen["known_mask"] = arguments[-2:]
        return generate(*arguments)

    monkeypatch.setattr(prior, "generate", recording_generate)
    complete_label_map(prior, tokenizer, PALETTE, IGNORE_COLOR, label_map, known, num_steps=1)
    expected = torch.zeros(1, *GRID, dtype=torch.bool)
    expected[0, 1:, 0] = True  # token column 0 is wholly known except its top patch; column 1 only half
    assert torch.equal(seen["known_mask"], expected)
    painted = maskige_from_labels(label_map.masked_fill(~known, 255)[None], PALETTE, IGNORE_COLOR)
    assert torch.equal(seen["known_token_ids"][expected], tokenizer.encode(painted)[expected])


def test_label_map_functions_refuse_bad_input(tokenizer):
    prior = tiny_prior(codebook_size=64)
    size = (GRID[0] * 4, GRID[1] * 4)
    label_map = torch.zeros(size, dtype=torch.long)
    known = torch.ones(size, dtype=torch.bool)

    def complete(labels=label_map, mask=known):
        return complete_label_map(prior, tokenizer, PALETTE, IGNORE_COLOR, labels, mask, num_steps=1)

    with pytest.raises(ValueError, match="models 8 codes, but the tokenizer has 64"):
        sample_label_maps(tiny_prior(), tokenizer, PALETTE, 1)
    with pytest.raises(ValueError, match="num_samples"):
        sample_label_maps(prior, tokenizer, PALETTE, 0)
    with pytest.raises(ValueError, match=r"`known` must have the label map's shape"):
        complete(mask=known[:-1])
    with pytest.raises(TypeError, match="`known` must be a bool tensor"):
        complete(mask=known.long())
    with pytest.raises(ValueError, match=r"must be 12x16 \(the prior's 3x4 grid"):
        complete(labels=torch.zeros(8, 8, dtype=torch.long), mask=torch.ones(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"values \[7\] at known pixels"):
        complete(labels=label_map.masked_fill(torch.eye(*size, dtype=torch.bool), 7))
    with pytest.raises(ValueError, match="temperature"):
        complete_label_map(prior, tokenizer, PALETTE, IGNORE_COLOR, label_map, known, temperature=0.0)


# ----------------------------------------------------------------------------------------------------------------
# The training script and gss-generate
# ----------------------------------------------------------------------------------------------------------------
def train_token_prior(data, output, steps: int, *extra: str):
    return run_script(
        "train_token_prior.py", "--data_dir", data, "--void_value", "11", "--resolution", *map(str, TINY_SIZE),
        "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2", "--max_train_steps", str(steps),
        "--output_dir", output, "--config_overrides", json.dumps(TINY_PRIOR), *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_camvid(tmp_path_factory.mktemp("tiny") / "camvid")


@pytest.mark.slow
def test_training_script_writes_a_loadable_prior_and_an_eval_loss(tiny_data, tmp_path):
    output = tmp_path / "token_prior"
    train_token_prior(tiny_data, output, 2)
    prior = GSSTokenPriorModel.from_pretrained(output)
    embedded = GSSConfig.from_pretrained(generate_cli.EMBEDDED_MODEL)
    assert prior.config.codebook_size == embedded.codebook_size
    assert (prior.config.grid_height, prior.config.grid_width) == (TINY_SIZE[0] // 4, TINY_SIZE[1] // 4)
    scores = json.loads((output / "eval_results.json").read_text())
    assert scores["eval_samples"] == 3 and np.isfinite(scores["eval_loss"])
    card = (output / "README.md").read_text()
    assert "sample_label_maps(prior, gss.tokenizer" in card and 'pipeline("image-segmentation"' not in card


@pytest.mark.slow
def test_training_resumed_from_a_checkpoint_gives_bit_identical_weights(tiny_data, tmp_path):
    """Masks, flips and data order replay exactly: a run resumed from another run's checkpoint-2 ends as it did."""
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    train_token_prior(tiny_data, uninterrupted, 5, "--checkpointing_steps", "2")
    shutil.copytree(uninterrupted / "checkpoint-2", resumed / "checkpoint-2")
    train_token_prior(tiny_data, resumed, 5, "--resume_from_checkpoint", "latest")
    expected, got = load_file(uninterrupted / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == got.keys() and all(torch.equal(expected[key], got[key]) for key in expected)
    start = load_file(uninterrupted / "checkpoint-2" / "model.safetensors")
    assert not all(torch.equal(start[key], got[key]) for key in start)


@pytest.mark.slow
def test_training_script_takes_another_gss_model_and_tokenizer(tiny_data, model_with_prior, tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    output = tmp_path / "token_prior"
    train_token_prior(tiny_data, output, 1, "--gss_model_path", model_with_prior, "--tokenizer_path",
                      tmp_path / "tokenizer")  # fmt: skip
    assert GSSTokenPriorModel.from_pretrained(output).config.codebook_size == tokenizer.codebook_size == 64

    MaskigeTokenizer.from_config(tiny_tokenizer_config(codebook_size=32)).save_pretrained(tmp_path / "other")
    result = run_script(
        "train_token_prior.py", "--data_dir", tiny_data, "--output_dir", tmp_path / "refused", "--gss_model_path",
        model_with_prior, "--tokenizer_path", tmp_path / "other", check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "train_token_prior.py: error: The tokenizer differs" in result.stderr


@pytest.mark.slow
def test_training_script_refuses_derived_config_fields(tmp_path):
    result = run_script(
        "train_token_prior.py", "--data_dir", tmp_path, "--output_dir", tmp_path / "out",
        "--config_overrides", '{"codebook_size": 3}', check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "train_token_prior.py: error: --config_overrides may not set ['codebook_size']" in result.stderr


@pytest.fixture(scope="module")
def model_with_prior(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gss")
    torch.manual_seed(0)
    GSSForSemanticSegmentation(tiny_gss_config()).save_pretrained(folder)
    tiny_prior(codebook_size=64).save_pretrained(folder / generate_cli.TOKEN_PRIOR_FOLDER)
    return folder


@pytest.mark.slow
def test_gss_generate_writes_label_maps_maskiges_and_a_grid(model_with_prior, tmp_path, capsys):
    output = tmp_path / "samples"
    arguments = ["--num", "3", "--output-dir", str(output), "--model", str(model_with_prior), "--steps", "2"]
    assert generate_cli.main([*arguments, "--seed", "4"]) == 0
    width, height = GRID[1] * 4, GRID[0] * 4
    for index in range(3):
        labels = Image.open(output / f"sample_{index:03d}_labels.png")
        assert labels.mode == "L" and labels.size == (width, height)
        assert np.asarray(labels).max() < NUM_TINY_LABELS
        maskige = Image.open(output / f"sample_{index:03d}_maskige.png")
        assert maskige.mode == "RGB" and maskige.size == (width, height)
    grid = Image.open(output / "grid.png")
    assert grid.mode == "RGB" and grid.size == (3 * width, height)
    assert np.array_equal(np.asarray(grid)[:, width : 2 * width], np.asarray(Image.open(output / "sample_001_maskige.png")))
    first = np.asarray(Image.open(output / "sample_000_labels.png"))
    assert generate_cli.main([*arguments, "--seed", "4", "--output-dir", str(tmp_path / "again")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "again" / "sample_000_labels.png")), first)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--num", "0"], "argument --num: must be a positive integer"),
        (["--num", "2", "--steps", "0"], "argument --steps: must be a positive integer"),
        (["--num", "2", "--temperature", "0"], "argument --temperature: must be a finite number > 0"),
    ],
)
def test_gss_generate_refuses_bad_arguments(arguments, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        generate_cli.main([*arguments, "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_gss_generate_refuses_a_missing_model_folder(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert generate_cli.main(["--num", "1", "--output-dir", str(tmp_path / "out"), "--model", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"gss-generate: error: --model {missing}: the folder does not exist."


def test_gss_generate_names_the_missing_token_prior_and_the_training_command(tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert generate_cli.main(["--num", "1", "--output-dir", str(tmp_path / "out"), "--model", str(folder)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("gss-generate: error: ") and len(error.splitlines()) == 1
    assert f"no token prior in {folder / 'token_prior'}" in error and "training/train_token_prior.py" in error
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_gss_generate_refuses_a_prior_of_another_codebook(model_with_prior, tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    for path in model_with_prior.iterdir():
        if path.is_file():
            (folder / path.name).write_bytes(path.read_bytes())
    tiny_prior(codebook_size=32).save_pretrained(folder / generate_cli.TOKEN_PRIOR_FOLDER)
    assert generate_cli.main(["--num", "1", "--output-dir", str(tmp_path / "out"), "--model", str(folder)]) == 2
    assert "models 32 codes but the model's tokenizer has 64" in capsys.readouterr().err


def test_setup_cfg_declares_the_gss_generate_command():
    setup = configparser.ConfigParser()
    setup.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    scripts = dict(
        line.split(" = ") for line in setup["options.entry_points"]["console_scripts"].strip().splitlines()
    )
    assert scripts["gss-generate"] == "gss_hf.generate_cli:main"


def test_known_outside_region_erases_the_named_region():
    from gss_hf import known_outside_region

    assert (~known_outside_region((8, 12), "right half")).nonzero()[:, 1].min() == 6
    assert known_outside_region((8, 12), "right half")[:, :6].all()
    centre = known_outside_region((8, 12), "centre box")
    assert not centre[2:6, 3:9].any() and centre.sum() == 8 * 12 - 4 * 6
    bottom = known_outside_region((8, 12), "bottom half")
    assert bottom[:4].all() and not bottom[4:].any()
    with pytest.raises(ValueError, match="No erasable region 'left ear'"):
        known_outside_region((8, 12), "left ear")


@pytest.mark.slow
def test_gss_generate_draws_from_the_embedded_token_prior(tmp_path, capsys):
    output = tmp_path / "out"
    assert generate_cli.main(["--num", "2", "--steps", "2", "--output-dir", str(output)]) == 0
    labels = np.asarray(Image.open(output / "sample_001_labels.png"))
    assert labels.shape == (96, 128) and labels.max() < 11
    assert Image.open(output / "grid.png").size == (2 * 128, 96)
    assert "2 label maps of 128x96" in capsys.readouterr().out
