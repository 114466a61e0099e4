"""The official GSS Swin backbone (mmseg 0.26 `SwinTransformer`) converted onto transformers' `SwinBackbone`, checked
against the official code's own tensors (`../shared/data/official_gss`, skipped when absent)."""


import pytest
import torch
from transformers import SwinBackbone, SwinConfig

from gss_hf import GSSConfig
from gss_hf.convert_official_swin import convert_mmseg_swin_state_dict, swin_config_from_state_dict
from gss_hf.modeling_gss_prior import GSSBackbone
from official_gss import RELATIVE_TOLERANCE, full_size_meta_state_dict, official_gss_file, relative_difference


TINY_SWIN_FIXTURES = ("ade20k_ff_swin_tiny", "ade20k_ftw_swin_tiny")
SWIN_L_KEYS = "state_dict_keys_ade20k_ff_swin-l.txt"
LEVELS = 4


@pytest.fixture(scope="module", params=TINY_SWIN_FIXTURES)
def official_swin(request) -> dict:
    """The fixture's mmseg state dict, its derived `SwinConfig`, the converted weights and the official I/O."""
    from safetensors.torch import load_file

    weights_file = official_gss_file(request.param, "official_state_dict.safetensors")
    state_dict = load_file(weights_file)
    tensors = load_file(weights_file.parent / "io.safetensors")
    config = swin_config_from_state_dict(state_dict, window_size=12)
    return {
        "name": request.param,
        "state_dict": state_dict,
        "config": config,
        "converted": convert_mmseg_swin_state_dict(state_dict, config),
        "pixel_values": tensors["pixel_values"],
        "levels": [tensors[f"backbone_level_{level}"] for level in range(LEVELS)],
    }


def _load_strictly(config, converted: dict) -> SwinBackbone:
    """A `SwinBackbone` with `converted` loaded strictly. `relative_position_index` buffers are the only entries of
    the model not in `converted`: they are non-persistent (recomputed from the window size), so `state_dict()` and
    strict loading never see them."""
    model = SwinBackbone(config).eval()
    model.load_state_dict(converted, strict=True)
    recomputed = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    assert recomputed == {
        f"swin.encoder.layers.{stage}.blocks.{block}.attention.relative_position_bias.relative_position_index"
        for stage, depth in enumerate(config.depths)
        for block in range(depth)
    }
    return model


def _relative_differences(feature_maps, references) -> list[float]:
    """max |ours - official| / max |official| per level; shapes must agree."""
    differences = []
    for ours, official in zip(feature_maps, references, strict=True):
        assert ours.shape == official.shape
        differences.append(relative_difference(ours, official))
    return differences


def test_config_read_from_tiny_state_dict(official_swin):
    config = official_swin["config"]
    assert (config.embed_dim, config.depths, config.num_heads) == (12, [2, 2, 2, 2], [3, 6, 12, 24])
    assert (config.window_size, config.patch_size, config.mlp_ratio, config.qkv_bias) == (12, 4, 4.0, True)
    assert config.out_features == ["stage1", "stage2", "stage3", "stage4"]


def test_recomputed_relative_position_index_is_mmsegs(official_swin):
    """The dropped `relative_position_index` buffers select the same table cells as transformers' recomputed ones."""
    model = _load_strictly(official_swin["config"], official_swin["converted"])
    buffers = dict(model.named_buffers())
    for stage, depth in enumerate(official_swin["config"].depths):
        for block in range(depth):
            official = official_swin["state_dict"][
                f"backbone.stages.{stage}.blocks.{block}.attn.w_msa.relative_position_index"
            ]
            ours = buffers[
                f"swin.encoder.layers.{stage}.blocks.{block}.attention.relative_position_bias.relative_position_index"
            ]
            assert torch.equal(ours, official.reshape(-1))


def test_config_that_does_not_describe_the_state_dict_is_refused(official_swin):
    other = SwinConfig(embed_dim=12, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=12)
    with pytest.raises(ValueError, match=r"'depths': \(\[2, 2, 6, 2\], \[2, 2, 2, 2\]\)"):
        convert_mmseg_swin_state_dict(official_swin["state_dict"], other)


def test_converted_backbone_matches_official_levels(official_swin):
    model = _load_strictly(official_swin["config"], official_swin["converted"])
    with torch.no_grad():
        feature_maps = model(official_swin["pixel_values"]).feature_maps
    differences = _relative_differences(feature_maps, official_swin["levels"])
    print(f"{official_swin['name']}: max relative difference per level {differences}")
    assert max(differences) <= RELATIVE_TOLERANCE, differences


def test_gss_backbone_wraps_the_converted_swin(official_swin):
    """The route gss_hf models take (`GSSBackbone` -> `AutoBackbone`) computes the same levels."""
    backbone = GSSBackbone(GSSConfig(backbone_config=official_swin["config"])).eval()
    assert isinstance(backbone.model, SwinBackbone)
    backbone.model.load_state_dict(official_swin["converted"], strict=True)
    with torch.no_grad():
        levels = backbone(official_swin["pixel_values"])
    assert max(_relative_differences(levels, official_swin["levels"])) <= RELATIVE_TOLERANCE


def test_control_without_patch_merging_reorder_fails(official_swin):
    """Merging weights left in mmseg's unfold order: level 0 (before any merging) still matches, the others not."""
    unordered = dict(official_swin["converted"])
    for stage in range(LEVELS - 1):
        for name in ("reduction.weight", "norm.weight", "norm.bias"):
            unordered[f"swin.encoder.layers.{stage}.downsample.{name}"] = official_swin["state_dict"][
                f"backbone.stages.{stage}.downsample.{name}"
            ]
    model = _load_strictly(official_swin["config"], unordered)
    with torch.no_grad():
        feature_maps = model(official_swin["pixel_values"]).feature_maps
    differences = _relative_differences(feature_maps, official_swin["levels"])
    print(f"{official_swin['name']}: without the merging reorder {differences}")
    assert differences[0] <= RELATIVE_TOLERANCE
    assert min(differences[1:]) > 100 * RELATIVE_TOLERANCE, differences


def test_control_transformers_window_clamp_fails(official_swin):
    """mmseg keeps window 12 and shift 6 on the 8x8 and 4x4 maps; `SwinBackbone` does too, because it runs its
    encoder with `always_partition=True`. Without it (`SwinModel`'s default), transformers clamps window and shift to
    maps no larger than the window: the full clamp cannot even run (the relative position bias is built for the
    configured window), and clamping only the shift, by transformers' own rule, changes levels 2 and 3."""
    model = _load_strictly(official_swin["config"], official_swin["converted"])
    with torch.no_grad(), pytest.raises(RuntimeError, match="must match the size"):
        model.swin(official_swin["pixel_values"], always_partition=False)

    model = _load_strictly(official_swin["config"], official_swin["converted"])
    side = official_swin["pixel_values"].shape[-1] // official_swin["config"].patch_size
    for stage in model.swin.encoder.layers:
        for block in stage.blocks:
            block.set_shift_and_window_size((side, side))
            block.window_size = official_swin["config"].window_size
        side //= 2
    with torch.no_grad():
        feature_maps = model(official_swin["pixel_values"]).feature_maps
    differences = _relative_differences(feature_maps, official_swin["levels"])
    print(f"{official_swin['name']}: with transformers' shift clamp {differences}")
    assert max(differences[:2]) <= RELATIVE_TOLERANCE
    assert min(differences[2:]) > 100 * RELATIVE_TOLERANCE, differences


def test_full_size_swin_large_keys_convert_onto_swin_backbone():
    state_dict = full_size_meta_state_dict(SWIN_L_KEYS)
    config = swin_config_from_state_dict(state_dict)
    assert (config.embed_dim, config.depths, config.num_heads, config.window_size) == (
        192,
        [2, 2, 18, 2],
        [6, 12, 24, 48],
        12,
    )
    converted = convert_mmseg_swin_state_dict(state_dict, config)
    with torch.device("meta"):
        expected = SwinBackbone(config).state_dict()
    assert set(converted) == set(expected)
    assert {key: tuple(value.shape) for key, value in converted.items()} == {
        key: tuple(value.shape) for key, value in expected.items()
    }
    backbone_keys = [key for key in state_dict if key.startswith("backbone.")]
    relative_position_indices = [key for key in backbone_keys if key.endswith("relative_position_index")]
    fused_qkv = [key for key in backbone_keys if ".qkv." in key]
    # Every backbone key lands somewhere: qkv entries become three, index buffers none, swin.layernorm is added.
    assert len(converted) == len(backbone_keys) + 2 * len(fused_qkv) - len(relative_position_indices) + 2


def test_state_dict_without_backbone_keys_is_refused():
    head_only = {"decode_head.conv_seg.weight": torch.zeros(8, 4, 1, 1)}
    with pytest.raises(ValueError, match=r"backbone\.patch_embed\.projection\.weight"):
        swin_config_from_state_dict(head_only)
    with pytest.raises(ValueError, match=r"0 of 1 keys start with the prefix"):
        convert_mmseg_swin_state_dict(head_only, SwinConfig())
    with pytest.raises(ValueError, match=r"missing \['model\.patch_embed"):
        swin_config_from_state_dict({"model.norm0.weight": torch.ones(12)}, prefix="model.")
