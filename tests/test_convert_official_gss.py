"""Official GSS-FF and GSS-FT-W checkpoints converted by `convert_official_gss`, checked stage by stage against the
official code's own test vectors (`../shared/data/official_gss`, skipped when absent): prior features, head features,
token logits, token ids, maskige, the FT-W head output (learned X^-1 logits) and the final segmentation; plus the
configs read from the full-size key lists."""

import copy
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation, pipeline

from gss_hf import GSSConfig, GSSForSemanticSegmentation
from gss_hf.convert_official_gss import (
    RELEASED_MODELS,
    convert_checkpoint,
    convert_official_state_dict,
    official_config,
    released_model,
)
from gss_hf.maskige import upsample_labels_2x
from gss_hf.modeling_gss import masked_cross_entropy, resize_scores
from gss_hf.modeling_gss_inverse import TrainingFreeInverse
from gss_hf.token_cross_entropy import TOKEN_IGNORE_INDEX
from gss_hf.modeling_gss_prior import resize_and_concatenate
from official_gss import RELATIVE_TOLERANCE, full_size_meta_state_dict, official_gss_file, relative_difference


FF_FIXTURES = {"ade20k_ff_swin_tiny": "ade20k", "cityscapes_ff_r101_narrow": "cityscapes"}
FULL_SIZE_FF = {
    "state_dict_keys_ade20k_ff_swin-l.txt": ("ade20k", "gss-ff-swin-large"),
    "state_dict_keys_cityscapes_ff_swin-l.txt": ("cityscapes", "gss-ff-swin-large-cityscapes"),
    "state_dict_keys_cityscapes_ff_r101.txt": ("cityscapes", "gss-ff-resnet101"),
}
FULL_SIZE_FTW = {
    "state_dict_keys_ade20k_ftw_swin-l.txt": ("ade20k", "gss-ftw-swin-large"),
    "state_dict_keys_cityscapes_ftw_r101.txt": ("cityscapes", "gss-ftw-resnet101"),
    "state_dict_keys_cityscapes_ftw_swin-l.txt": ("cityscapes", "gss-ftw-swin-large-cityscapes"),
}
FTW_FIXTURES = {"ade20k_ftw_swin_tiny": "ade20k", "cityscapes_ftw_r101_narrow": "cityscapes"}
MASKIGE_TOLERANCE = 1e-2  # colours in 0..255
SEGMENTATION_AGREEMENT = 0.999
SWIN_FIELDS = ("embed_dim", "depths", "num_heads", "window_size", "patch_size", "mlp_ratio", "qkv_bias",
               "hidden_act", "layer_norm_eps", "out_features", "num_channels")  # fmt: skip
RESNET_FIELDS = ("depths", "stem_channels", "base_channels", "strides", "dilations", "contract_dilation",
                 "layer_norm_eps", "out_features", "num_channels")  # fmt: skip
GSS_FIELDS = ("num_labels", "palette", "ignore_color", "codebook_size", "token_stride", "tokenizer_type",
              "tokenizer_config", "maskige_route", "prior_head_type", "mla_channels", "prior_fuse_norm_activation",
              "prior_hidden_size", "prior_depth", "prior_num_heads", "prior_window_size", "prior_intermediate_size",
              "prior_classifier_channels", "auxiliary_channels", "inverse_type", "nearest_inverse_one_hot")  # fmt: skip


def prior_features(model: GSSForSemanticSegmentation, levels: list[torch.Tensor]) -> torch.Tensor:
    """The prior head up to its LayerNorm (the official `prior_features`): (batch, prior_hidden_size, h, w)."""
    head = model.prior_head
    fused = head.fuse(resize_and_concatenate(levels, head.level_projections, tuple(levels[0].shape[-2:])))
    hidden_states = head.window_transformer(fused)
    return head.layernorm(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def convert_and_load(name: str, dataset: str) -> tuple:
    """(official state dict, config, converted weights, the model loaded strictly in eval mode, official I/O) of
    fixture `name`."""
    from safetensors.torch import load_file

    weights_file = official_gss_file(name, "official_state_dict.safetensors")
    torch.set_num_threads(2)
    state_dict = load_file(weights_file)
    config, weights = convert_official_state_dict(state_dict, dataset)
    model = GSSForSemanticSegmentation(config)
    loading = model.load_state_dict(weights, strict=True)
    assert not loading.missing_keys and not loading.unexpected_keys
    return state_dict, config, weights, model.eval(), load_file(weights_file.parent / "io.safetensors")


@pytest.fixture(scope="module", params=sorted(FF_FIXTURES))
def converted(request) -> dict:
    """The fixture converted and loaded strictly, with the official I/O and the model's outputs."""
    state_dict, config, weights, model, official = convert_and_load(request.param, FF_FIXTURES[request.param])
    with torch.no_grad():
        levels = model.backbone(official["pixel_values"])
        output = model(official["pixel_values"], sliding_window=False, output_token_logits=True)
        features = {
            "prior_features": prior_features(model, levels),
            "head_cls_features": model.prior_head(levels, tuple(levels[0].shape[-2:])),
        }
        maskige_2x = model.tokenizer.decode(output.token_ids)
    import json

    checks = json.loads(official_gss_file(request.param, "tensors.json").read_text())["_checks"]
    return {"name": request.param, "state_dict": state_dict, "config": config, "weights": weights, "model": model,
            "levels": levels,
            "official": official, "output": output, "features": features, "maskige_2x": maskige_2x,
            "checks": checks}  # fmt: skip


def test_converted_model_loads_strictly_and_reads_the_official_palette(converted):
    import json

    official_palette = json.loads(official_gss_file(converted["name"], "model_config.json").read_text())["model"][
        "decode_head"
    ]["palette"]
    config = converted["config"]
    assert [*config.palette, config.ignore_color] == official_palette
    assert config.prior_fuse_norm_activation and config.nearest_inverse_one_hot


@pytest.mark.parametrize("stage", ["prior_features", "head_cls_features"])
def test_head_features_match_the_official_ones(converted, stage):
    difference = relative_difference(converted["features"][stage], converted["official"][stage])
    assert difference <= RELATIVE_TOLERANCE, f"{converted['name']} {stage}: {difference:.2e}"


def test_token_logits_summaries_match(converted):
    logits, official = converted["output"].token_logits, converted["official"]
    top2 = logits.topk(2, dim=1).values
    summaries = {
        "top1": top2[:, 0],
        "top2": top2[:, 1],
        "logsumexp": logits.logsumexp(dim=1),
        "channel_mean_f64": logits.double().mean(dim=(2, 3)),
    }
    for name, value in summaries.items():
        difference = relative_difference(value, official[f"token_logits__{name}"])
        assert difference <= RELATIVE_TOLERANCE, f"{converted['name']} token_logits__{name}: {difference:.2e}"


def test_token_ids_equal_the_official_ones(converted):
    token_ids, official = converted["output"].token_ids, converted["official"]["token_ids"][:, 0]
    official_top2 = converted["official"]["token_logits__top1"] - converted["official"]["token_logits__top2"]
    differing = token_ids != official
    assert not (differing & (official_top2 > RELATIVE_TOLERANCE)).any(), f"{int(differing.sum())} tokens differ"


def test_maskige_matches_the_official_one(converted):
    difference = float((converted["maskige_2x"] - converted["official"]["maskige"]).abs().max())
    assert difference <= MASKIGE_TOLERANCE, f"{converted['name']} maskige: max abs {difference:.2e}"


def test_segmentation_matches_the_official_one(converted):
    segmentation = converted["output"].logits.argmax(dim=1)[0]
    agreement = float((segmentation == converted["official"]["segmentation"]).double().mean())
    assert agreement >= SEGMENTATION_AGREEMENT, f"{converted['name']}: {agreement:.4%} of pixels agree"


def test_nearest_colour_equals_the_official_head_prediction(converted):
    """On the official maskige (2H x 2W), X^-1's one-hot is the one-hot of the official `head_seg_pred`."""
    official = converted["official"]
    votes = converted["model"].inverse(official["maskige"])
    assert torch.equal(votes.argmax(dim=1), official["head_seg_pred"][:, 0].long())
    assert torch.equal(votes.sum(dim=1), torch.ones_like(votes[:, 0]))


def test_without_one_hot_votes_the_segmentation_differs_along_borders(converted):
    """Control: resizing minus the squared distances (`nearest_inverse_one_hot=False`) instead of the one-hot votes
    changes more than 0.1 % of the official segmentation."""
    config = copy.deepcopy(converted["config"])
    config.nearest_inverse_one_hot = False
    official = converted["official"]
    scores = TrainingFreeInverse(config)(official["maskige"])
    segmentation = nn.functional.interpolate(scores, size=official["segmentation"].shape, mode="bilinear").argmax(1)
    agreement = float((segmentation[0] == official["segmentation"]).double().mean())
    assert agreement < SEGMENTATION_AGREEMENT, f"{converted['name']}: {agreement:.4%} of pixels agree"


def test_without_the_level_reordering_the_prior_features_differ(converted):
    """Control: the fusion conv's input blocks of levels 0 and 1 left in the official order."""
    model = copy.deepcopy(converted["model"])
    conv = model.prior_head.fuse[0]
    blocks = list(conv.weight.data.chunk(4, dim=1))
    conv.weight.data = torch.cat([blocks[1], blocks[0], *blocks[2:]], dim=1)
    with torch.no_grad():
        features = prior_features(model, converted["levels"])
    assert relative_difference(features, converted["official"]["prior_features"]) > 100 * RELATIVE_TOLERANCE


def test_without_the_fusion_norm_and_activation_the_prior_features_differ(converted):
    """Control: gss_hf's own plain fusion conv (`prior_fuse_norm_activation=False`) with the official conv weights."""
    model = copy.deepcopy(converted["model"])
    official_conv = model.prior_head.fuse[0]
    plain = nn.Conv2d(official_conv.in_channels, official_conv.out_channels, kernel_size=1)
    plain.weight.data, plain.bias.data = official_conv.weight.data, torch.zeros_like(plain.bias)
    model.prior_head.fuse = plain
    with torch.no_grad():
        features = prior_features(model, converted["levels"])
    assert relative_difference(features, converted["official"]["prior_features"]) > 100 * RELATIVE_TOLERANCE


def test_save_pretrained_round_trip_gives_the_same_outputs(converted, tmp_path):
    from safetensors.torch import save_file

    checkpoint = tmp_path / "official.safetensors"
    save_file(converted["state_dict"], checkpoint)
    convert_checkpoint(checkpoint, tmp_path / "converted", dataset=FF_FIXTURES[converted["name"]])
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "converted").eval()
    assert isinstance(loaded, GSSForSemanticSegmentation)
    with torch.no_grad():
        output = loaded(converted["official"]["pixel_values"], sliding_window=False)
    assert torch.equal(output.token_ids, converted["output"].token_ids)
    assert torch.equal(output.logits, converted["output"].logits)


@pytest.mark.parametrize("file_name", sorted(FULL_SIZE_FF))
def test_full_size_config_equals_the_preset(file_name):
    dataset, preset = FULL_SIZE_FF[file_name]
    read = official_config(full_size_meta_state_dict(file_name), dataset)
    expected = GSSConfig.from_preset(preset)
    for field in GSS_FIELDS:
        assert getattr(read, field) == getattr(expected, field), field
    backbone_fields = SWIN_FIELDS if expected.backbone_config.model_type == "swin" else RESNET_FIELDS
    assert read.backbone_config.model_type == expected.backbone_config.model_type
    for field in backbone_fields:
        assert getattr(read.backbone_config, field) == getattr(expected.backbone_config, field), field


INVERSE_FIELDS = ("inverse_hidden_size", "inverse_depth", "inverse_num_heads", "inverse_window_size",
                  "inverse_intermediate_size")  # fmt: skip


@pytest.mark.parametrize("file_name", sorted(FULL_SIZE_FTW))
def test_full_size_ftw_config_equals_the_preset(file_name):
    """Every architecture field but the auxiliary head, which official FT-W checkpoints do not have."""
    dataset, preset = FULL_SIZE_FTW[file_name]
    read = official_config(full_size_meta_state_dict(file_name), dataset)
    expected = GSSConfig.from_preset(preset)
    for field in (*(field for field in GSS_FIELDS if field != "auxiliary_channels"), *INVERSE_FIELDS):
        assert getattr(read, field) == getattr(expected, field), field
    assert read.inverse_type == "learned" and not read.use_auxiliary_head and expected.use_auxiliary_head
    backbone_fields = SWIN_FIELDS if expected.backbone_config.model_type == "swin" else RESNET_FIELDS
    assert read.backbone_config.model_type == expected.backbone_config.model_type
    for field in backbone_fields:
        assert getattr(read.backbone_config, field) == getattr(expected.backbone_config, field), field


def test_a_head_with_both_ff_and_ftw_keys_is_refused():
    state_dict = full_size_meta_state_dict("state_dict_keys_ade20k_ftw_swin-l.txt")
    state_dict["decode_head.conv_seg_pixel.weight"] = torch.empty(150, 384, 1, 1, device="meta")
    with pytest.raises(ValueError, match="both GSS-FT-W keys"):
        official_config(state_dict, "ade20k")


# ---------------------------------------------------------------------------------------------------------------
# GSS-FT-W: the learned X^-1 (`projection`, `post_transformer_block`, `post_swin_ln`, `cls_segmap`)
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=sorted(FTW_FIXTURES))
def converted_ftw(request) -> dict:
    """The FT-W fixture converted and loaded strictly, with the official I/O, the model's outputs and its X^-1
    logits at 2x (the official head output) on its own maskige and on the official one."""
    state_dict, config, weights, model, official = convert_and_load(request.param, FTW_FIXTURES[request.param])
    with torch.no_grad():
        output = model(official["pixel_values"], sliding_window=False)
        head_output = model.inverse(model.tokenizer.decode(output.token_ids))
        head_output_on_official_maskige = model.inverse(official["maskige_unit"] * 255)
    return {"name": request.param, "state_dict": state_dict, "config": config, "weights": weights, "model": model,
            "official": official, "output": output, "head_output": head_output,
            "head_output_on_official_maskige": head_output_on_official_maskige}  # fmt: skip


def _head_output_differences(head_output: torch.Tensor, official: dict) -> dict[str, float]:
    """Relative differences to the official `head_test_output__*` summaries (top1, top2, channel mean, crops)."""
    top2 = head_output.topk(2, dim=1).values
    height, width = head_output.shape[-2:]
    centre = head_output[..., height // 2 : height // 2 + 16, width // 2 : width // 2 + 16]
    crops = {key: value for key, value in official.items() if key.startswith("head_test_output__crop_r0_")}
    centre_key = next(key for key in official if key.startswith("head_test_output__crop_") and key not in crops)
    return {
        "top1": relative_difference(top2[:, 0], official["head_test_output__top1"]),
        "top2": relative_difference(top2[:, 1], official["head_test_output__top2"]),
        "channel_mean_f64": relative_difference(
            head_output.double().mean(dim=(2, 3)), official["head_test_output__channel_mean_f64"]
        ),
        "crop_0": relative_difference(head_output[..., :16, :16], next(iter(crops.values()))),
        "crop_centre": relative_difference(centre, official[centre_key]),
    }


def test_ftw_config_has_the_learned_inverse_and_no_auxiliary_head(converted_ftw):
    config, model = converted_ftw["config"], converted_ftw["model"]
    assert config.inverse_type == "learned" and not config.use_auxiliary_head and model.auxiliary_head is None
    assert not any(key.startswith("auxiliary_head.") for key in model.state_dict())


@pytest.mark.parametrize("maskige", ["head_output", "head_output_on_official_maskige"])
def test_ftw_head_output_matches_the_official_one(converted_ftw, maskige):
    differences = _head_output_differences(converted_ftw[maskige], converted_ftw["official"])
    for name, difference in differences.items():
        assert difference <= RELATIVE_TOLERANCE, f"{converted_ftw['name']} {maskige} {name}: {difference:.2e}"
    official_argmax = converted_ftw["official"]["head_test_output__argmax"].long()
    top2 = converted_ftw[maskige].topk(2, dim=1).values
    differing = converted_ftw[maskige].argmax(dim=1) != official_argmax
    assert not (differing & (top2[:, 0] - top2[:, 1] > 1e-5)).any(), f"{int(differing.sum())} pixels differ"


def test_ftw_token_ids_equal_the_official_ones(converted_ftw):
    official = converted_ftw["official"]
    official_top2 = official["token_logits__top1"] - official["token_logits__top2"]
    differing = converted_ftw["output"].token_ids != official["token_ids"][:, 0]
    assert not (differing & (official_top2 > RELATIVE_TOLERANCE)).any(), f"{int(differing.sum())} tokens differ"


def test_ftw_segmentation_matches_the_official_one(converted_ftw):
    segmentation = converted_ftw["output"].logits.argmax(dim=1)[0]
    agreement = float((segmentation == converted_ftw["official"]["segmentation"]).double().mean())
    assert agreement >= SEGMENTATION_AGREEMENT, f"{converted_ftw['name']}: {agreement:.4%} of pixels agree"


def test_ftw_without_the_unit_range_input_the_head_output_differs(converted_ftw):
    """Control: `projection` reads the maskige in 0..1, which `LearnedInverse` gets by dividing by 255; feeding it
    the 0..1 maskige as if it were in 0..255 moves the head output far from the official one."""
    with torch.no_grad():
        head_output = converted_ftw["model"].inverse(converted_ftw["official"]["maskige_unit"])
    differences = _head_output_differences(head_output, converted_ftw["official"])
    assert differences["crop_0"] > 100 * RELATIVE_TOLERANCE


def test_ftw_weights_do_not_load_into_a_model_with_an_auxiliary_head(converted_ftw):
    """Control: with `use_auxiliary_head=True` (the default) the converted weights leave the auxiliary head
    missing, which strict loading refuses."""
    config = copy.deepcopy(converted_ftw["config"])
    config.use_auxiliary_head = True
    model = GSSForSemanticSegmentation(config)
    with pytest.raises(RuntimeError, match="Missing key.*auxiliary_head"):
        model.load_state_dict(converted_ftw["weights"], strict=True)


def test_ftw_model_refuses_labels(converted_ftw):
    labels = torch.zeros(converted_ftw["official"]["pixel_values"].shape[-2:], dtype=torch.long)[None]
    with pytest.raises(ValueError, match="no auxiliary head"), torch.no_grad():
        converted_ftw["model"](converted_ftw["official"]["pixel_values"], labels=labels, sliding_window=False)


def test_ftw_save_pretrained_round_trip_gives_the_same_outputs(converted_ftw, tmp_path):
    from safetensors.torch import save_file

    checkpoint = tmp_path / "official.safetensors"
    save_file(converted_ftw["state_dict"], checkpoint)
    convert_checkpoint(checkpoint, tmp_path / "converted", dataset=FTW_FIXTURES[converted_ftw["name"]])
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "converted").eval()
    assert isinstance(loaded, GSSForSemanticSegmentation) and loaded.auxiliary_head is None
    with torch.no_grad():
        output = loaded(converted_ftw["official"]["pixel_values"], sliding_window=False)
    assert torch.equal(output.token_ids, converted_ftw["output"].token_ids)
    assert torch.equal(output.logits, converted_ftw["output"].logits)


# ---------------------------------------------------------------------------------------------------------------
# Training: the stage-II loss and its target tokens (FF), the stage-III loss (FT-W), in both BatchNorm modes
# ---------------------------------------------------------------------------------------------------------------
def without_dropout(config: GSSConfig, weights: dict[str, torch.Tensor]) -> GSSForSemanticSegmentation:
    """The converted model with dropout and drop path off, as the fixtures were made (`dropout_ratio` 0, Swin
    `drop_path_rate` 0), so that its training-mode outputs are deterministic."""
    config = copy.deepcopy(config)
    config.prior_dropout = 0.0
    if config.backbone_config.model_type == "swin":
        config.backbone_config.drop_path_rate = 0.0
    model = GSSForSemanticSegmentation(config)
    model.load_state_dict(weights, strict=True)
    return model


def in_official_bn_mode(model: GSSForSemanticSegmentation, mode: str) -> GSSForSemanticSegmentation:
    """`evalbn`: everything in eval mode; `trainbn`: `model.train()` as the official `forward_train` ran, except
    that FT-W's frozen backbone (`frozen_stages=4`) keeps its BatchNorms in eval mode, as the official one does."""
    model.train(mode == "trainbn")
    if mode == "trainbn" and model.config.inverse_type == "learned":
        model.backbone.eval()
    return model


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["evalbn", "trainbn"])
def test_stage_ii_losses_and_targets_match_the_official_forward_train(converted, mode):
    official = converted["official"]
    model = in_official_bn_mode(without_dropout(converted["config"], converted["weights"]), mode)
    pixel_values, labels = official["pixel_values"], official["labels"][:, 0]
    with torch.no_grad():
        output = model(pixel_values, labels=labels, sliding_window=False)
        levels = model.backbone(pixel_values)
        auxiliary = model.auxiliary_head(levels, tuple(levels[0].shape[-2:]))
    upsampled = upsample_labels_2x(labels)
    assert torch.equal(upsampled, official["train_pixel_seg_label"][:, 0].long())
    fill = nn.functional.interpolate(auxiliary, size=upsampled.shape[-2:], mode="bilinear").argmax(1)
    for_reconstruction = torch.where(upsampled == 255, fill, upsampled)
    assert torch.equal(for_reconstruction, official[f"train_{mode}.gt_for_recon"][:, 0].long())
    targets = model.token_targets(upsampled, fill)
    expected = official[f"train_{mode}.target_token_ids_masked"][:, 0]
    assert torch.equal(targets, expected.masked_fill(expected == model.config.codebook_size, TOKEN_IGNORE_INDEX))
    losses = {
        "loss_ce": model.config.token_loss_weight * output.token_loss,
        "loss_ce_pixel": model.config.auxiliary_loss_weight * output.auxiliary_loss,
    }
    for name, value in losses.items():
        expected_loss = official[f"train_{mode}.losses.decode.{name}"]
        assert relative_difference(value, expected_loss) <= RELATIVE_TOLERANCE, (name, float(value))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["evalbn", "trainbn"])
def test_stage_iii_loss_matches_the_official_ftw_forward_train(converted_ftw, mode):
    """The official GSS-FT-W loss: X^-1 on the predicted maskige at 2x, its scores resized to the label map,
    cross-entropy; what `training/train_inverse.py` computes (with, there, the frozen prior in eval mode)."""
    official = converted_ftw["official"]
    model = in_official_bn_mode(without_dropout(converted_ftw["config"], converted_ftw["weights"]), mode)
    labels = official["labels"][:, 0]
    with torch.no_grad():
        maskige = model.generate_maskige(official["pixel_values"])
        logits = resize_scores(model.inverse(maskige), labels.shape[-2:])
    loss = masked_cross_entropy(logits, labels, model.config.ignore_index)
    assert maskige.shape[-2:] == (2 * labels.shape[-2], 2 * labels.shape[-1])
    assert relative_difference(loss, official[f"train_{mode}.losses.decode.loss_ce"]) <= RELATIVE_TOLERANCE


@pytest.mark.slow
def test_without_the_2x_inverse_the_stage_iii_loss_differs(converted_ftw):
    """Control: X^-1 on the maskige resized to the photo first (gss_hf's old stage-III order) is another function."""
    official = converted_ftw["official"]
    model = converted_ftw["model"]
    labels = official["labels"][:, 0]
    with torch.no_grad():
        maskige = resize_scores(model.generate_maskige(official["pixel_values"]), labels.shape[-2:])
        loss = masked_cross_entropy(model.inverse(maskige), labels, model.config.ignore_index)
    assert relative_difference(loss, official["train_evalbn.losses.decode.loss_ce"]) > 10 * RELATIVE_TOLERANCE


# ---------------------------------------------------------------------------------------------------------------
# The six released models: every key converted, loaded strictly into its preset (meta tensors, nothing allocated)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("file_name", sorted({**FULL_SIZE_FF, **FULL_SIZE_FTW}))
def test_full_size_checkpoint_converts_and_loads_strictly_into_its_preset(file_name):
    dataset, preset = {**FULL_SIZE_FF, **FULL_SIZE_FTW}[file_name]
    config, weights = convert_official_state_dict(full_size_meta_state_dict(file_name))
    assert config.palette_name == dataset
    is_ftw = file_name in FULL_SIZE_FTW
    with torch.device("meta"):
        model = GSSForSemanticSegmentation(GSSConfig.from_preset(preset, use_auxiliary_head=not is_ftw))
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    assert {key: tuple(value.shape) for key, value in weights.items()} == expected
    loading = model.load_state_dict(weights, strict=True, assign=True)
    assert not loading.missing_keys and not loading.unexpected_keys
    assert released_model(config, weights).preset == preset


def test_every_released_model_has_a_full_size_key_list():
    assert sorted(release.preset for release in RELEASED_MODELS) == sorted(
        preset for _, preset in {**FULL_SIZE_FF, **FULL_SIZE_FTW}.values()
    )


@pytest.mark.slow
def test_a_shrunk_model_matches_no_released_one(converted):
    assert released_model(converted["config"], converted["weights"]) is None


# ---------------------------------------------------------------------------------------------------------------
# The official test pipeline, through the saved processor and the pipeline
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(converted, tmp_path_factory) -> Path:
    """The fixture converted by `convert_checkpoint` from an mmcv-style checkpoint file."""
    folder = tmp_path_factory.mktemp(converted["name"])
    torch.save({"meta": {"mmcv_version": "1.6.0", "CLASSES": ("a", "b")}, "state_dict": converted["state_dict"]},
               folder / "iter_80000.pth")  # fmt: skip
    convert_checkpoint(folder / "iter_80000.pth", folder / "converted")
    return folder / "converted"


@pytest.mark.slow
def test_saved_folder_has_the_official_test_pipeline(converted, saved):
    processor = AutoImageProcessor.from_pretrained(saved)
    config = AutoConfig.from_pretrained(saved)
    if FF_FIXTURES[converted["name"]] == "ade20k":
        assert processor.size == {"shortest_edge": 512, "longest_edge": 2048} and processor.do_reduce_labels
        assert not config.sliding_window
    else:
        assert processor.size == {"shortest_edge": 1024, "longest_edge": 2048} and not processor.do_reduce_labels
        assert config.sliding_window
        assert (config.sliding_window_crop_size, config.sliding_window_stride) == (768, 512)
    assert processor.size_rounding == "nearest"
    assert {"README.md", "model.safetensors", "config.json", "preprocessor_config.json", "modeling_gss.py"} <= {
        path.name for path in saved.iterdir()
    }


@pytest.mark.slow
def test_the_processor_gives_the_official_pixel_values(converted, saved):
    official = converted["official"]
    processor = AutoImageProcessor.from_pretrained(saved, do_resize=False)
    pixel_values = processor(official["image_uint8"].numpy(), return_tensors="pt").pixel_values
    assert relative_difference(pixel_values, official["pixel_values"]) <= 1e-6


@pytest.mark.slow
def test_the_pipeline_gives_the_official_segmentation(converted, saved):
    """`pipeline("image-segmentation")` on the fixture photo (at its own size, as the official code ran it: the
    fixture is smaller than the test scale) reproduces the official `simple_test` segmentation."""
    official = converted["official"]
    height, width = official["segmentation"].shape
    processor = AutoImageProcessor.from_pretrained(saved, size={"height": height, "width": width})
    segmenter = pipeline("image-segmentation", model=str(saved), image_processor=processor)
    segments = segmenter(PIL.Image.fromarray(official["image_uint8"].numpy()), subtask="semantic")
    label2id = AutoConfig.from_pretrained(saved).label2id
    segmentation = torch.full((height, width), -1)
    for segment in segments:
        segmentation[torch.from_numpy(np.array(segment["mask"]) > 0)] = label2id[segment["label"]]
    agreement = (segmentation == official["segmentation"]).double().mean()
    assert agreement >= SEGMENTATION_AGREEMENT
