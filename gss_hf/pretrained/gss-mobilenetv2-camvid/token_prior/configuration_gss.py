"""GSS model configuration: every size and switch of the model, with its documentation and validation.

The named settings (the paper's, and a small CPU one) are in `presets.py`; `GSSConfig.from_preset` builds them.
This file is also shipped as remote code with saved models: it imports only sibling modules and installed libraries.
"""

import copy
import difflib
import math
from dataclasses import fields
from typing import Literal, get_args

from huggingface_hub.dataclasses import as_validated_field, strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES

from .maskige import (
    IGNORE_INDEX,
    MAX_GENERATED_CLASSES,
    check_color_rows,
    check_palette,
    generate_palette,
    preset_palette,
)


InverseType = Literal["nearest", "least_squares", "learned"]
PriorHeadType = Literal["mla", "plain"]
MaskigeRoute = Literal["direct", "official_2x"]
INVERSE_TYPES = get_args(InverseType)
PRIOR_HEAD_TYPES = get_args(PriorHeadType)
# The tokenizers whose `tokenizer_config` this config knows how to fill in and check: the diffusers `VQModel`
# trained here, and OpenAI's DALL-E dVAE (the paper's frozen posterior).
VQMODEL_TOKENIZER = "vqmodel"
DALLE_TOKENIZER = "dalle"

# Backbones without a transformers `Backbone` class give their multi-level features through `hidden_states`;
# these are the hidden states at strides 4, 8, 16 and 32.
DEFAULT_HIDDEN_STATE_LEVELS = {"mobilenet_v2": [1, 4, 11, 15]}


def default_tokenizer_config(
    codebook_size: int,
    token_stride: int,
    base_channels: int = 64,
    latent_channels: int = 64,
    norm_num_groups: int = 32,
) -> dict:
    """A diffusers `VQModel` config that maps a maskige straight to a 1/`token_stride` token grid.

    One down-sampling block per factor 2, channels doubling twice from `base_channels`. No attention in the mid
    block: at stride 4 a 768x768 crop has 36k tokens, too many for full attention, and a maskige's colours need
    none to be reconstructed.
    """
    num_levels = int(math.log2(token_stride)) + 1
    block_out_channels = [base_channels * 2 ** min(level, 2) for level in range(num_levels)]
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * num_levels,
        "up_block_types": ["UpDecoderBlock2D"] * num_levels,
        "block_out_channels": block_out_channels,
        "layers_per_block": 1,
        "latent_channels": latent_channels,
        "vq_embed_dim": 32,
        "norm_num_groups": norm_num_groups,
        "num_vq_embeddings": codebook_size,
        "mid_block_add_attention": False,
    }


def default_dalle_tokenizer_config(**overrides) -> dict:
    """The hyperparameters of OpenAI's released DALL-E dVAE (the `dall-e` 0.1 package's), any of them overridden.

    `group_count` groups of `n_blk_per_group` residual blocks, each group but the last halving (encoder) or doubling
    (decoder) the resolution: a 2 ** (group_count - 1) = 8x grid of `vocab_size` codes. The decoder starts from
    `n_init` channels and outputs 2 x `output_channels` maps, of which the first `output_channels` are the colours.
    `decode_tile_size` (token rows and columns per tile, 0 for none) bounds the decoder's memory; tiles overlap by
    its receptive field, so the result equals whole-image decoding.
    """
    settings = {
        "group_count": 4,
        "n_hid": 256,
        "n_blk_per_group": 2,
        "vocab_size": 8192,
        "n_init": 128,
        "input_channels": 3,
        "output_channels": 3,
        "decode_tile_size": 64,
    }
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise ValueError(f"Unknown DALL-E dVAE settings {unknown}; the settings are {sorted(settings)}.")
    settings.update(overrides)
    return settings


# Single-field rules. `@strict` runs a field's type check, then these, whenever the field is set (at creation and
# on assignment), and reports a failure as a `StrictDataclassFieldValidationError` naming the field; the type check
# has already refused values of the wrong type (a bool for an int, a string for a number).
@as_validated_field
def positive_int(value: int) -> None:
    if value <= 0:
        raise ValueError(f"must be a positive integer, got {value!r}.")


@as_validated_field
def power_of_two(value: int) -> None:
    if value <= 0 or value & (value - 1):
        raise ValueError(f"must be a power of two, got {value!r}.")


@as_validated_field
def dropout_probability(value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"must be in [0, 1), got {value!r}.")


@as_validated_field
def non_negative_finite(value: float) -> None:
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"must be a finite number >= 0, got {value!r}.")


@as_validated_field
def class_weights_or_none(value) -> None:
    """One finite weight >= 0 per class, not all 0 (the length is checked against the labels by
    `validate_token_loss_class_weights`)."""
    if value is None:
        return
    if not value:
        raise ValueError("must be None or a non-empty list of one weight per class, got [].")
    bad = [weight for weight in value if not (weight >= 0.0 and math.isfinite(weight))]
    if bad:
        raise ValueError(f"must hold finite weights >= 0, got {bad[0]!r} in {list(value)!r}.")
    if not any(weight > 0 for weight in value):
        raise ValueError(f"must hold at least one weight > 0, got {list(value)!r}.")


@as_validated_field
def non_empty_name(value: str) -> None:
    if not value.strip():
        raise ValueError(f"must be a non-empty name, got {value!r}.")


@as_validated_field
def color_or_none(value) -> None:
    if value is not None:
        check_color_rows([value], "ignore_color")


@as_validated_field
def palette_name_or_rows(value) -> None:
    """A palette given by name must name a known one; rows are checked against the labels by `validate_palette`."""
    if isinstance(value, str) and value != "generated":
        preset_palette(value)  # raises, listing the known names


@strict
class GSSConfig(PreTrainedConfig):
    r"""
    Configuration of a Generative Semantic Segmentation model: image backbone and prior head (the conditioning
    network), the maskige palette, the VQ maskige tokenizer (the latent posterior) and the inverse colour map X^-1.
    Defaults are the paper's head and tokenizer sizes around a MobileNetV2 backbone; `GSSConfig.from_preset` gives
    complete settings (the paper's, and a small CPU one for CamVid; see `presets.py`).

    Validation is `huggingface_hub`'s `@strict`, as in every transformers 5 config. Each field's type (the choices
    are `Literal`s) and its own rules (a positive integer, a dropout in [0, 1), ...) are checked whenever it is set,
    at creation and on assignment (`config.inverse_type = "lerned"` raises at once), with a
    `StrictDataclassFieldValidationError` naming the field. The rules between fields (heads dividing widths, the
    palette against the labels, the tokenizer against `codebook_size`, ...) are the `validate_*` methods: they run
    at creation, on `config.validate()` (which `save_pretrained` and the model's `__init__` call), and raise a
    `StrictDataclassClassValidationError` whose message names the fields. They are not run on assignment, so that
    related fields can be edited one at a time: after editing an existing config, call `config.validate()`.

    Args:
        backbone_config (`dict` or `PreTrainedConfig`, *optional*):
            Any transformers vision backbone config (ResNet, ConvNeXt, Swin, DINOv2, ... via `out_features`), or a
            MobileNetV2 config whose features are read from its hidden states. Defaults to MobileNetV2.
        backbone_hidden_state_indices (`list[int]`, *optional*):
            For backbones without a transformers `Backbone` class: the indices of the `hidden_states` used as
            multi-level features. Filled in for MobileNetV2 (strides 4, 8, 16, 32); must be unset otherwise.
        palette (`str` or `list[list[int]]`, *optional*, defaults to `"generated"`):
            The class colours: a preset name (`"cityscapes"`, `"ade20k"`, `"mseg"`), explicit rows (one [R, G, B]
            per class, in `id2label` order) or `"generated"` (the deterministic maximal-distance palette). Stored
            resolved, as rows, so a saved model never depends on how a name was resolved.
        palette_name (`str`, *optional*):
            Where the rows came from (the preset name or `"generated"`); set automatically.
        ignore_color (`list[int]`, *optional*):
            The colour painted on unlabelled pixels. Defaults to the preset's ignore colour, else black.
        ignore_index (`int`, *optional*, defaults to 255):
            Label value of unlabelled pixels; must not be a class id.
        codebook_size (`int`, *optional*, defaults to 8192):
            Number of tokenizer codes V.
        token_stride (`int`, *optional*, defaults to 4):
            Down-sampling factor from image to token grid (the paper's tokens are at 1/4).
        maskige_route (`Literal["direct", "official_2x"]`, *optional*, defaults to `"direct"`):
            How label maps reach the token grid. `"direct"`, gss_hf's own: the tokenizer down-samples
            `token_stride` itself, and only the unlabelled pixels of partly labelled patches are filled (see
            `fill_unlabelled_pixels`). `"official_2x"`, the official code's with DALL-E's 8x dVAE: label maps are
            up-sampled 2x (one-hot with the ignore label as an extra class, bilinear, argmax), every unlabelled
            pixel takes the auxiliary prediction there, and a token is ignored when its 8x8 patch of the up-sampled
            map is wholly unlabelled; at inference the decoded maskige is at 2x the photo, X^-1 reads it there and
            the class scores are resized back. The tokenizer down-samples `token_stride` x 2 on that route.
        tokenizer_type (`str`, *optional*, defaults to `"vqmodel"`):
            Which tokenizer (latent posterior) the model builds, through `gss_hf`'s tokenizer registry: `"vqmodel"`
            is the diffusers `VQModel` trained here, `"dalle"` OpenAI's DALL-E dVAE. Any non-empty name is
            accepted here: the registry, not the config, knows which names exist.
        tokenizer_config (`dict`, *optional*):
            Keyword arguments of the tokenizer. For `"vqmodel"`: those of the diffusers `VQModel`, checked against
            `codebook_size` and `token_stride`, and defaulting to `default_tokenizer_config`. For `"dalle"`: the
            dVAE's hyperparameters, defaulting to `default_dalle_tokenizer_config()` (the released weights').
        prior_head_type (`Literal["mla", "plain"]`, *optional*, defaults to `"mla"`):
            `"mla"`: the prior head aggregates every backbone level (the paper's multi-level aggregation).
            `"plain"`: it reads the deepest level only, the rest of the head unchanged (the paper's "+ MLA" ablation).
        mla_channels (`int`, *optional*, defaults to 384):
            Channels of each level's 1x1 projection in the multi-level aggregation head.
        prior_fuse_norm_activation (`bool`, *optional*, defaults to `False`):
            Whether the prior head's fusion of the concatenated levels is a 1x1 conv followed by BatchNorm and ReLU
            (the official code's `fusion_conv`, a `ConvModule`; `True` in the paper presets and in converted official
            checkpoints) rather than gss_hf's plain 1x1 conv with bias (the CamVid preset's choice, which keeps the
            fused features signed before the transformer blocks).
        prior_hidden_size (`int`, *optional*, defaults to 512):
            Width of the fused features and of the shifted-window transformer blocks of the prior head.
        prior_depth (`int`, *optional*, defaults to 2):
            Number of shifted-window transformer blocks (2 with Swin-L, 6 with ResNet-101 in the paper).
        prior_num_heads (`int`, *optional*, defaults to 16):
            Attention heads of those blocks.
        prior_window_size (`int`, *optional*, defaults to 7):
            Attention window of those blocks.
        prior_intermediate_size (`int`, *optional*, defaults to 1024):
            MLP width of those blocks.
        prior_classifier_channels (`int`, *optional*, defaults to 2048):
            Width of the 1x1 conv before the codebook classifier.
        prior_dropout (`float`, *optional*, defaults to 0.1):
            Dropout2d before the codebook classifier.
        auxiliary_channels (`int`, *optional*, defaults to 384):
            Width of the auxiliary K-class pixel head.
        use_auxiliary_head (`bool`, *optional*, defaults to `True`):
            Whether the model has the auxiliary head. `False` builds none: the model then predicts (and stage III
            can train its learned X^-1 on `generate_maskige`), but it cannot compute the stage-II loss, which needs
            the auxiliary head, so labels raise. Official GSS-FT-W checkpoints hold no auxiliary head (the official
            FT-W head deletes it), so `convert_official_gss` sets `False` for them rather than keep an untrained
            one; everything else, the paper presets included, keeps `True`.
        inverse_type (`Literal["nearest", "least_squares", "learned"]`, *optional*, defaults to `"nearest"`):
            X^-1: `"nearest"` colour (GSS-FF), `"least_squares"` or `"learned"` (GSS-FT-W).
        nearest_inverse_one_hot (`bool`, *optional*, defaults to `False`):
            With `inverse_type="nearest"`: X^-1 returns the one-hot of the nearest colour (exact squared distances,
            ties to the lowest class) instead of minus the squared distances. The official GSS-FF test output is that
            one-hot map, so where it is resized (the "official_2x" route resizes from 2x the photo) its classes are
            decided by the resized votes; resizing the distances instead changes pixels along class borders. `True` in
            the paper presets; ignored by the other inverse types.
        inverse_hidden_size (`int`, *optional*, defaults to 128):
            Width of the learned X^-1.
        inverse_depth (`int`, *optional*, defaults to 1):
            Shifted-window blocks of the learned X^-1 (1 for Cityscapes, 2 for ADE20K and MSeg in the paper).
        inverse_num_heads (`int`, *optional*, defaults to 4):
            Attention heads of the learned X^-1.
        inverse_window_size (`int`, *optional*, defaults to 7):
            Attention window of the learned X^-1.
        inverse_intermediate_size (`int`, *optional*, defaults to 256):
            MLP width of the learned X^-1.
        token_loss_weight (`float`, *optional*, defaults to 0.8):
            Weight of the token cross-entropy.
        auxiliary_loss_weight (`float`, *optional*, defaults to 0.2):
            Weight of the auxiliary pixel cross-entropy.
        token_loss_class_weights (`list[float]`, *optional*):
            Class-aware token weighting: one finite weight >= 0 per class (`id2label` order). A token weighs the
            largest weight among the classes of the labelled pixels of its patch (`tokenizer_stride` pixels square),
            a patch without labelled pixels 1, and the token loss is the weighted mean over the non-ignored tokens, so
            that the rare codes of rare classes train. `None` (the default) is the plain mean. `train_prior.py
            --token_loss_class_weighting` computes them from the training split.
        fill_unlabelled_with_auxiliary (`bool`, *optional*, defaults to `True`):
            The paper's "unlabelled area auxiliary": before a label map is tokenised into the prior's targets, its
            unlabelled pixels take the auxiliary head's argmax and only wholly unlabelled tokens are ignored. `False`
            tokenises the map as painted (ignore colour included) and trains on every token, so the prior also learns
            to predict "unlabelled"; it exists for the ablation.
        sliding_window (`bool`, *optional*, defaults to `False`):
            Whether inference runs on overlapping crops (for images much larger than the training crops) instead of
            on the whole image; `forward(sliding_window=...)` overrides it per call.
        sliding_window_crop_size (`int`, *optional*, defaults to 768):
            Side of the square crops of sliding-window inference (clipped to the image).
        sliding_window_stride (`int`, *optional*, defaults to 512):
            Step between crops; at most the crop size, so that every pixel is covered.
        sliding_window_batch_size (`int`, *optional*, defaults to 4):
            Crops run through the model at once.
        token_chunk_size (`int`, *optional*, defaults to 1024):
            Tokens whose V-way logits are formed at once by the token loss and the token argmax.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the truncated normal initialiser of the heads.

    Example:

    ```python
    >>> from gss_hf import GSSConfig

    >>> config = GSSConfig.from_preset("gss-ff-swin-large")
    >>> config.num_labels, config.codebook_size, len(config.palette)
    (150, 8192, 150)
    ```
    """

    model_type = "gss"
    sub_configs_defaults = {
        "backbone_config": SubConfigSpec(config_class=AutoConfig, model_type="mobilenet_v2"),
    }

    backbone_config: dict | PreTrainedConfig | None = None
    backbone_hidden_state_indices: list[int] | None = None
    palette: str | list | tuple = palette_name_or_rows(default="generated")
    palette_name: str | None = None
    ignore_color: list | tuple | None = color_or_none(default=None)
    ignore_index: int = IGNORE_INDEX
    codebook_size: int = positive_int(default=8192)
    token_stride: int = power_of_two(default=4)
    maskige_route: MaskigeRoute = "direct"
    tokenizer_type: str = non_empty_name(default=VQMODEL_TOKENIZER)
    tokenizer_config: dict | None = None
    prior_head_type: PriorHeadType = "mla"
    mla_channels: int = positive_int(default=384)
    prior_fuse_norm_activation: bool = False
    prior_hidden_size: int = positive_int(default=512)
    prior_depth: int = positive_int(default=2)
    prior_num_heads: int = positive_int(default=16)
    prior_window_size: int = positive_int(default=7)
    prior_intermediate_size: int = positive_int(default=1024)
    prior_classifier_channels: int = positive_int(default=2048)
    prior_dropout: float | int = dropout_probability(default=0.1)
    auxiliary_channels: int = positive_int(default=384)
    use_auxiliary_head: bool = True
    inverse_type: InverseType = "nearest"
    nearest_inverse_one_hot: bool = False
    inverse_hidden_size: int = positive_int(default=128)
    inverse_depth: int = positive_int(default=1)
    inverse_num_heads: int = positive_int(default=4)
    inverse_window_size: int = positive_int(default=7)
    inverse_intermediate_size: int = positive_int(default=256)
    token_loss_weight: float | int = non_negative_finite(default=0.8)
    auxiliary_loss_weight: float | int = non_negative_finite(default=0.2)
    token_loss_class_weights: list[float | int] | None = class_weights_or_none(default=None)
    fill_unlabelled_with_auxiliary: bool = True
    sliding_window: bool = False
    sliding_window_crop_size: int = positive_int(default=768)
    sliding_window_stride: int = positive_int(default=512)
    sliding_window_batch_size: int = positive_int(default=4)
    token_chunk_size: int = positive_int(default=1024)
    initializer_range: float | int = non_negative_finite(default=0.02)

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._resolve_palette()
        if self.backbone_hidden_state_indices is None:
            self.backbone_hidden_state_indices = DEFAULT_HIDDEN_STATE_LEVELS.get(self.backbone_config.model_type)
        if self.tokenizer_config is None and self.tokenizer_type == VQMODEL_TOKENIZER:
            self.tokenizer_config = default_tokenizer_config(self.codebook_size, self.tokenizer_stride)
        elif self.tokenizer_type == DALLE_TOKENIZER and isinstance(self.tokenizer_config, (dict, type(None))):
            # Settings not given are the released weights' (an unknown one is refused here, by name), so that a
            # `codebook_size` other than their 8192 codes is refused unless `vocab_size` says so too.
            self.tokenizer_config = default_dalle_tokenizer_config(**(self.tokenizer_config or {}))
        # `@strict` runs `validate()` (every `validate_*` method) once this returns.

    def _resolve_palette(self) -> None:
        """Turns a preset name or "generated" into explicit rows, and fills in the ignore colour."""
        if isinstance(self.palette, str):
            if self.palette == "generated":
                self.ignore_color = list(self.ignore_color) if self.ignore_color is not None else [0, 0, 0]
                if not 1 <= self.num_labels <= MAX_GENERATED_CLASSES:
                    raise ValueError(
                        f"`palette='generated'` supports 1..{MAX_GENERATED_CLASSES} labels, `id2label` has "
                        f"{self.num_labels}: give explicit `palette` rows."
                    )
                self.palette = generate_palette(self.num_labels, self.ignore_color)
                self.palette_name = "generated"
            else:
                class_colors, preset_ignore = preset_palette(self.palette)
                self.palette_name = self.palette
                self.palette = class_colors
                self.ignore_color = list(self.ignore_color) if self.ignore_color is not None else preset_ignore
        else:
            self.palette = [list(row) if isinstance(row, (list, tuple)) else row for row in self.palette]
            self.ignore_color = list(self.ignore_color) if self.ignore_color is not None else [0, 0, 0]

    # Rules between fields: `@strict` runs every `validate_*` method at creation, and `validate()` runs them again
    # (`save_pretrained` does). They are not run on assignment, so that related fields can be edited one at a time.

    def validate_palette(self) -> None:
        check_palette(self.palette, self.ignore_color, self.num_labels)

    def validate_ignore_index(self) -> None:
        if 0 <= self.ignore_index < self.num_labels:
            raise ValueError(
                f"`ignore_index` {self.ignore_index} is also a class id (there are {self.num_labels} labels): "
                "choose a value outside 0..num_labels-1."
            )

    def validate_window_blocks(self) -> None:
        """The shifted-window blocks of the prior head and of the learned X^-1: heads and MLP ratio."""
        for dim, heads in (("prior_hidden_size", "prior_num_heads"), ("inverse_hidden_size", "inverse_num_heads")):
            if getattr(self, dim) % getattr(self, heads):
                raise ValueError(
                    f"`{heads}` ({getattr(self, heads)}) must divide `{dim}` ({getattr(self, dim)})."
                )
        for dim, inter in (
            ("prior_hidden_size", "prior_intermediate_size"), ("inverse_hidden_size", "inverse_intermediate_size")
        ):  # fmt: skip
            if int(getattr(self, inter) / getattr(self, dim) * getattr(self, dim)) != getattr(self, inter):
                raise ValueError(f"`{inter}` must be a simple multiple of `{dim}` (Swin blocks take an MLP ratio).")

    def validate_sliding_window(self) -> None:
        if self.sliding_window_stride > self.sliding_window_crop_size:
            raise ValueError(
                f"`sliding_window_stride` ({self.sliding_window_stride}) must not exceed `sliding_window_crop_size` "
                f"({self.sliding_window_crop_size}): pixels between crops would get no prediction."
            )

    def validate_token_loss_class_weights(self) -> None:
        weights = self.token_loss_class_weights
        if weights is not None and len(weights) != self.num_labels:
            raise ValueError(
                f"`token_loss_class_weights` has {len(weights)} weights, but there are {self.num_labels} labels: "
                "give one weight per class, in `id2label` order."
            )

    def validate_inverse(self) -> None:
        if self.inverse_type == "least_squares" and self.num_labels < 3:
            raise ValueError("`inverse_type='least_squares'` needs at least 3 classes (a rank-3 palette).")

    @property
    def tokenizer_stride(self) -> int:
        """The tokenizer's own down-sampling factor: `token_stride`, twice that on the "official_2x" route."""
        return self.token_stride * (2 if self.maskige_route == "official_2x" else 1)

    def validate_tokenizer(self) -> None:
        """The `VQModel` or dVAE settings against `codebook_size`, `token_stride` and `maskige_route`; other
        tokenizer types' settings are their registry's business."""
        if self.tokenizer_type not in (VQMODEL_TOKENIZER, DALLE_TOKENIZER):
            return
        settings = self.tokenizer_config
        if not isinstance(settings, dict):
            raise ValueError(
                f"`tokenizer_config` must be a dict of {self.tokenizer_type!r} tokenizer arguments, got "
                f"{type(settings).__name__}."
            )
        if self.tokenizer_type == DALLE_TOKENIZER:
            codes_key, channel_keys, levels = "vocab_size", ("input_channels", "output_channels"), "group_count"
            factor = 2 ** (settings.get("group_count", 4) - 1)
        else:
            codes_key, channel_keys, levels = "num_vq_embeddings", ("in_channels", "out_channels"), "block_out_channels"
            factor = 2 ** (len(settings.get("block_out_channels", (64,))) - 1)
        if settings.get(codes_key) != self.codebook_size:
            raise ValueError(
                f"`tokenizer_config[{codes_key!r}]` ({settings.get(codes_key)}) must equal `codebook_size` "
                f"({self.codebook_size})."
            )
        if any(settings.get(key, 3) != 3 for key in channel_keys):
            raise ValueError("`tokenizer_config` must map 3-channel maskiges to 3-channel maskiges.")
        if factor != self.tokenizer_stride:
            raise ValueError(
                f"`tokenizer_config[{levels!r}]` gives a down-sampling factor of {factor}, but `token_stride` "
                f"({self.token_stride}) with `maskige_route` {self.maskige_route!r} needs {self.tokenizer_stride}."
            )

    def validate_backbone(self) -> None:
        model_type = self.backbone_config.model_type
        indices = self.backbone_hidden_state_indices
        if model_type in MODEL_FOR_BACKBONE_MAPPING_NAMES:
            if indices is not None:
                raise ValueError(
                    f"`backbone_hidden_state_indices` is only for backbones without a Backbone class; "
                    f"{model_type!r} chooses its levels with `backbone_config.out_features`."
                )
        elif not indices or any(i < 0 for i in indices):
            raise ValueError(
                f"`backbone_hidden_state_indices` must list the hidden states used as features of the "
                f"{model_type!r} backbone, got {indices!r}."
            )

    @classmethod
    def check_field_names(cls, names, where: str) -> None:
        """Raises `ValueError` for the first of `names` that is no field, naming the nearest one: a misspelt
        override would otherwise be kept as an extra attribute that nothing reads."""
        known = {f.name for f in fields(cls) if f.init} | {"num_labels"}
        for key in names:
            if key not in known:
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; the fields are {sorted(known)}."
                raise ValueError(f"{where} got an unknown field {key!r}{hint}")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GSSConfig":
        """Builds a named preset (see `presets.GSS_PRESETS`), with any field overridden by keyword."""
        from .presets import GSS_PRESETS

        if name not in GSS_PRESETS:
            raise ValueError(f"Unknown GSS preset {name!r}; choose one of {sorted(GSS_PRESETS)}.")
        cls.check_field_names(overrides, f"`GSSConfig.from_preset({name!r}, ...)`")
        settings = copy.deepcopy(GSS_PRESETS[name])
        settings.update(overrides)
        return cls(**settings)


AutoConfig.register(GSSConfig.model_type, GSSConfig, exist_ok=True)
GSSConfig.register_for_auto_class()

__all__ = ["GSSConfig", "default_dalle_tokenizer_config", "default_tokenizer_config"]
