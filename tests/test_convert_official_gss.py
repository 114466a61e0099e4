"""Official GSS-FF checkpoints converted by `convert_official_gss`, checked stage by stage against the official
code's own test vectors (`../shared/data/official_gss`, skipped when absent): prior features, head features, token
logits, token ids, maskige and the final segmentation; plus the configs read from the full-size key lists."""

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForSemanticSegmentation

from gss_hf import GSSConfig, GSSForSemanticSegmentation
from gss_hf.convert_official_gss import convert_checkpoint, convert_official_state_dict, official_config
from gss_hf.modeling_gss_inverse import TrainingFreeInverse
from gss_hf.modeling_gss_prior import resize_and_concatenate


OFFICIAL_GSS = Path(__file__).resolve().parents[2] / "shared" / "data" / "official_gss"
FF_FIXTURES = {"ade20k_ff_swin_tiny": "ade20k", "cityscapes_ff_r101_narrow": "cityscapes"}
FULL_SIZE_FF = {
    "state_dict_keys_ade20k_ff_swin-l.txt": ("ade20k", "gss-ff-swin-large"),
    "state_dict_keys_cityscapes_ff_swin-l.txt": ("cityscapes", "gss-ff-swin-large-cityscapes"),
    "state_dict_keys_cityscapes_ff_r101.txt": ("cityscapes", "gss-ff-resnet101"),
}
FULL_SIZE_FTW = ("state_dict_keys_ade20k_ftw_swin-l.txt", "state_dict_keys_cityscapes_ftw_r101.txt")
RELATIVE_TOLERANCE = 1e-4
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


def _folder(name: str) -> Path:
    folder = OFFICIAL_GSS / name
    if not folder.exists():
        pytest.skip(f"the official GSS test vectors {name!r} are not at {folder} (the shared data folder beside the checkout)")
    return folder


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Max |actual - expected| relative to max |expected|."""
    return float((actual.double() - expected.double()).abs().max() / expected.double().abs().max())


def prior_features(model: GSSForSemanticSegmentation, levels: list[torch.Tensor]) -> torch.Tensor:
    """The prior head up to its LayerNorm (the official `prior_features`): (batch, prior_hidden_size, h, w)."""
    head = model.prior_head
    fused = head.fuse(resize_and_concatenate(levels, head.level_projections, tuple(levels[0].shape[-2:])))
    hidden_states = head.window_transformer(fused)
    return head.layernorm(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@pytest.fixture(scope="module", params=sorted(FF_FIXTURES))
def converted(request) -> dict:
    """The fixture converted and loaded strictly, with the official I/O and the model's outputs."""
    from safetensors.torch import load_file

    folder = _folder(request.param)
    torch.set_num_threads(2)
    state_dict = load_file(folder / "official_state_dict.safetensors")
    config, weights = convert_official_state_dict(state_dict, FF_FIXTURES[request.param])
    model = GSSForSemanticSegmentation(config)
    loading = model.load_state_dict(weights, strict=True)
    assert not loading.missing_keys and not loading.unexpected_keys
    model.eval()
    official = load_file(folder / "io.safetensors")
    with torch.no_grad():
        levels = model.backbone(official["pixel_values"])
        output = model(official["pixel_values"], sliding_window=False, output_token_logits=True)
        features = {
            "prior_features": prior_features(model, levels),
            "head_cls_features": model.prior_head(levels, tuple(levels[0].shape[-2:])),
        }
        maskige_2x = model.tokenizer.decode(output.token_ids)
    import json

    checks = json.loads((folder / "tensors.json").read_text())["_checks"]
    return {"name": request.param, "state_dict": state_dict, "config": config, "model": model, "levels": levels,
            "official": official, "output": output, "features": features, "maskige_2x": maskige_2x,
            "checks": checks}  # fmt: skip


def test_converted_model_loads_strictly_and_reads_the_official_palette(converted):
    import json

    official_palette = json.loads((_folder(converted["name"]) / "model_config.json").read_text())["model"][
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
    convert_checkpoint(checkpoint, FF_FIXTURES[converted["name"]], tmp_path / "converted")
    loaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "converted").eval()
    assert isinstance(loaded, GSSForSemanticSegmentation)
    with torch.no_grad():
        output = loaded(converted["official"]["pixel_values"], sliding_window=False)
    assert torch.equal(output.token_ids, converted["output"].token_ids)
    assert torch.equal(output.logits, converted["output"].logits)


def _meta_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A key list (`key<TAB>shape<TAB>dtype`) as meta tensors of those shapes."""
    state_dict = {}
    for line in path.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        sizes = [int(size) for size in shape.strip("()").split(",") if size.strip()]
        state_dict[key] = torch.empty(sizes, dtype=getattr(torch, dtype.removeprefix("torch.")), device="meta")
    return state_dict


@pytest.mark.parametrize("file_name", sorted(FULL_SIZE_FF))
def test_full_size_config_equals_the_preset(file_name):
    dataset, preset = FULL_SIZE_FF[file_name]
    read = official_config(_meta_state_dict(_folder("full_size_keys") / file_name), dataset)
    expected = GSSConfig.from_preset(preset)
    for field in GSS_FIELDS:
        assert getattr(read, field) == getattr(expected, field), field
    backbone_fields = SWIN_FIELDS if expected.backbone_config.model_type == "swin" else RESNET_FIELDS
    assert read.backbone_config.model_type == expected.backbone_config.model_type
    for field in backbone_fields:
        assert getattr(read.backbone_config, field) == getattr(expected.backbone_config, field), field


@pytest.mark.parametrize("file_name", FULL_SIZE_FTW)
def test_ftw_checkpoints_are_refused_clearly(file_name):
    dataset = "ade20k" if "ade20k" in file_name else "cityscapes"
    with pytest.raises(NotImplementedError, match="FT-W conversion is not implemented yet"):
        official_config(_meta_state_dict(_folder("full_size_keys") / file_name), dataset)
