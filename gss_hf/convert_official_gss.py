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

Command line: `python -m gss_hf.convert_official_gss --checkpoint CKPT [--dataset ade20k] --output_dir OUT
[--dalle_dir DIR] [--push_to_hub --hub_model_id ID]`. MSeg checkpoints are out of scope (they need the MSeg API).
"""

import argparse
import hashlib
import math
import pickle
import re
import shlex
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import ModelCard, ModelCardData
from safetensors import SafetensorError
from safetensors.torch import load_file

from .cli_paths import check_output_dir
from .configuration_gss import GSSConfig
from .convert_official_swin import convert_mmseg_swin_state_dict, pop_mmseg_swin_block, swin_config_from_state_dict
from .hub_utils import GSS_TAGS, push_to_hub, save_model_card
from .image_processing_gss import GSSImageProcessor
from .maskige import preset_palette
from .modeling_dalle_dvae import DalleTokenizer, convert_openai_state_dict, dalle_settings_from_shapes
from .modeling_gss import GSSForSemanticSegmentation
from .modeling_resnet_v1c import convert_mmseg_resnet_state_dict, resnet_v1c_config_from_state_dict
from .presets import GSS_PRESETS, paper_preset

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
        keys = [key for key in state_dict if key.startswith("backbone.")]
        hrnet = " HRNet (backbone.stage*, backbone.transition*) is MSeg's, which is out of scope." if any(
            key.startswith("backbone.transition") for key in keys
        ) else ""
        raise ValueError(
            "The backbone is neither mmseg Swin (backbone.patch_embed.*) nor ResNetV1c (backbone.stem.*); its first "
            f"keys: {keys[:5]}.{hrnet}"
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


def official_config(
    state_dict: dict[str, torch.Tensor], dataset: str | None = None, tokenizer_config: dict | None = None
) -> GSSConfig:
    """The `GSSConfig` of an official GSS-FF or GSS-FT-W state dict (real or meta tensors): the paper preset of the
    dataset with every width and depth read from the shapes.

    Args:
        dataset: "ade20k" or "cityscapes" (palette, class names, test pipeline); None reads it from the number of
            classes, and a given one must agree with it.
        tokenizer_config: the dVAE's settings when the state dict has no `decode_head.d_vae.*` (see `--dalle_dir`).
    """
    _check_is_official_gss(state_dict)
    dataset = _dataset(state_dict, dataset)
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
    inverse_type = "learned" if is_ftw else "nearest"
    settings = paper_preset(dataset, backbone_config, prior_depth=depth, inverse_type=inverse_type)
    if tokenizer_config is None:
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


def _check_is_official_gss(state_dict: dict[str, torch.Tensor]) -> None:
    """Refuses, naming what it found, a state dict that is not an official GSS-FF / FT-W segmentor's: keys outside
    `backbone.*` and `decode_head.*` (an mmseg `auxiliary_head`, an EMA copy, ...), or a decode head without GSS's
    token classifier and window-transformer prior (another mmseg model)."""
    others = sorted(key for key in state_dict if not key.startswith(("backbone.", HEAD)))
    if others:
        raise ValueError(
            f"Keys outside `backbone.*` and `{HEAD}*`, which no official GSS segmentor has ({len(others)}): "
            f"{others[:8]}{' ...' if len(others) > 8 else ''}."
        )
    head_keys = sorted(key for key in state_dict if key.startswith(HEAD) and not key.startswith(DVAE))
    gss_keys = (HEAD + "conv_seg.weight", HEAD + "transformer_block.blocks.0.attn.w_msa.relative_position_bias_table")
    missing = [key for key in gss_keys if key not in state_dict]
    if missing:
        raise ValueError(
            f"Not an official GSS-FF / GSS-FT-W checkpoint: its decode head lacks {missing}; its head keys are "
            f"{head_keys[:8]}{' ...' if len(head_keys) > 8 else ''}."
        )


def _dataset(state_dict: dict[str, torch.Tensor], dataset: str | None) -> str:
    """The dataset of a checkpoint from its number of classes, checked against `dataset` when one is given."""
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"Unknown dataset {dataset!r}; choose one of {DATASETS}.")
    classifier = "cls_segmap.conv.weight" if _is_ftw(state_dict) else "conv_seg_pixel.weight"
    num_classes = _require(state_dict, HEAD + classifier).shape[0]
    if num_classes == len(preset_palette("mseg")[0]):
        raise ValueError(
            f"This is an MSeg checkpoint ({num_classes} universal classes): MSeg models run a multi-domain segmentor "
            "that maps the universal classes to each test set through the MSeg API, which gss_hf does not include."
        )
    by_count = {len(preset_palette(name)[0]): name for name in DATASETS}
    if num_classes not in by_count:
        raise ValueError(
            f"The head predicts {num_classes} classes; the official datasets have "
            f"{', '.join(f'{name} {count}' for count, name in sorted(by_count.items()))}."
        )
    if dataset is not None and by_count[num_classes] != dataset:
        raise ValueError(
            f"The head predicts {num_classes} classes (a {by_count[num_classes]} model); the {dataset} palette has "
            f"{len(preset_palette(dataset)[0])}: drop --dataset or give {by_count[num_classes]}."
        )
    return by_count[num_classes]


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
    state_dict: dict[str, torch.Tensor], dataset: str | None = None, dvae: DalleTokenizer | None = None
) -> tuple[GSSConfig, dict[str, torch.Tensor]]:
    """An official GSS-FF or GSS-FT-W state dict (`backbone.*`, `decode_head.*`, `decode_head.d_vae.*`) as the config
    and the state dict of a `GSSForSemanticSegmentation`, to load with `strict=True`. Raises `ValueError` naming any
    key it does not place.

    Args:
        dataset: see `official_config`; None reads it from the number of classes.
        dvae: OpenAI's dVAE (`DalleTokenizer.from_openai_pickles`) for a state dict without `decode_head.d_vae.*`;
            refused for one that has its own, so that it is never silently replaced.
    """
    _check_is_official_gss(state_dict)
    has_dvae = any(key.startswith(DVAE) for key in state_dict)
    if has_dvae and dvae is not None:
        raise ValueError(
            f"The checkpoint holds its own dVAE (`{DVAE}*`); a separate one (--dalle_dir) is only for checkpoints "
            "without it."
        )
    if not has_dvae and dvae is None:
        raise ValueError(
            f"The checkpoint holds no dVAE (`{DVAE}*`): give OpenAI's encoder.pkl and decoder.pkl (--dalle_dir, or "
            "`dvae=DalleTokenizer.from_openai_pickles(...)`)."
        )
    config = official_config(state_dict, dataset, tokenizer_config=None if dvae is None else dvae.tokenizer_config)
    backbone = config.backbone_config
    if backbone.model_type == "swin":
        backbone_weights = convert_mmseg_swin_state_dict(state_dict, backbone)
    else:
        backbone_weights = convert_mmseg_resnet_state_dict(state_dict)
    converted = {f"backbone.model.{key}": value for key, value in backbone_weights.items()}

    entries = {key[len(HEAD) :]: value for key, value in state_dict.items() if key.startswith(HEAD)}
    if dvae is not None:
        converted.update({f"tokenizer.{key}": value for key, value in dvae.state_dict().items()})
    for part in ("encoder", "decoder"):
        prefix = f"d_vae.{part}."
        tensors = {key[len(prefix) :]: entries.pop(key) for key in [key for key in entries if key.startswith(prefix)]}
        if tensors:
            converted.update(
                {f"tokenizer.{part}.{key}": value for key, value in convert_openai_state_dict(tensors).items()}
            )
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
    `weights_only=True`, so no pickled code runs; each way a file can be unusable is a `ValueError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except SafetensorError as error:
            raise ValueError(f"{path} is not a complete safetensors file (truncated?): {error}") from error
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} is not a weights-only checkpoint: it pickles objects other than tensors and plain data, and "
            "unpickling those could run code, so it is refused. If you trust the file, load it yourself and save its "
            f"state dict (torch.save(checkpoint['state_dict'], ...)). ({str(error).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{path} could not be read as a torch.save file (truncated or corrupt?): {error}") from error
    state_dict = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state_dict, dict) or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise ValueError(f"{path} holds no state dict (a dict of tensors, or a dict with a `state_dict` entry).")
    return state_dict


@dataclass(frozen=True)
class ReleasedModel:
    """One of the authors' released checkpoints: the gss_hf preset that builds its architecture, its official
    config in fudan-zvg/GSS, and the mIoU the authors report (single scale; not re-measured here)."""

    preset: str
    official_config: str
    dataset: str
    reported_miou: float


RELEASED_MODELS = (
    ReleasedModel("gss-ff-swin-large", "configs/gss/ade20k/gss-ff_swin-l_512x512_160k_ade20k.py", "ade20k", 46.29),
    ReleasedModel("gss-ftw-swin-large", "configs/gss/ade20k/gss-ft-w_swin-l_512x512_160k_ade20k.py", "ade20k", 48.54),
    ReleasedModel("gss-ff-resnet101", "configs/gss/cityscapes/gss-ff_r101_768x768_80k_cityscapes.py", "cityscapes",
                  77.76),
    ReleasedModel("gss-ftw-resnet101", "configs/gss/cityscapes/gss-ft-w_r101_768x768_80k_40k_cityscapes.py",
                  "cityscapes", 78.46),
    ReleasedModel("gss-ff-swin-large-cityscapes", "configs/gss/cityscapes/gss-ff_swin-l_768x768_80k_cityscapes.py",
                  "cityscapes", 78.90),
    ReleasedModel("gss-ftw-swin-large-cityscapes",
                  "configs/gss/cityscapes/gss-ft-w_swin-l_768x768_80k_40k_cityscapes.py", "cityscapes", 80.05),
)  # fmt: skip
DATASET_NAMES = {"ade20k": "ADE20K", "cityscapes": "Cityscapes"}


def released_model(config: GSSConfig, state_dict: dict[str, torch.Tensor]) -> ReleasedModel | None:
    """The released model whose architecture a converted model has: the same dataset, X^-1, and a state dict of the
    same keys and shapes as its preset builds (on the meta device, so nothing is allocated); None for any other
    (the shrunk test models, or a checkpoint trained with other widths)."""
    shapes = {key: tuple(value.shape) for key, value in state_dict.items()}
    for release in RELEASED_MODELS:
        preset = GSS_PRESETS[release.preset]
        if release.dataset != config.palette_name or preset["inverse_type"] != config.inverse_type:
            continue
        with torch.device("meta"):
            model = GSSForSemanticSegmentation(
                GSSConfig.from_preset(release.preset, use_auxiliary_head=config.use_auxiliary_head)
            )
        if {key: tuple(value.shape) for key, value in model.state_dict().items()} == shapes:
            return release
    return None


def write_converted_model_card(
    output_dir: str | Path,
    model_id: str,
    checkpoint: Path,
    config: GSSConfig,
    release: ReleasedModel | None,
    command: str,
) -> ModelCard:
    """The model card of a converted checkpoint: where it came from (file name, SHA-256, the released model it
    matches), the authors' reported mIoU labelled as reported, what the converter's parity tests verify, the test
    pipeline it was saved with, the licences (GSS weights, OpenAI's dVAE) and the citation."""
    with checkpoint.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()  # streamed: released checkpoints are ~2 GB
    variant = "GSS-FT-W (learned X^-1)" if config.inverse_type == "learned" else "GSS-FF (nearest-colour X^-1)"
    dataset = DATASET_NAMES[config.palette_name]
    backbone = "Swin" if config.backbone_config.model_type == "swin" else "ResNetV1c"
    if release is None:
        source = (
            f"Its architecture ({backbone} backbone, {config.num_labels} {dataset} classes) matches none "
            "of the released models (widths or depths differ), so no reported score applies."
        )
        results = ""
    else:
        source = (
            f"It has the architecture of the released {variant} {release.preset} model, official config "
            f"[`{release.official_config}`](https://github.com/fudan-zvg/GSS/blob/gss/{release.official_config})."
        )
        results = (
            f"## Results\n\n| dataset | mIoU, reported by the authors (not re-measured here) |\n|---|---|\n"
            f"| {dataset} val | {release.reported_miou:.2f} |"
        )
    size = TEST_SIZES[config.palette_name]
    scale = f"short side resized to {size['shortest_edge']}, long side at most {size['longest_edge']}"
    if config.sliding_window:
        pipeline = (
            f"photos {scale}, then a sliding window of {config.sliding_window_crop_size}-pixel crops every "
            f"{config.sliding_window_stride} pixels, overlapping scores averaged"
        )
    else:
        pipeline = f"the whole photo, {scale}"
    card_data = ModelCardData(
        model_name=model_id, license="unknown", library_name="transformers", pipeline_tag="image-segmentation",
        tags=[*GSS_TAGS, "dall-e-dvae", config.palette_name],
    )  # fmt: skip
    sections = [
        f"The official {variant} checkpoint `{checkpoint.name}` (SHA-256 `{digest}`) for {dataset}, converted to "
        f"gss_hf. {source}",
        results,
        f"## Inference\n\nAs the official test pipeline: {pipeline} (the saved processor and config do this, so "
        "`pipeline(\"image-segmentation\")` gives the official prediction). The posterior is OpenAI's DALL-E dVAE, "
        "frozen, as in the paper.",
        "## What the conversion guarantees\n\n"
        "The converter is tested against the official code (fudan-zvg/GSS, commit b9909a4) on test vectors it made "
        "with random weights and shrunk widths, for GSS-FF and GSS-FT-W, Swin and ResNet-101, ADE20K and Cityscapes "
        "(gss_hf's `tests/test_convert_official_gss.py`): backbone features, head features and token-logit "
        "summaries within 1e-4 relative, token ids exact, maskige within 1e-2 (0..255), segmentation equal, "
        "GSS-FT-W logits within 1e-4, and the stage-II losses and target tokens in both BatchNorm modes. Every key "
        "of the six full-size released models is converted and loads strictly into its preset. These weights "
        "themselves were not evaluated here.",
        f"## Conversion\n\n```bash\n{command}\n```",
        "## Licences\n\n"
        "The GSS weights are the authors' (fudan-zvg/GSS): their repository publishes no licence file (commit "
        "b9909a4), so check their terms before you redistribute them. The posterior in this model is OpenAI's "
        "DALL-E dVAE (github.com/openai/DALL-E), released under a Modified MIT licence that asks users to say "
        "that it was used: this model uses it. gss_hf's code is Apache-2.0.",
    ]
    return save_model_card(output_dir, card_data, model_id, sections)


def convert_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    dataset: str | None = None,
    dalle_dir: str | Path | None = None,
    model_id: str | None = None,
) -> GSSForSemanticSegmentation:
    """Converts an official checkpoint file into a complete `save_pretrained` folder: weights, config, a
    `GSSImageProcessor` with the official test scale and normalisation, the code files for `trust_remote_code` and
    a model card. Everything is written to a temporary folder beside `output_dir` and moved into place only once the
    conversion has succeeded, so a failure leaves nothing behind; an `output_dir` with files in it is refused."""
    checkpoint, output_dir = Path(checkpoint), Path(output_dir)
    check_output_dir(output_dir, "--output_dir")
    if output_dir.is_dir() and any(output_dir.iterdir()):
        raise ValueError(f"--output_dir {output_dir} already holds files; give a new or empty folder.")
    dvae = None
    if dalle_dir is not None:
        dalle_dir = Path(dalle_dir)
        dvae = DalleTokenizer.from_openai_pickles(dalle_dir / "encoder.pkl", dalle_dir / "decoder.pkl")
    config, state_dict = convert_official_state_dict(load_official_checkpoint(checkpoint), dataset, dvae)
    model = GSSForSemanticSegmentation(config)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    processor = GSSImageProcessor(
        size=TEST_SIZES[config.palette_name], size_rounding="nearest", do_reduce_labels=config.palette_name == "ade20k"
    )
    command = shlex.join(
        ["python", "-m", "gss_hf.convert_official_gss", "--checkpoint", checkpoint.name, "--dataset", config.palette_name,
         "--output_dir", output_dir.name, *(["--dalle_dir", "DALLE_DIR"] if dalle_dir is not None else [])]
    )  # fmt: skip
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        write_converted_model_card(
            staging, model_id or output_dir.name, checkpoint, config, released_model(config, state_dict), command
        )
        if output_dir.is_dir():
            output_dir.rmdir()
        staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="convert_official_gss", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="official .pth (torch.save) or .safetensors file")
    parser.add_argument(
        "--dataset", choices=DATASETS, help="gives the palette, class names and test pipeline; default: read from the "
        "number of classes (a given one must agree)"
    )  # fmt: skip
    parser.add_argument("--output_dir", required=True, help="new or empty folder for save_pretrained")
    parser.add_argument("--dalle_dir", help="folder with OpenAI's encoder.pkl and decoder.pkl, for a checkpoint "
                        "without its dVAE (decode_head.d_vae.*)")  # fmt: skip
    parser.add_argument("--push_to_hub", action="store_true", help="upload the converted folder to --hub_model_id")
    parser.add_argument("--hub_model_id", help="Hub repository id (user/name) for --push_to_hub and the model card")
    parser.add_argument("--hub_token", help="Hub token for --push_to_hub (default: the saved login)")
    arguments = parser.parse_args(argv)
    if arguments.push_to_hub and not arguments.hub_model_id:
        parser.error("--push_to_hub needs --hub_model_id")
    try:
        convert_checkpoint(
            arguments.checkpoint, arguments.output_dir, arguments.dataset, arguments.dalle_dir, arguments.hub_model_id
        )
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(f"Saved the converted model, its image processor and model card to {arguments.output_dir}")
    if arguments.push_to_hub:
        try:
            url = push_to_hub(arguments.output_dir, arguments.hub_model_id, arguments.hub_token)
        except RuntimeError as error:
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        print(f"Pushed to {url}")


if __name__ == "__main__":
    main()
