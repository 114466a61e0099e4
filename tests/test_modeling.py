"""GSSForSemanticSegmentation: forward/backward per backbone family, the loss rules, inference modes, stages,
saving and strict loading, and every bad input."""

import json

import pytest
import torch
from huggingface_hub.errors import StrictDataclassFieldValidationError
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSemanticSegmentation
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging

from gss_hf import GSSForSemanticSegmentation, MaskigeTokenizer, generate_palette, maskige_from_labels
from gss_hf.modeling_gss import fill_unlabelled_pixels, masked_cross_entropy, resize_scores
from gss_hf.token_cross_entropy import TOKEN_IGNORE_INDEX
from tiny_models import NUM_TINY_LABELS, TINY_BACKBONES, tiny_gss_config, tiny_tokenizer_config


def tiny_model(backbone: str = "mobilenet_v2", seed: int = 0, **overrides) -> GSSForSemanticSegmentation:
    torch.manual_seed(seed)
    return GSSForSemanticSegmentation(tiny_gss_config(backbone, **overrides))


def photos_and_labels(batch: int = 2, height: int = 64, width: int = 96, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch, 3, height, width, generator=generator)
    labels = torch.randint(0, NUM_TINY_LABELS, (batch, height, width), generator=generator)
    labels[:, :9] = 255
    return pixel_values, labels


@pytest.fixture(scope="module")
def model() -> GSSForSemanticSegmentation:
    return tiny_model().eval()


# ----------------------------------------------------------------------------------------------------------------
# Forward and backward
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", sorted(TINY_BACKBONES))
def test_forward_and_backward_train_exactly_the_stage_ii_parts(backbone):
    model = tiny_model(backbone).train()
    pixel_values, labels = photos_and_labels()
    output = model(pixel_values, labels=labels)
    assert torch.isfinite(output.loss)
    torch.testing.assert_close(output.loss, 0.8 * output.token_loss + 0.2 * output.auxiliary_loss)
    output.loss.backward()
    for name in ("backbone", "prior_head", "auxiliary_head"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name) and p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), name
    assert all(p.grad is None and not p.requires_grad for p in model.tokenizer.parameters())
    assert all(p.grad is None and not p.requires_grad for p in model.inverse.parameters())
    unused = [p for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == [], "parameters that train but get no gradient break DDP"

    model.eval()
    with torch.no_grad():
        prediction = model(pixel_values)
    assert prediction.logits.shape == (2, NUM_TINY_LABELS, 64, 96)
    assert prediction.maskige.shape == (2, 3, 64, 96)
    assert prediction.token_ids.shape == (2, 16, 24)
    assert prediction.auxiliary_logits.shape == (2, NUM_TINY_LABELS, 16, 24)


def test_inference_on_sizes_that_are_not_multiples_of_the_token_stride(model):
    with torch.no_grad():
        output = model(torch.randn(1, 3, 37, 50), output_token_logits=True)
    assert output.logits.shape == (1, NUM_TINY_LABELS, 37, 50)
    assert output.token_ids.shape == (1, 10, 13)
    assert output.token_logits.shape == (1, 64, 10, 13)
    assert torch.equal(output.token_logits.argmax(1), output.token_ids)


def test_inference_decodes_the_argmax_tokens_and_applies_the_nearest_colour(model):
    pixel_values = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        output = model(pixel_values)
        maskige = model.tokenizer.decode(output.token_ids)
    torch.testing.assert_close(output.maskige, maskige)
    palette = torch.tensor(model.config.palette, dtype=torch.float32)
    nearest = ((maskige[:, None] - palette[None, :, :, None, None]) ** 2).sum(2).argmin(1)
    assert torch.equal(output.logits.argmax(1), nearest)


def test_evaluation_with_labels_returns_the_loss_and_the_prediction(model):
    pixel_values, labels = photos_and_labels()
    with torch.no_grad():
        output = model(pixel_values, labels=labels)
        prediction = model(pixel_values)
    assert torch.isfinite(output.loss)
    torch.testing.assert_close(output.logits, prediction.logits)


# ----------------------------------------------------------------------------------------------------------------
# The loss rules (spec §4)
# ----------------------------------------------------------------------------------------------------------------
def test_filling_reaches_partly_labelled_patches_only():
    labels = torch.full((1, 8, 8), 255)
    labels[0, 0, 0] = 2  # the top-left 4x4 patch is partly labelled, the other three are wholly unlabelled
    fill = torch.full((1, 8, 8), 4)
    filled, fully_unlabelled = fill_unlabelled_pixels(labels, fill, patch_size=4, ignore_index=255)
    assert filled[0, 0, 0] == 2
    assert (filled[0, :4, :4].flatten()[1:] == 4).all()
    assert (filled[0, 4:, :] == 255).all() and (filled[0, :4, 4:] == 255).all()
    assert fully_unlabelled.tolist() == [[[False, True], [True, True]]]


def test_changing_predictions_inside_wholly_unlabelled_patches_leaves_the_targets_unchanged(model):
    labels = torch.randint(0, NUM_TINY_LABELS, (1, 64, 128), generator=torch.Generator().manual_seed(1))
    labels[:, :, 32:96] = 255
    labels[0, 0, 33] = 2  # one labelled pixel: the patch at token (0, 8) stays a target
    fill = torch.zeros_like(labels)
    other_fill = fill.clone()
    other_fill[:, :, 36:96] = 3  # differs only in wholly unlabelled patches
    targets = model.token_targets(labels, fill)
    assert torch.equal(model.token_targets(labels, other_fill), targets)
    assert targets[0, 0, 8] != TOKEN_IGNORE_INDEX
    assert (targets[0, 1:, 9:24] == TOKEN_IGNORE_INDEX).all() and (targets[0, :, :8] != TOKEN_IGNORE_INDEX).all()
    # The partly labelled patch is tokenised with its unlabelled pixels filled: the fill there reaches the tokenizer.
    filled = labels.clone()
    filled[0, :4, 32:36] = torch.where(labels[0, :4, 32:36] == 255, 0, labels[0, :4, 32:36])
    expected = model.tokenizer.encode(maskige_from_labels(filled, model.config.palette, model.config.ignore_color))
    assert targets[0, 0, 8] == expected[0, 0, 8]


def test_without_the_auxiliary_fill_label_maps_are_tokenised_as_painted_and_every_token_is_a_target():
    model = tiny_model(fill_unlabelled_with_auxiliary=False).eval()
    _, labels = photos_and_labels()
    targets = model.token_targets(labels, torch.zeros_like(labels))
    painted = maskige_from_labels(labels, model.config.palette, model.config.ignore_color)
    assert torch.equal(targets, model.tokenizer.encode(painted))
    assert (targets != TOKEN_IGNORE_INDEX).all()
    assert not torch.equal(targets, tiny_model().eval().token_targets(labels, torch.zeros_like(labels)))


def test_the_plain_head_reads_only_the_deepest_backbone_level():
    plain = tiny_model(prior_head_type="plain").eval()
    pixel_values, _ = photos_and_labels(batch=1)
    features = plain.backbone(pixel_values)
    assert len(features) > 1 and len(plain.prior_head.level_projections) == 1
    changed = [torch.randn_like(level) for level in features[:-1]] + [features[-1]]
    with torch.no_grad():
        torch.testing.assert_close(plain.prior_head(changed, (16, 24)), plain.prior_head(features, (16, 24)))
        mla = tiny_model().eval()
        assert not torch.allclose(mla.prior_head(changed, (16, 24)), mla.prior_head(features, (16, 24)))


def test_token_loss_is_the_cross_entropy_of_the_full_logits_against_the_targets(model):
    pixel_values, labels = photos_and_labels()
    with torch.no_grad():
        output = model(pixel_values, labels=labels, output_token_logits=True)
        upsampled = torch.nn.functional.interpolate(output.auxiliary_logits, size=(64, 96), mode="bilinear")
        targets = model.token_targets(labels, upsampled.argmax(1))
    token_loss = torch.nn.functional.cross_entropy(output.token_logits, targets, ignore_index=TOKEN_IGNORE_INDEX)
    auxiliary_loss = torch.nn.functional.cross_entropy(upsampled, labels, ignore_index=255)
    torch.testing.assert_close(output.token_loss, token_loss)
    torch.testing.assert_close(output.auxiliary_loss, auxiliary_loss)
    torch.testing.assert_close(output.loss, 0.8 * token_loss + 0.2 * auxiliary_loss)


def test_a_wholly_unlabelled_batch_gives_a_zero_loss_not_nan():
    model = tiny_model().train()
    pixel_values, _ = photos_and_labels()
    output = model(pixel_values, labels=torch.full((2, 64, 96), 255))
    assert output.loss.item() == 0.0
    output.loss.backward()


# ----------------------------------------------------------------------------------------------------------------
# Sliding window
# ----------------------------------------------------------------------------------------------------------------
def test_sliding_window_equals_whole_image_when_one_window_covers_it():
    model = tiny_model(sliding_window_crop_size=128, sliding_window_stride=64).eval()
    pixel_values = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        whole = model(pixel_values)
        sliding = model(pixel_values, sliding_window=True)
    torch.testing.assert_close(sliding.logits, whole.logits)
    torch.testing.assert_close(sliding.maskige, whole.maskige)


def test_sliding_window_averages_the_overlapping_crops():
    model = tiny_model(sliding_window_crop_size=32, sliding_window_stride=24, sliding_window_batch_size=3).eval()
    pixel_values = torch.randn(1, 3, 32, 56)
    with torch.no_grad():
        sliding = model(pixel_values, sliding_window=True).logits
        left = model(pixel_values[..., :32]).logits
        right = model(pixel_values[..., 24:]).logits
    # Crops run as one batch, whose convolutions round differently: tolerance for scores of magnitude ~1e4.
    close = {"rtol": 1e-5, "atol": 1.0}
    torch.testing.assert_close(sliding[..., :24], left[..., :24], **close)
    torch.testing.assert_close(sliding[..., 24:32], (left[..., 24:] + right[..., :8]) / 2, **close)
    torch.testing.assert_close(sliding[..., 32:], right[..., 8:], **close)


def test_with_labels_and_a_sliding_window_in_eval_mode_the_prior_runs_once_per_crop(monkeypatch):
    model = tiny_model(sliding_window_crop_size=32, sliding_window_stride=24, sliding_window_batch_size=1).eval()
    pixel_values, labels = photos_and_labels(batch=1, height=32, width=56)
    calls = []
    original = model._prior
    monkeypatch.setattr(model, "_prior", lambda crops: calls.append(tuple(crops.shape[-2:])) or original(crops))
    with torch.no_grad():
        output = model(pixel_values, labels=labels, sliding_window=True)
    assert calls == [(32, 32), (32, 32)], "one prior pass per crop, none on the whole image"
    with torch.no_grad():
        crop_losses = [model(pixel_values[..., left:left + 32], labels=labels[..., left:left + 32]).loss
                       for left in (0, 24)]  # fmt: skip
    torch.testing.assert_close(output.loss, torch.stack(crop_losses).mean())
    assert output.logits.shape == (1, NUM_TINY_LABELS, 32, 56)


# ----------------------------------------------------------------------------------------------------------------
# X^-1: swapping it, and what stage III trains
# ----------------------------------------------------------------------------------------------------------------
def test_set_inverse_gives_a_fresh_frozen_learned_inverse_and_records_it():
    model = tiny_model(inverse_type="nearest").eval()
    model.set_inverse("learned")
    assert model.config.inverse_type == "learned"
    assert type(model.inverse).__name__ == "LearnedInverse" and not model.inverse.training
    assert model.inverse.parameters() and not any(p.requires_grad for p in model.inverse.parameters())
    classifier = model.inverse.classifier
    assert torch.equal(classifier.bias, torch.zeros_like(classifier.bias)), "initialised by the model's rules"
    assert classifier.weight.std() < 2.5 * model.config.initializer_range, "not PyTorch's default (std ~0.2 here)"
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).logits.shape == (1, NUM_TINY_LABELS, 32, 32)
    model.set_inverse("nearest")
    assert model.config.inverse_type == "nearest" and not list(model.inverse.parameters())
    with pytest.raises(StrictDataclassFieldValidationError, match="inverse_type"):
        model.set_inverse("lerned")
    assert model.config.inverse_type == "nearest" and type(model.inverse).__name__ == "TrainingFreeInverse"


def test_generate_maskige_is_the_predicted_maskige_without_the_inverse(model):
    """At the decoder's size (the token grid covers 30x46 with 32x48); resized, it is the prediction's maskige and
    X^-1 on it gives the prediction's scores."""
    pixel_values = torch.randn(2, 3, 30, 46)
    with torch.no_grad():
        expected = model(pixel_values)
    maskige = model.generate_maskige(pixel_values)
    assert maskige.shape == (2, 3, 32, 48) and not maskige.requires_grad
    torch.testing.assert_close(resize_scores(maskige, (30, 46)), expected.maskige)
    torch.testing.assert_close(resize_scores(model.inverse(maskige), (30, 46)), expected.logits)


def test_the_stage_ii_loss_never_reaches_the_learned_inverse_which_stays_frozen():
    model = tiny_model(inverse_type="learned").train()
    assert not any(p.requires_grad for p in model.inverse.parameters())
    pixel_values, labels = photos_and_labels()
    model.inverse.requires_grad_(True)
    model(pixel_values, labels=labels).loss.backward()
    assert all(p.grad is None for p in model.inverse.parameters())


def test_masked_cross_entropy_is_the_mean_over_labelled_pixels_and_zero_without_any():
    logits = torch.randn(2, NUM_TINY_LABELS, 8, 8, requires_grad=True)
    labels = torch.randint(0, NUM_TINY_LABELS, (2, 8, 8))
    labels[0, :3] = 255
    expected = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(masked_cross_entropy(logits, labels, 255), expected)
    empty = masked_cross_entropy(logits, torch.full_like(labels, 255), 255)
    assert empty.item() == 0.0 and empty.requires_grad


def test_class_weighted_masked_cross_entropy_is_the_weighted_mean_over_labelled_pixels():
    logits = torch.randn(2, NUM_TINY_LABELS, 8, 8, requires_grad=True)
    labels = torch.randint(0, NUM_TINY_LABELS, (2, 8, 8))
    labels[1, 2:] = 255
    weights = torch.rand(NUM_TINY_LABELS) + 0.1
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=weights, ignore_index=255)
    torch.testing.assert_close(masked_cross_entropy(logits, labels, 255, weights), expected)
    pixel_losses = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    labelled = labels != 255
    by_hand = (pixel_losses * weights[labels.clamp(max=NUM_TINY_LABELS - 1)] * labelled).sum() / (
        weights[labels.clamp(max=NUM_TINY_LABELS - 1)] * labelled
    ).sum()
    torch.testing.assert_close(masked_cross_entropy(logits, labels, 255, weights), by_hand)
    uniform = masked_cross_entropy(logits, labels, 255, torch.full((NUM_TINY_LABELS,), 3.0))
    torch.testing.assert_close(uniform, masked_cross_entropy(logits, labels, 255))
    empty = masked_cross_entropy(logits, torch.full_like(labels, 255), 255, weights)
    assert empty.item() == 0.0 and empty.requires_grad


@pytest.mark.parametrize("inverse_type", ["nearest", "least_squares", "learned"])
def test_every_inverse_maps_a_maskige_to_class_scores(inverse_type):
    model = tiny_model(inverse_type=inverse_type).eval()
    labels = torch.randint(0, NUM_TINY_LABELS, (2, 16, 24))
    maskige = maskige_from_labels(labels, model.config.palette, model.config.ignore_color).float()
    with torch.no_grad():
        scores = model.inverse(maskige)
    assert scores.shape == (2, NUM_TINY_LABELS, 16, 24)
    if inverse_type == "nearest":
        assert torch.equal(scores.argmax(1), labels)


# ----------------------------------------------------------------------------------------------------------------
# Saving and loading
# ----------------------------------------------------------------------------------------------------------------
def test_save_and_load_give_identical_outputs_and_keep_the_freezing(model, tmp_path):
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    assert any(key.startswith("tokenizer.vqmodel.") for key in weights)
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoModelForSemanticSegmentation"] == (
        "modeling_gss.GSSForSemanticSegmentation"
    )
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path)
    assert isinstance(loaded, GSSForSemanticSegmentation) and not loaded.training
    assert not any(p.requires_grad for p in loaded.tokenizer.parameters())
    pixel_values = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).logits, model(pixel_values).logits, rtol=0, atol=0)


def edit_checkpoint(folder, edit) -> None:
    weights = load_file(folder / "model.safetensors")
    edit(weights)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.slow
def test_a_checkpoint_with_missing_keys_is_refused(model, tmp_path):
    model.save_pretrained(tmp_path)
    edit_checkpoint(tmp_path, lambda weights: weights.pop("prior_head.classifier.weight"))
    with pytest.raises(ValueError, match="missing keys.*prior_head.classifier.weight"):
        GSSForSemanticSegmentation.from_pretrained(tmp_path)
    logger = logging.get_logger("gss_hf.modeling_gss")
    with CaptureLogger(logger) as captured:
        GSSForSemanticSegmentation.from_pretrained(tmp_path, strict=False)
    assert "prior_head.classifier.weight" in captured.out


def test_a_checkpoint_with_unexpected_keys_is_refused(model, tmp_path):
    model.save_pretrained(tmp_path)
    edit_checkpoint(tmp_path, lambda weights: weights.update({"decode_head.conv_seg.weight": torch.zeros(3, 3)}))
    with pytest.raises(ValueError, match="unexpected keys.*decode_head.conv_seg.weight"):
        AutoModelForSemanticSegmentation.from_pretrained(tmp_path)


def test_a_checkpoint_without_its_tokenizer_is_refused_even_when_not_strict(model, tmp_path):
    model.save_pretrained(tmp_path)
    edit_checkpoint(
        tmp_path, lambda weights: [weights.pop(k) for k in list(weights) if k.startswith("tokenizer.vqmodel.decoder")]
    )
    with pytest.raises(ValueError, match="must contain its tokenizer"):
        GSSForSemanticSegmentation.from_pretrained(tmp_path, strict=False)


def test_a_checkpoint_whose_codebook_disagrees_with_the_config_is_refused(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["codebook_size"] = 32
    config["tokenizer_config"]["num_vq_embeddings"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match="(?i)size|shape"):
        GSSForSemanticSegmentation.from_pretrained(tmp_path)


@pytest.mark.slow
def test_a_checkpoint_of_another_codebook_size_is_refused_even_with_ignore_mismatched_sizes(tmp_path):
    """transformers' own error suggests `ignore_mismatched_sizes=True`, which would re-initialise the tokenizer's
    codebook and the token classifier at random: a model that loads and predicts one class everywhere."""
    tiny_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["codebook_size"] = 32
    config["tokenizer_config"]["num_vq_embeddings"] = 32
    (tmp_path / "config.json").write_text(json.dumps(config))
    for strict in (True, False):
        with pytest.raises(ValueError, match=r"keys of another size.*tokenizer\.vqmodel\.quantize.*must contain its tok"):
            GSSForSemanticSegmentation.from_pretrained(tmp_path, ignore_mismatched_sizes=True, strict=strict)


@pytest.mark.slow
def test_heads_of_another_size_are_refused_unless_not_strict(tmp_path):
    tiny_model(inverse_type="learned").save_pretrained(tmp_path)
    wider = {"inverse_hidden_size": 16, "inverse_intermediate_size": 32}
    with pytest.raises(ValueError, match=r"keys of another size.*'inverse\.classifier\.weight': \(\(5, 8, 1, 1\), \(5, 16"):
        GSSForSemanticSegmentation.from_pretrained(tmp_path, ignore_mismatched_sizes=True, **wider)
    logger = logging.get_logger("gss_hf.modeling_gss")
    with CaptureLogger(logger) as captured:
        model = GSSForSemanticSegmentation.from_pretrained(tmp_path, ignore_mismatched_sizes=True, strict=False, **wider)
    assert "keys of another size" in captured.out and model.inverse.classifier.weight.shape == (5, 16, 1, 1)


def test_load_tokenizer_copies_stage_i_weights_and_refuses_another_codebook(model):
    torch.manual_seed(5)
    tokenizer = MaskigeTokenizer.from_config(tiny_tokenizer_config()).eval()
    target = tiny_model()
    target.load_tokenizer(tokenizer)
    maskige = maskige_from_labels(torch.randint(0, 5, (1, 16, 16)), generate_palette(5), [0, 0, 0])
    assert torch.equal(target.tokenizer.encode(maskige), tokenizer.encode(maskige))
    with pytest.raises(ValueError, match="has 32 codes but `config.codebook_size` is 64"):
        target.load_tokenizer(MaskigeTokenizer.from_config(tiny_tokenizer_config(codebook_size=32)))
    with pytest.raises(ValueError, match="differs from `config.tokenizer_config`"):
        target.load_tokenizer(MaskigeTokenizer.from_config({**tiny_tokenizer_config(), "latent_channels": 4}))


# ----------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pixel_values, labels, error, match",
    [
        (torch.randn(1, 4, 32, 32), None, ValueError, r"\(batch, 3, height, width\).*RGBA"),
        (torch.randn(1, 1, 32, 32), None, ValueError, r"\(batch, 3, height, width\)"),
        (torch.randn(3, 32, 32), None, ValueError, r"\(batch, 3, height, width\)"),
        (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), None, TypeError, "floating point"),
        (torch.randn(0, 3, 32, 32), None, ValueError, "empty batch"),
        (torch.randn(1, 3, 32, 32), torch.full((1, 32, 32), 7), ValueError, r"values \[7\] outside the 5 classes"),
        (torch.randn(1, 3, 32, 32), torch.full((1, 32, 32), -1), ValueError, r"values \[-1\]"),
        (torch.randn(1, 3, 32, 32), torch.zeros(1, 32, 48, dtype=torch.long), ValueError, "at the photo's size"),
        (torch.randn(2, 3, 32, 32), torch.zeros(1, 32, 32, dtype=torch.long), ValueError, "one \\(height, width\\)"),
        (torch.randn(1, 3, 32, 32), torch.zeros(1, 32, 32), TypeError, "integer class ids"),
        (torch.randn(1, 3, 30, 32), torch.zeros(1, 30, 32, dtype=torch.long), ValueError, "divisible by"),
        (torch.full((1, 3, 32, 32), float("nan")), None, ValueError, "NaN or infinite"),
        (torch.randn(1, 3, 32, 32).index_fill_(2, torch.tensor([3]), float("inf")), None, ValueError, "NaN or inf"),
        (torch.randn(1, 3, 32, 32).index_fill_(3, torch.tensor([5]), float("-inf")), None, ValueError, "NaN or inf"),
    ],
)
def test_bad_inputs_are_refused_clearly(model, pixel_values, labels, error, match):
    with pytest.raises(error, match=match):
        model(pixel_values, labels=labels)


def test_unnormalised_photos_are_flagged(model):
    logger = logging.get_logger("gss_hf.modeling_gss")
    with CaptureLogger(logger) as captured, torch.no_grad():
        model(torch.rand(1, 3, 32, 32) * 255)
    assert "un-normalised" in captured.out


def test_double_precision_photos_are_cast_to_the_model_dtype(model):
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values.double()).logits, model(pixel_values).logits)


def test_bfloat16_autocast_training_step_and_bfloat16_inference():
    model = tiny_model().train()
    pixel_values, labels = photos_and_labels()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(pixel_values, labels=labels)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        logits = model.to(torch.bfloat16).eval()(pixel_values).logits
    assert logits.dtype == torch.bfloat16 and logits.shape == (2, NUM_TINY_LABELS, 64, 96)
