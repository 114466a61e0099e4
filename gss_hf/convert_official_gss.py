"""Official GSS-FF and GSS-FT-W checkpoints (MMSegmentation 0.26 format) as `GSSForSemanticSegmentation` models.

The official `GenerativeSegHeadFF` / `GenerativeSegHeadFTW` and gss_hf's heads compute the same function once the
weights are laid out as gss_hf expects (tests/test_convert_official_gss.py checks it on the official code's test
vectors):

* The official head reads the backbone levels in `in_index` order [1, 0, 2, 3] (every official config): its
  projection `convs.i` (and `convs_pixel.i`) takes level `OFFICIAL_LEVEL_ORDER[i]`, and the fusion convs see the
  projected levels concatenated in that order. gss_hf projects and concatenates the levels in their own order, so
  the projections are renumbered and the fusion convs' input channels permuted. Both resize to level 0 (stride 4),
  which is gss_hf's token grid.
* `fusion_conv` is a conv + BatchNorm + ReLU: the config switch `prior_fuse_norm_activation`.
* `transformer_block` is mmseg's `SwinBlockSequence`, whose blocks are converted as the Swin backbone's are
  (`pop_mmseg_swin_block`); gss_hf's `WindowTransformer` partitions windows, shifts and pads as mmseg does.
* GSS-FF's test output is the one-hot of the nearest palette colour at 2x the photo, which the segmentor resizes to the
  photo: the config switch `nearest_inverse_one_hot`.
* `decode_head.d_vae.*` is OpenAI's dVAE (`DalleTokenizer`), its settings read from its shapes.

Backbones: mmseg Swin (`backbone.patch_embed.*`) or ResNetV1c (`backbone.stem.*`). Widths and depths are read from
the shapes, so the shrunk test models convert as the released ones do.

GSS-FT-W (`projection`, `post_transformer_block`, `post_swin_ln`, `cls_segmap` instead of the auxiliary branch
`convs_pixel`, `fusion_conv_pixel`, `conv_seg_pixel`):
* The official test output is `cls_segmap(post_swin_ln(post_transformer_block(projection(maskige / 255))))` at 2x,
  which the segmentor resizes to the photo: `LearnedInverse` as it is (`projection` is a 1x1 conv without bias, BN,
  ReLU, like `LearnedInverse.embed`; `cls_segmap` a 1x1 conv with bias), so no switch is needed. Its widths come
  from the shapes (`inverse_hidden_size`, `inverse_depth`, ...).
* The checkpoint has no auxiliary head (the official FT-W head deletes it), so the config gets
  `use_auxiliary_head=False` and the model none, rather than an untrained one: it predicts, and strict loading
  works, but it cannot compute the stage-II loss (labels raise).

Command line: `python -m gss_hf.convert_official_gss --checkpoint CKPT --dataset ade20k --output_dir OUT`.
"""

import argparse
import math
import re
from pathlib import Path

import torch
from safetensors.torch import load_file

from .configuration_gss import GSSConfig
from .convert_official_swin import convert_mmseg_swin_state_dict, pop_mmseg_swin_block, swin_config_from_state_dict
from .image_processing_gss import GSSImageProcessor
from .modeling_dalle_dvae import dalle_settings_from_shapes, convert_openai_state_dict
from .modeling_gss import GSSForSemanticSegmentation
from .modeling_resnet_v1c import convert_mmseg_resnet_state_dict, resnet_v1c_config_from_state_dict
from .presets import paper_preset


HEAD = "decode_head."
DVAE = HEAD + "d_vae."
# Head input i of the official head is backbone level OFFICIAL_LEVEL_ORDER[i] (`in_index` of every official config).
OFFICIAL_LEVEL_ORDER = (1, 0, 2, 3)
FTW_ONLY_KEYS = ("projection.", "post_transformer_block.", "post_swin_ln.", "cls_segmap.")
FF_ONLY_KEYS = ("convs_pixel.", "fusion_conv_pixel.", "conv_seg_pixel.")
# Settings of the official configs that do not show in the weights (they only matter for training).
OFFICIAL_HEAD_DROPOUT = 0.1
OFFICIAL_SWIN_DROP_PATH_RATE = 0.3
DATASETS = ("cityscapes", "ade20k")
# The official test pipelines' photo scales (`Resize` with `keep_ratio=True`, img_scale (2048, 512) / (2048, 1024)).
TEST_SIZES = {
    "ade20k": {"shortest_edge": 512, "longest_edge": 2048},
    "cityscapes": {"shortest_edge": 1024, "longest_edge": 2048},
}
BLOCK_KEY = re.compile(re.escape(HEAD) + r"transformer_block\.blocks\.(\d+)\.")
POST_BLOCK_KEY = re.compile(re.escape(HEAD) + r"post_transformer_block\.blocks\.(\d+)\.")


def _require(state_dict: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state_dict:
        raise ValueError(f"Not an official GSS state dict: it has no {key!r}.")
    return state_dict[key]


def _backbone_config(state_dict: dict[str, torch.Tensor]):
    """The backbone's config and the (channels per level) it outputs, read from the `backbone.*` names and shapes."""
    if "backbone.patch_embed.projection.weight" in state_dict:
        config = swin_config_from_state_dict(state_dict, drop_path_rate=OFFICIAL_SWIN_DROP_PATH_RATE)
        channels = [int(config.embed_dim * 2**level) for level in range(len(config.depths))]
    elif "backbone.stem.0.weight" in state_dict:
        config = resnet_v1c_config_from_state_dict(state_dict, out_features=["stage1", "stage2", "stage3", "stage4"])
        channels = [config.base_channels * 2**level * 4 for level in range(len(config.depths))]
    else:
        raise ValueError(
            "The backbone is neither mmseg Swin (backbone.patch_embed.*) nor ResNetV1c (backbone.stem.*); first keys: "
            f"{list(state_dict)[:5]}."
        )
    return config, channels


def _tokenizer_config(state_dict: dict[str, torch.Tensor]) -> dict:
    """The dVAE settings, read from the encoder's and decoder's shapes (they must agree where both have one)."""
    settings = {}
    for part, is_encoder in (("encoder", True), ("decoder", False)):
        prefix = f"{DVAE}{part}."
        tensors = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
        for name, value in dalle_settings_from_shapes(tensors, Path(prefix), is_encoder).items():
            if settings.setdefault(name, value) != value:
                raise ValueError(f"The dVAE encoder and decoder disagree on `{name}` ({settings[name]}, {value}).")
    return settings


def official_config(state_dict: dict[str, torch.Tensor], dataset: str) -> GSSConfig:
    """The `GSSConfig` of an official GSS-FF or GSS-FT-W state dict (real or meta tensors): the paper preset of
    `dataset` with every width and depth read from the shapes."""
    if dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; choose one of {DATASETS}.")
    is_ftw = _is_ftw(state_dict)
    backbone_config, level_channels = _backbone_config(state_dict)
    num_levels = sum(1 for key in state_dict if re.fullmatch(re.escape(HEAD) + r"convs\.\d+\.conv\.weight", key))
    if num_levels != len(OFFICIAL_LEVEL_ORDER):
        raise ValueError(f"The head projects {num_levels} levels; official GSS heads project 4.")
    for index, level in enumerate(OFFICIAL_LEVEL_ORDER):
        read = _require(state_dict, f"{HEAD}convs.{index}.conv.weight").shape[1]
        if read != level_channels[level]:
            raise ValueError(
                f"`{HEAD}convs.{index}` takes {read} channels, but backbone level {level} has {level_channels[level]}: "
                f"the head does not read the levels in the official order {list(OFFICIAL_LEVEL_ORDER)}."
            )
    channels = _require(state_dict, HEAD + "convs.0.conv.weight").shape[0]
    hidden_size = _require(state_dict, HEAD + "fusion_conv.conv.weight").shape[0]
    bias_table = _require(state_dict, f"{HEAD}transformer_block.blocks.0.attn.w_msa.relative_position_bias_table")
    depth = 1 + max(int(match[1]) for key in state_dict if (match := BLOCK_KEY.match(key)))
    classifier = "cls_segmap.conv.weight" if is_ftw else "conv_seg_pixel.weight"
    num_classes = _require(state_dict, HEAD + classifier).shape[0]
    inverse_type = "learned" if is_ftw else "nearest"
    settings = paper_preset(dataset, backbone_config, prior_depth=depth, inverse_type=inverse_type)
    if len(settings["id2label"]) != num_classes:
        raise ValueError(
            f"The head predicts {num_classes} classes; the {dataset} palette has {len(settings['id2label'])}."
        )
    tokenizer_config = _tokenizer_config(state_dict)
    settings.update(
        codebook_size=_require(state_dict, HEAD + "conv_seg.weight").shape[0],
        tokenizer_config=tokenizer_config,
        mla_channels=channels,
        prior_hidden_size=hidden_size,
        prior_num_heads=bias_table.shape[1],
        prior_window_size=(math.isqrt(bias_table.shape[0]) + 1) // 2,
        prior_intermediate_size=_require(
            state_dict, f"{HEAD}transformer_block.blocks.0.ffn.layers.0.0.weight"
        ).shape[0],
        prior_classifier_channels=_require(state_dict, HEAD + "conv_before_seg.conv.weight").shape[0],
        prior_dropout=OFFICIAL_HEAD_DROPOUT,
    )
    if is_ftw:
        # GSS-FT-W: no auxiliary head in the checkpoint (the official FT-W head drops it), the learned X^-1 read
        # from the shapes of `projection` and `post_transformer_block`.
        post_table = _require(
            state_dict, f"{HEAD}post_transformer_block.blocks.0.attn.w_msa.relative_position_bias_table"
        )
        settings.update(
            use_auxiliary_head=False,
            inverse_hidden_size=_require(state_dict, HEAD + "projection.conv.weight").shape[0],
            inverse_depth=1 + max(int(match[1]) for key in state_dict if (match := POST_BLOCK_KEY.match(key))),
            inverse_num_heads=post_table.shape[1],
            inverse_window_size=(math.isqrt(post_table.shape[0]) + 1) // 2,
            inverse_intermediate_size=_require(
                state_dict, f"{HEAD}post_transformer_block.blocks.0.ffn.layers.0.0.weight"
            ).shape[0],
        )
    else:
        settings["auxiliary_channels"] = _require(state_dict, HEAD + "fusion_conv_pixel.conv.weight").shape[0]
    return GSSConfig(**settings)


def _is_ftw(state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether an official state dict is GSS-FT-W's (learned X^-1, no auxiliary branch) rather than GSS-FF's; a mix
    of both is refused."""
    has_ftw = any(key.startswith(HEAD + name) for key in state_dict for name in FTW_ONLY_KEYS)
    has_ff = any(key.startswith(HEAD + name) for key in state_dict for name in FF_ONLY_KEYS)
    if has_ftw and has_ff:
        raise ValueError(
            f"The head has both GSS-FT-W keys ({', '.join(FTW_ONLY_KEYS)}) and the GSS-FF auxiliary branch "
            f"({', '.join(FF_ONLY_KEYS)}): neither official head holds both."
        )
    return has_ftw


def _conv_module(entries: dict[str, torch.Tensor], source: str, target: str) -> dict[str, torch.Tensor]:
    """An mmcv `ConvModule` (`conv`, `bn`) as gss_hf's `ConvNormActivation` (`0`, `1`), popped from `entries`."""
    converted = {f"{target}0.weight": entries.pop(f"{source}conv.weight")}
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        converted[f"{target}1.{name}"] = entries.pop(f"{source}bn.{name}")
    return converted


def _level_branch(
    entries: dict[str, torch.Tensor], projections: str, fusion: str, target: str
) -> dict[str, torch.Tensor]:
    """The per-level projections and the fusion ConvModule of one official branch, in gss_hf's level order: head
    input i becomes `level_projections.{OFFICIAL_LEVEL_ORDER[i]}`, and the fusion conv's input channels, blocks of
    `channels` per head input, are reordered by level."""
    converted = {}
    for index, level in enumerate(OFFICIAL_LEVEL_ORDER):
        converted.update(_conv_module(entries, f"{projections}{index}.", f"{target}level_projections.{level}."))
    fused = _conv_module(entries, fusion, f"{target}fuse.")
    weight = fused[f"{target}fuse.0.weight"]  # (out, num_levels * channels, 1, 1)
    blocks = weight.chunk(len(OFFICIAL_LEVEL_ORDER), dim=1)
    fused[f"{target}fuse.0.weight"] = torch.cat(
        [blocks[OFFICIAL_LEVEL_ORDER.index(level)] for level in range(len(OFFICIAL_LEVEL_ORDER))], dim=1
    )
    converted.update(fused)
    return converted


def convert_official_state_dict(
    state_dict: dict[str, torch.Tensor], dataset: str
) -> tuple[GSSConfig, dict[str, torch.Tensor]]:
    """An official GSS-FF or GSS-FT-W state dict (`backbone.*`, `decode_head.*`, `decode_head.d_vae.*`) as the config
    and the state dict of a `GSSForSemanticSegmentation`, to load with `strict=True`. Raises `ValueError` naming any
    key it does not place."""
    config = official_config(state_dict, dataset)
    backbone = config.backbone_config
    if backbone.model_type == "swin":
        backbone_weights = convert_mmseg_swin_state_dict(state_dict, backbone)
    else:
        backbone_weights = convert_mmseg_resnet_state_dict(state_dict)
    converted = {f"backbone.model.{key}": value for key, value in backbone_weights.items()}

    entries = {key[len(HEAD) :]: value for key, value in state_dict.items() if key.startswith(HEAD)}
    for part in ("encoder", "decoder"):
        prefix = f"d_vae.{part}."
        dvae = {key[len(prefix) :]: entries.pop(key) for key in [key for key in entries if key.startswith(prefix)]}
        converted.update({f"tokenizer.{part}.{key}": value for key, value in convert_openai_state_dict(dvae).items()})
    converted.update(_level_branch(entries, "convs.", "fusion_conv.", "prior_head."))
    for block in range(config.prior_depth):
        converted.update(
            pop_mmseg_swin_block(
                entries, f"transformer_block.blocks.{block}.", f"prior_head.window_transformer.stage.blocks.{block}."
            )
        )
    renames = {"swin_ln.": "prior_head.layernorm.", "conv_seg.": "prior_head.classifier."}
    if config.inverse_type == "learned":
        renames.update({"post_swin_ln.": "inverse.layernorm.", "cls_segmap.conv.": "inverse.classifier."})
    else:
        renames["conv_seg_pixel."] = "auxiliary_head.classifier."
    for source, target in renames.items():
        for name in ("weight", "bias"):
            converted[target + name] = entries.pop(source + name)
    converted.update(_conv_module(entries, "conv_before_seg.", "prior_head.classifier_projection."))
    if config.inverse_type == "learned":
        # `projection` is a ConvModule (1x1 conv without bias, BN, ReLU) on the unit-range maskige, which is
        # `LearnedInverse.embed` on maskige / 255.
        converted.update(_conv_module(entries, "projection.", "inverse.embed."))
        for block in range(config.inverse_depth):
            converted.update(
                pop_mmseg_swin_block(
                    entries,
                    f"post_transformer_block.blocks.{block}.",
                    f"inverse.window_transformer.stage.blocks.{block}.",
                )
            )
    else:
        converted.update(_level_branch(entries, "convs_pixel.", "fusion_conv_pixel.", "auxiliary_head."))
    if entries:
        raise ValueError(f"Official head keys with no gss_hf counterpart: {sorted(HEAD + key for key in entries)}.")
    return config, converted


def load_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an official checkpoint: a `.safetensors` file, or a `torch.save`d dict holding either a
    `state_dict` entry (mmcv's checkpoints, with `meta` and `optimizer`) or the state dict itself. Loaded with
    `weights_only=True`, so no pickled code runs."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(path)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise ValueError(f"{path} holds no state dict (a dict of tensors, or a dict with a `state_dict` entry).")
    return state_dict


def convert_checkpoint(checkpoint: str | Path, dataset: str, output_dir: str | Path) -> GSSForSemanticSegmentation:
    """Converts an official checkpoint file and saves the model and a `GSSImageProcessor` (the official test
    scale and normalisation) to `output_dir`."""
    config, state_dict = convert_official_state_dict(load_official_checkpoint(checkpoint), dataset)
    model = GSSForSemanticSegmentation(config)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    model.save_pretrained(output_dir)
    processor = GSSImageProcessor(size=TEST_SIZES[dataset], do_reduce_labels=dataset == "ade20k")
    processor.save_pretrained(output_dir)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="official .pth (torch.save) or .safetensors file")
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="gives the palette and class names")
    parser.add_argument("--output_dir", required=True, help="folder for save_pretrained")
    arguments = parser.parse_args(argv)
    convert_checkpoint(arguments.checkpoint, arguments.dataset, arguments.output_dir)
    print(f"Saved the converted model and its image processor to {arguments.output_dir}")


if __name__ == "__main__":
    main()
