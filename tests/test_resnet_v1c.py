"""ResNetV1cBackbone: parity with the official GSS code's R101 backbone outputs, the checkpoint converter on the
narrow fixtures and on the full-size key list, saving and loading, use inside GSS, and bad checkpoints."""


import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file
from transformers import AutoBackbone, AutoConfig

from gss_hf import (
    GSSForSemanticSegmentation,
    ResNetV1cBackbone,
    ResNetV1cConfig,
    convert_mmseg_resnet_state_dict,
    resnet_v1c_config_from_state_dict,
)
from official_gss import RELATIVE_TOLERANCE, full_size_meta_state_dict, official_gss_file, relative_difference
from tiny_models import NUM_TINY_LABELS, tiny_gss_config


R101_FIXTURES = ("cityscapes_ff_r101_narrow", "cityscapes_ftw_r101_narrow")
FULL_SIZE_KEYS = "state_dict_keys_cityscapes_ff_r101.txt"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def official_files(fixture: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(official state dict, io tensors) of a shared fixture; skips when the shared data folder is absent."""
    weights_file = official_gss_file(fixture, "official_state_dict.safetensors")
    return load_file(weights_file), load_file(weights_file.parent / "io.safetensors")


def backbone_from_official(state_dict: dict[str, torch.Tensor], **config_overrides) -> ResNetV1cBackbone:
    config = resnet_v1c_config_from_state_dict(state_dict, **config_overrides)
    backbone = ResNetV1cBackbone(config)
    backbone.load_state_dict(convert_mmseg_resnet_state_dict(state_dict), strict=True)
    return backbone.eval()


def relative_differences(feature_maps, io: dict[str, torch.Tensor]) -> list[float]:
    """Per level: max |ours - official| / max |official|."""
    return [relative_difference(ours, io[f"backbone_level_{level}"]) for level, ours in enumerate(feature_maps)]


# ----------------------------------------------------------------------------------------------------------------
# Parity with the official backbone
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", R101_FIXTURES)
def test_converted_official_weights_reproduce_every_backbone_level(fixture):
    state_dict, io = official_files(fixture)
    backbone = backbone_from_official(state_dict)
    assert backbone.config.depths == [3, 4, 23, 3] and backbone.config.depth == 101
    assert (backbone.config.stem_channels, backbone.config.base_channels) == (8, 8)
    with torch.no_grad():
        feature_maps = backbone(io["pixel_values"]).feature_maps
    assert [tuple(level.shape) for level in feature_maps] == [
        tuple(io[f"backbone_level_{level}"].shape) for level in range(4)
    ]
    differences = relative_differences(feature_maps, io)
    assert max(differences) <= RELATIVE_TOLERANCE, differences


@pytest.mark.parametrize(
    "wrong_setting", [{"contract_dilation": False}, {"dilations": [1, 1, 1, 1]}], ids=["no_contraction", "no_dilation"]
)
def test_wrong_dilation_settings_change_the_dilated_levels(wrong_setting):
    """The weights' shapes are the same, so only the outputs of the dilated stages 3 and 4 can tell."""
    state_dict, io = official_files(R101_FIXTURES[0])
    backbone = backbone_from_official(state_dict, **wrong_setting)
    with torch.no_grad():
        differences = relative_differences(backbone(io["pixel_values"]).feature_maps, io)
    assert max(differences[:2]) <= RELATIVE_TOLERANCE, differences
    assert min(differences[2:]) > 100 * RELATIVE_TOLERANCE, differences


# ----------------------------------------------------------------------------------------------------------------
# Saving, loading, use in GSS
# ----------------------------------------------------------------------------------------------------------------
def test_save_and_load_gives_identical_outputs(tmp_path):
    """`AutoConfig` resolves the saved type and `AutoBackbone` builds it. The weights reload through the class:
    transformers 5.24's `AutoBackbone.from_pretrained` asks the Hub whether the name is a repository before looking
    at local folders, and refuses a path (its own ResNet's too)."""
    state_dict, io = official_files(R101_FIXTURES[0])
    backbone = backbone_from_official(state_dict)
    backbone.save_pretrained(str(tmp_path))
    config = AutoConfig.from_pretrained(str(tmp_path))
    assert type(config) is ResNetV1cConfig
    saved, loaded = backbone.config.to_dict(), config.to_dict()
    saved.pop("_name_or_path"), loaded.pop("_name_or_path")
    assert loaded == saved
    assert type(AutoBackbone.from_config(config)) is ResNetV1cBackbone
    reloaded = ResNetV1cBackbone.from_pretrained(str(tmp_path)).eval()
    with torch.no_grad():
        for ours, theirs in zip(backbone(io["pixel_values"]).feature_maps, reloaded(io["pixel_values"]).feature_maps):
            torch.testing.assert_close(theirs, ours, rtol=0, atol=0)


def test_gss_model_with_a_resnet_v1c_backbone_trains_saves_and_loads(tmp_path):
    backbone_config = {
        "model_type": "resnet_v1c",
        "depth": None,
        "depths": [1, 1, 1, 1],
        "stem_channels": 8,
        "base_channels": 4,
    }
    torch.manual_seed(0)
    model = GSSForSemanticSegmentation(tiny_gss_config("resnet", backbone_config=backbone_config)).train()
    assert type(model.backbone.model) is ResNetV1cBackbone
    assert model.backbone.channels == [16, 32, 64, 128]
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, 64, 96, generator=generator)
    labels = torch.randint(0, NUM_TINY_LABELS, (2, 64, 96), generator=generator)
    output = model(pixel_values, labels=labels)
    assert torch.isfinite(output.loss)
    output.loss.backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)

    model.eval().save_pretrained(str(tmp_path))
    reloaded = GSSForSemanticSegmentation.from_pretrained(str(tmp_path)).eval()
    assert type(reloaded.backbone.model) is ResNetV1cBackbone
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values).logits, model(pixel_values).logits, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------
# The full-size official checkpoint's keys
# ----------------------------------------------------------------------------------------------------------------
def test_full_size_official_keys_give_r101_and_convert_onto_its_backbone():
    state_dict = full_size_meta_state_dict(FULL_SIZE_KEYS)
    config = resnet_v1c_config_from_state_dict(state_dict)
    assert (config.depth, config.depths, config.stem_channels, config.base_channels) == (101, [3, 4, 23, 3], 64, 64)
    with torch.device("meta"):
        backbone = ResNetV1cBackbone(config)
    expected = {key: (tuple(tensor.shape), tensor.dtype) for key, tensor in backbone.state_dict().items()}
    converted = {
        key: (tuple(tensor.shape), tensor.dtype) for key, tensor in convert_mmseg_resnet_state_dict(state_dict).items()
    }
    assert len(converted) == sum(key.startswith("backbone.") for key in state_dict) == 636
    assert converted == expected
    assert backbone.channels == [256, 512, 1024, 2048]


# ----------------------------------------------------------------------------------------------------------------
# Bad checkpoints and settings
# ----------------------------------------------------------------------------------------------------------------
def narrow_state_dict() -> dict[str, torch.Tensor]:
    return official_files(R101_FIXTURES[0])[0]


def test_a_state_dict_without_backbone_keys_is_refused():
    head_only = {key: tensor for key, tensor in narrow_state_dict().items() if not key.startswith("backbone.")}
    with pytest.raises(ValueError, match="no key starting with 'backbone.'"):
        convert_mmseg_resnet_state_dict(head_only)
    with pytest.raises(ValueError, match=r"no 'backbone\.stem\.0\.weight'"):
        resnet_v1c_config_from_state_dict(head_only)


@pytest.mark.parametrize(
    "dropped, named",
    [
        ("backbone.layer3.", r"backbone\.layer3\.0\.\*"),
        ("backbone.layer2.1.", r"backbone\.layer2\.1\.\*"),
        ("backbone.stem.6.", r"backbone\.stem\.6\.weight"),
        ("backbone.layer1.0.conv1.", r"backbone\.layer1\.0\.conv1\.weight"),
    ],
)
def test_a_missing_stem_stage_or_block_is_named(dropped, named):
    state_dict = {key: tensor for key, tensor in narrow_state_dict().items() if not key.startswith(dropped)}
    with pytest.raises(ValueError, match=named):
        resnet_v1c_config_from_state_dict(state_dict)


def test_inconsistent_settings_are_refused():
    with pytest.raises(ValueError, match=r"`depth` must be one of \(50, 101, 152\)"):
        ResNetV1cConfig(depth=34)
    with pytest.raises(StrictDataclassClassValidationError, match="`depth` 50 has blocks"):
        ResNetV1cConfig(depth=50, depths=[3, 4, 23, 3])
    with pytest.raises(StrictDataclassClassValidationError, match="one entry per stage"):
        ResNetV1cConfig(strides=[1, 2, 1])
    with pytest.raises(StrictDataclassClassValidationError, match="even"):
        ResNetV1cConfig(stem_channels=7)
