"""GSS model configuration: every size and switch of the model, validated, and the paper's presets."""

import copy
import math

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec
from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES

from .maskige import (
    IGNORE_INDEX,
    MAX_GENERATED_CLASSES,
    check_palette,
    generate_palette,
    preset_class_names,
    preset_palette,
)


INVERSE_TYPES = ("nearest", "least_squares", "learned")
PRIOR_HEAD_TYPES = ("mla", "plain")

# Backbones without a transformers `Backbone` class give their multi-level features through `hidden_states`;
# these are the hidden states at strides 4, 8, 16 and 32.
DEFAULT_HIDDEN_STATE_LEVELS = {"mobilenet_v2": [1, 4, 11, 15]}

SWIN_LARGE = {
    "model_type": "swin",
    "image_size": 384,
    "embed_dim": 192,
    "depths": [2, 2, 18, 2],
    "num_heads": [6, 12, 24, 48],
    "window_size": 12,
    "drop_path_rate": 0.3,
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}
# The official ResNet-101 is dilated (output stride 8); transformers' ResNet is not, which the head absorbs since
# it resizes every level to stride 4 anyway.
RESNET_101 = {
    "model_type": "resnet",
    "layer_type": "bottleneck",
    "embedding_size": 64,
    "hidden_sizes": [256, 512, 1024, 2048],
    "depths": [3, 4, 23, 3],
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}
# transformers' MobileNetV2 computing exactly what torchvision's `mobilenet_v2()` computes, whose ImageNet weights
# exist offline (see pretrained_mobilenet_v2.py): symmetric padding, BatchNorm epsilon 1e-5, torchvision's dropout.
TORCHVISION_MOBILENET_V2_CONFIG = {
    "model_type": "mobilenet_v2",
    "num_channels": 3,
    "depth_multiplier": 1.0,
    "depth_divisible_by": 8,
    "min_depth": 8,
    "expand_ratio": 6.0,
    "output_stride": 32,
    "first_layer_is_expansion": True,
    "finegrained_output": True,
    "hidden_act": "relu6",
    "tf_padding": False,
    "layer_norm_eps": 1e-5,
    "classifier_dropout_prob": 0.2,
}
CAMVID_CLASSES = [
    "sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian", "bicyclist"
]  # fmt: skip


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


@strict
class GSSConfig(PreTrainedConfig):
    r"""
    Configuration of a Generative Semantic Segmentation model: image backbone and prior head (the conditioning
    network), the maskige palette, the VQ maskige tokenizer (the latent posterior) and the inverse colour map X^-1.
    Defaults are the paper's head and tokenizer sizes around a MobileNetV2 backbone; `GSSConfig.from_preset` gives
    complete settings (the paper's, and a small CPU one for CamVid).

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
        tokenizer_config (`dict`, *optional*):
            Keyword arguments of the diffusers `VQModel` tokenizer. Defaults to `default_tokenizer_config`.
        prior_head_type (`str`, *optional*, defaults to `"mla"`):
            `"mla"`: the prior head aggregates every backbone level (the paper's multi-level aggregation).
            `"plain"`: it reads the deepest level only, the rest of the head unchanged (the paper's "+ MLA" ablation).
        mla_channels (`int`, *optional*, defaults to 384):
            Channels of each level's 1x1 projection in the multi-level aggregation head.
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
        inverse_type (`str`, *optional*, defaults to `"nearest"`):
            X^-1: `"nearest"` colour (GSS-FF), `"least_squares"` or `"learned"` (GSS-FT-W).
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
    palette: str | list | tuple = "generated"
    palette_name: str | None = None
    ignore_color: list | tuple | None = None
    ignore_index: int = IGNORE_INDEX
    codebook_size: int = 8192
    token_stride: int = 4
    tokenizer_type: str = "vqmodel"
    tokenizer_config: dict | None = None
    prior_head_type: str = "mla"
    mla_channels: int = 384
    prior_hidden_size: int = 512
    prior_depth: int = 2
    prior_num_heads: int = 16
    prior_window_size: int = 7
    prior_intermediate_size: int = 1024
    prior_classifier_channels: int = 2048
    prior_dropout: float = 0.1
    auxiliary_channels: int = 384
    inverse_type: str = "nearest"
    inverse_hidden_size: int = 128
    inverse_depth: int = 1
    inverse_num_heads: int = 4
    inverse_window_size: int = 7
    inverse_intermediate_size: int = 256
    token_loss_weight: float = 0.8
    auxiliary_loss_weight: float = 0.2
    fill_unlabelled_with_auxiliary: bool = True
    sliding_window: bool = False
    sliding_window_crop_size: int = 768
    sliding_window_stride: int = 512
    sliding_window_batch_size: int = 4
    token_chunk_size: int = 1024
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._resolve_palette()
        if self.backbone_hidden_state_indices is None:
            self.backbone_hidden_state_indices = DEFAULT_HIDDEN_STATE_LEVELS.get(self.backbone_config.model_type)
        if self.tokenizer_config is None and _is_positive_int(self.codebook_size) and _is_power_of_two(
            self.token_stride
        ):
            self.tokenizer_config = default_tokenizer_config(self.codebook_size, self.token_stride)
        self.check_gss_settings()

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

    def check_gss_settings(self) -> None:
        """Raises `ValueError` naming the first invalid field. Called on creation and by the models."""
        num_labels = self.num_labels
        check_palette(self.palette, self.ignore_color, num_labels)
        if 0 <= self.ignore_index < num_labels:
            raise ValueError(
                f"`ignore_index` {self.ignore_index} is also a class id (there are {num_labels} labels): "
                "choose a value outside 0..num_labels-1."
            )
        for name in (
            "codebook_size", "token_stride", "mla_channels", "prior_hidden_size", "prior_depth", "prior_num_heads",
            "prior_window_size", "prior_intermediate_size", "prior_classifier_channels", "auxiliary_channels",
            "inverse_hidden_size", "inverse_depth", "inverse_num_heads", "inverse_window_size",
            "inverse_intermediate_size", "sliding_window_crop_size", "sliding_window_stride",
            "sliding_window_batch_size", "token_chunk_size",
        ):  # fmt: skip
            if not _is_positive_int(getattr(self, name)):
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)!r}.")
        for dim, heads in (("prior_hidden_size", "prior_num_heads"), ("inverse_hidden_size", "inverse_num_heads")):
            if getattr(self, dim) % getattr(self, heads):
                raise ValueError(
                    f"`{heads}` ({getattr(self, heads)}) must divide `{dim}` ({getattr(self, dim)})."
                )
        if self.sliding_window_stride > self.sliding_window_crop_size:
            raise ValueError(
                f"`sliding_window_stride` ({self.sliding_window_stride}) must not exceed `sliding_window_crop_size` "
                f"({self.sliding_window_crop_size}): pixels between crops would get no prediction."
            )
        for dim, inter in (
            ("prior_hidden_size", "prior_intermediate_size"), ("inverse_hidden_size", "inverse_intermediate_size")
        ):  # fmt: skip
            if int(getattr(self, inter) / getattr(self, dim) * getattr(self, dim)) != getattr(self, inter):
                raise ValueError(f"`{inter}` must be a simple multiple of `{dim}` (Swin blocks take an MLP ratio).")
        if not 0.0 <= self.prior_dropout < 1.0:
            raise ValueError(f"`prior_dropout` must be in [0, 1), got {self.prior_dropout}.")
        for name in ("token_loss_weight", "auxiliary_loss_weight"):
            if not (getattr(self, name) >= 0.0 and math.isfinite(getattr(self, name))):
                raise ValueError(f"`{name}` must be a finite weight >= 0, got {getattr(self, name)}.")
        if self.prior_head_type not in PRIOR_HEAD_TYPES:
            raise ValueError(f"`prior_head_type` must be one of {PRIOR_HEAD_TYPES}, got {self.prior_head_type!r}.")
        if self.inverse_type not in INVERSE_TYPES:
            raise ValueError(f"`inverse_type` must be one of {INVERSE_TYPES}, got {self.inverse_type!r}.")
        if self.inverse_type == "least_squares" and num_labels < 3:
            raise ValueError("`inverse_type='least_squares'` needs at least 3 classes (a rank-3 palette).")
        self._check_tokenizer_settings()
        self._check_backbone_settings()

    def _check_tokenizer_settings(self) -> None:
        if not _is_power_of_two(self.token_stride):
            raise ValueError(f"`token_stride` must be a power of two, got {self.token_stride}.")
        vq = self.tokenizer_config
        if not isinstance(vq, dict):
            raise ValueError(f"`tokenizer_config` must be a dict of `VQModel` arguments, got {type(vq).__name__}.")
        if vq.get("num_vq_embeddings") != self.codebook_size:
            raise ValueError(
                f"`tokenizer_config['num_vq_embeddings']` ({vq.get('num_vq_embeddings')}) must equal "
                f"`codebook_size` ({self.codebook_size})."
            )
        if vq.get("in_channels", 3) != 3 or vq.get("out_channels", 3) != 3:
            raise ValueError("`tokenizer_config` must map 3-channel maskiges to 3-channel maskiges.")
        blocks = vq.get("block_out_channels", (64,))
        if 2 ** (len(blocks) - 1) != self.token_stride:
            raise ValueError(
                f"`tokenizer_config['block_out_channels']` has {len(blocks)} levels, a down-sampling factor of "
                f"{2 ** (len(blocks) - 1)}, but `token_stride` is {self.token_stride}."
            )

    def _check_backbone_settings(self) -> None:
        model_type = self.backbone_config.model_type
        indices = self.backbone_hidden_state_indices
        if model_type in MODEL_FOR_BACKBONE_MAPPING_NAMES:
            if indices is not None:
                raise ValueError(
                    f"`backbone_hidden_state_indices` is only for backbones without a Backbone class; "
                    f"{model_type!r} chooses its levels with `backbone_config.out_features`."
                )
        elif not indices or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in indices):
            raise ValueError(
                f"`backbone_hidden_state_indices` must list the hidden states used as features of the "
                f"{model_type!r} backbone, got {indices!r}."
            )

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "GSSConfig":
        """Builds a named preset (see `GSS_PRESETS`), with any field overridden by keyword."""
        if name not in GSS_PRESETS:
            raise ValueError(f"Unknown GSS preset {name!r}; choose one of {sorted(GSS_PRESETS)}.")
        settings = copy.deepcopy(GSS_PRESETS[name])
        settings.update(overrides)
        return cls(**settings)


def _is_positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _is_power_of_two(value) -> bool:
    return _is_positive_int(value) and value & (value - 1) == 0


def _labels(names: list[str]) -> dict:
    """Both label maps, which transformers 5 needs to agree on the number of labels."""
    return {"id2label": dict(enumerate(names)), "label2id": {name: i for i, name in enumerate(names)}}


def _paper_preset(dataset: str, backbone: dict, prior_depth: int, inverse_type: str) -> dict:
    """The paper's settings (spec §2-4) on one of its datasets."""
    names = preset_class_names(dataset) or [f"class_{i}" for i in range(len(preset_palette(dataset)[0]))]
    return {
        "backbone_config": backbone,
        "palette": dataset,
        "codebook_size": 8192,
        "token_stride": 4,
        "prior_depth": prior_depth,
        "inverse_type": inverse_type,
        "inverse_depth": 1 if dataset == "cityscapes" else 2,
        **_labels(names),
    }


GSS_PRESETS: dict[str, dict] = {
    "gss-ff-swin-large": _paper_preset("ade20k", SWIN_LARGE, prior_depth=2, inverse_type="nearest"),
    "gss-ftw-swin-large": _paper_preset("ade20k", SWIN_LARGE, prior_depth=2, inverse_type="learned"),
    "gss-ff-swin-large-cityscapes": _paper_preset("cityscapes", SWIN_LARGE, prior_depth=2, inverse_type="nearest"),
    "gss-ftw-swin-large-cityscapes": _paper_preset("cityscapes", SWIN_LARGE, prior_depth=2, inverse_type="learned"),
    "gss-ff-swin-large-mseg": _paper_preset("mseg", SWIN_LARGE, prior_depth=2, inverse_type="nearest"),
    "gss-ftw-swin-large-mseg": _paper_preset("mseg", SWIN_LARGE, prior_depth=2, inverse_type="learned"),
    "gss-ff-resnet101": _paper_preset("cityscapes", RESNET_101, prior_depth=6, inverse_type="nearest"),
    "gss-ftw-resnet101": _paper_preset("cityscapes", RESNET_101, prior_depth=6, inverse_type="learned"),
    # Small enough to train every stage on 2 CPU cores: MobileNetV2 (real ImageNet weights exist offline), a
    # narrow 1024-code tokenizer (the one measured in benchmarks/tokenizer_grid.py) and a narrow head; the learned
    # X^-1 keeps the paper's size (it is already tiny).
    "gss-mobilenetv2-camvid": {
        "backbone_config": dict(TORCHVISION_MOBILENET_V2_CONFIG),
        "palette": "generated",
        "codebook_size": 1024,
        "token_stride": 4,
        "tokenizer_config": default_tokenizer_config(
            1024, 4, base_channels=16, latent_channels=16, norm_num_groups=8
        ),
        "mla_channels": 64,
        "prior_hidden_size": 128,
        "prior_depth": 1,
        "prior_num_heads": 4,
        "prior_intermediate_size": 256,
        "prior_classifier_channels": 256,
        "auxiliary_channels": 64,
        "inverse_type": "learned",
        # The learned X^-1 runs at full resolution: at the paper's width (128) it would cost more than the rest of
        # the model on a CPU (benchmarks/inference_speed.py); 11 well-separated colours need far less.
        "inverse_hidden_size": 32,
        "inverse_num_heads": 2,
        "inverse_intermediate_size": 64,
        # One sliding-window crop at a time keeps a 1024x2048 photo under 1.6 GB (4 at a time: 4.1 GB; whole image:
        # 3.4 GB), for 1.3x the time of 4 (benchmarks/large_images.py).
        "sliding_window_batch_size": 1,
        **_labels(CAMVID_CLASSES),
    },
}


AutoConfig.register(GSSConfig.model_type, GSSConfig, exist_ok=True)
GSSConfig.register_for_auto_class()

__all__ = ["GSSConfig", "GSS_PRESETS", "TORCHVISION_MOBILENET_V2_CONFIG", "default_tokenizer_config"]
