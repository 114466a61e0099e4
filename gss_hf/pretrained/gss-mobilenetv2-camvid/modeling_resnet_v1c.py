"""MMSegmentation's `ResNetV1c` (the official GSS Cityscapes R101 backbone) as a transformers backbone.

transformers' ResNet has a single 7x7 stem conv and no dilation, so it cannot hold these weights. `ResNetV1c` is
a ResNet with a "deep stem" (three 3x3 convs) and, in the segmentation configs, dilated last stages that keep the
output stride at 8. The modules keep mmseg's names (`stem.0`, `layer1.0.conv1`, `layer1.0.bn1`,
`layer1.0.downsample.0`, ...), so an official checkpoint loads after stripping its `backbone.` prefix
(`convert_mmseg_resnet_state_dict`), and `resnet_v1c_config_from_state_dict` reads the sizes from its key names and
shapes.

Importing this file registers the config with `AutoConfig` (model type "resnet_v1c") and the backbone with
`AutoBackbone`, and lists the type among transformers' backbones, so that a GSS config whose `backbone_config` has
`model_type: "resnet_v1c"` builds it through `AutoBackbone.from_config`.
"""

import re
from typing import ClassVar

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import AutoBackbone, AutoConfig, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.backbone_utils import BackboneConfigMixin, BackboneMixin, filter_output_hidden_states
from transformers.modeling_outputs import BackboneOutput
from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES
from transformers.utils.generic import can_return_tuple


# Bottleneck blocks per stage for each ResNet depth, as mmseg's `ResNet.arch_settings`.
BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
# The official GSS Cityscapes configs' stage settings (output stride 8); they do not show in a state dict.
CITYSCAPES_STRIDES = (1, 2, 1, 1)
CITYSCAPES_DILATIONS = (1, 1, 2, 4)
BOTTLENECK_EXPANSION = 4


@strict
class ResNetV1cConfig(BackboneConfigMixin, PreTrainedConfig):
    r"""
    Configuration of a `ResNetV1cBackbone`: mmseg 0.26's `ResNetV1c` (`ResNet` with `deep_stem=True`,
    `avg_down=False`, `style="pytorch"`). Defaults are the official GSS Cityscapes R101 backbone's.

    Args:
        num_channels (`int`, *optional*, defaults to 3):
            Channels of the input images.
        depth (`int`, *optional*, defaults to 101):
            ResNet depth, one of 50, 101, 152; names the blocks per stage when `depths` is not given. `None` when
            `depths` matches no standard depth.
        depths (`list[int]`, *optional*):
            Bottleneck blocks per stage; defaults to those of `depth` ([3, 4, 23, 3] for 101).
        stem_channels (`int`, *optional*, defaults to 64):
            Output channels of the deep stem, whose first two 3x3 convs have half as many. Even.
        base_channels (`int`, *optional*, defaults to 64):
            Bottleneck width of the first stage; stage i is `base_channels * 2**i` wide and outputs 4 times that.
        strides (`list[int]`, *optional*, defaults to `[1, 2, 1, 1]`):
            Stride of the first block of each stage (on its 3x3 conv and its shortcut).
        dilations (`list[int]`, *optional*, defaults to `[1, 1, 2, 4]`):
            Dilation of the 3x3 convs of each stage.
        contract_dilation (`bool`, *optional*, defaults to `True`):
            Whether the first block of a stage with dilation d > 1 uses d // 2 (mmseg's `contract_dilation`).
        layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of every BatchNorm.
        out_features (`list[str]`, *optional*):
            Stages to return, from `stage_names` ("stem", "stage1", ..., "stage4"); defaults to all four residual
            stages, as mmseg's `out_indices` (0, 1, 2, 3). Give this or `out_indices`.
        out_indices (`list[int]`, *optional*):
            Indices of the stages to return in `stage_names` (the stem is 0).

    Example:

    ```python
    >>> from gss_hf import ResNetV1cBackbone, ResNetV1cConfig

    >>> config = ResNetV1cConfig(stem_channels=8, base_channels=8)
    >>> backbone = ResNetV1cBackbone(config)
    >>> config.depths, backbone.channels
    ([3, 4, 23, 3], [32, 64, 128, 256])
    ```
    """

    model_type = "resnet_v1c"
    supported_depths: ClassVar[tuple[int, ...]] = tuple(BLOCKS_PER_STAGE)

    num_channels: int = 3
    depth: int | None = 101
    depths: list[int] | tuple[int, ...] | None = None
    stem_channels: int = 64
    base_channels: int = 64
    strides: list[int] | tuple[int, ...] = CITYSCAPES_STRIDES
    dilations: list[int] | tuple[int, ...] = CITYSCAPES_DILATIONS
    contract_dilation: bool = True
    layer_norm_eps: float = 1e-5

    def __post_init__(self, **kwargs):
        if self.depths is None:
            if self.depth not in BLOCKS_PER_STAGE:
                raise ValueError(
                    f"`depth` must be one of {self.supported_depths} when `depths` is not given, got {self.depth!r}."
                )
            self.depths = BLOCKS_PER_STAGE[self.depth]
        self.depths, self.strides, self.dilations = list(self.depths), list(self.strides), list(self.dilations)
        self.stage_names = ["stem"] + [f"stage{index}" for index in range(1, len(self.depths) + 1)]
        out_indices, out_features = kwargs.pop("out_indices", None), kwargs.pop("out_features", None)
        if out_indices is None and out_features is None:
            out_features = self.stage_names[1:]
        self.set_output_features_output_indices(out_indices=out_indices, out_features=out_features)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """The stage settings must agree in length, and `depth` (when given) with `depths`."""
        if not len(self.depths) == len(self.strides) == len(self.dilations) or not self.depths:
            raise ValueError(
                f"`depths` {self.depths}, `strides` {self.strides} and `dilations` {self.dilations} must give one "
                "entry per stage, at least one."
            )
        if self.depth is not None and BLOCKS_PER_STAGE.get(self.depth) != tuple(self.depths):
            raise ValueError(
                f"`depth` {self.depth} has blocks {BLOCKS_PER_STAGE.get(self.depth)}, but `depths` is {self.depths}: "
                "set `depth=None` for other block counts."
            )
        sizes = [self.num_channels, self.stem_channels, self.base_channels, *self.depths]
        if min(sizes + self.strides + self.dilations) < 1 or self.stem_channels % 2:
            raise ValueError(
                "Channels, block counts, strides and dilations must be positive and `stem_channels` even, got "
                f"stem_channels={self.stem_channels}, base_channels={self.base_channels}, depths={self.depths}, "
                f"strides={self.strides}, dilations={self.dilations}."
            )


def conv_bn(
    in_channels: int, out_channels: int, kernel_size: int, stride: int, dilation: int, eps: float
) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    """A bias-free conv ("same" padding for odd kernels) and its BatchNorm, as mmseg pairs them."""
    convolution = nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=dilation * (kernel_size // 2),
        dilation=dilation,
        bias=False,
    )
    return convolution, nn.BatchNorm2d(out_channels, eps=eps)


class ResNetV1cBottleneck(nn.Module):
    """mmseg's `Bottleneck` with style "pytorch": 1x1 -> 3x3 (stride, dilation) -> 1x1 to 4x `width` channels,
    plus the identity, or a strided 1x1 conv + BN (`downsample`) where the shape changes.

    (batch, in_channels, H, W) -> (batch, 4 * width, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, width: int, stride: int, dilation: int, eps: float):
        super().__init__()
        out_channels = width * BOTTLENECK_EXPANSION
        self.conv1, self.bn1 = conv_bn(in_channels, width, 1, 1, 1, eps)
        self.conv2, self.bn2 = conv_bn(width, width, 3, stride, dilation, eps)
        self.conv3, self.bn3 = conv_bn(width, out_channels, 1, 1, 1, eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(*conv_bn(in_channels, out_channels, 1, stride, 1, eps))

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        residual = self.relu(self.bn1(self.conv1(hidden_state)))
        residual = self.relu(self.bn2(self.conv2(residual)))
        residual = self.bn3(self.conv3(residual))
        shortcut = hidden_state if self.downsample is None else self.downsample(hidden_state)
        return self.relu(residual + shortcut)


def make_stage(config: ResNetV1cConfig, index: int, in_channels: int) -> nn.Sequential:
    """mmseg's `ResLayer` for stage `index` (0-based): the first block strides (and, with `contract_dilation`, uses
    half the stage's dilation when it is above 1), the others keep the resolution."""
    width = config.base_channels * 2**index
    dilation = config.dilations[index]
    first_dilation = dilation // 2 if config.contract_dilation and dilation > 1 else dilation
    blocks = [ResNetV1cBottleneck(in_channels, width, config.strides[index], first_dilation, config.layer_norm_eps)]
    for _ in range(1, config.depths[index]):
        blocks.append(ResNetV1cBottleneck(width * BOTTLENECK_EXPANSION, width, 1, dilation, config.layer_norm_eps))
    return nn.Sequential(*blocks)


class ResNetV1cPreTrainedModel(PreTrainedModel):
    """Weight init and loading for the ResNetV1c models."""

    config: ResNetV1cConfig
    base_model_prefix = "resnet_v1c"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["ResNetV1cBottleneck"]

    def _init_weights(self, module):
        """mmseg's init without a checkpoint: Kaiming-normal convs (fan_out), BatchNorm at weight 1, bias 0."""
        super()._init_weights(module)
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")


class ResNetV1cBackbone(BackboneMixin, ResNetV1cPreTrainedModel):
    """ResNetV1c feature maps: (batch, num_channels, H, W) -> for each of `out_features` a
    (batch, channels, H / s, W / s) map. s is 4 after the stem (its stride-2 conv and max-pool) and multiplies by
    each stage's stride: the official config gives s = 4, 8, 8, 8 for the four stages, with
    4 * base_channels * (1, 2, 4, 8) channels.

    Stages are `layer1` ... `layerN` (mmseg's names) and are listed as "stage1" ... in `stage_names`.
    """

    has_attentions = False

    def __init__(self, config: ResNetV1cConfig):
        super().__init__(config)
        half = config.stem_channels // 2
        eps = config.layer_norm_eps
        stem_layers = []
        for in_channels, out_channels, stride in (
            (config.num_channels, half, 2), (half, half, 1), (half, config.stem_channels, 1)
        ):  # fmt: skip
            stem_layers += [*conv_bn(in_channels, out_channels, 3, stride, 1, eps), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*stem_layers)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.stage_module_names = [f"layer{index + 1}" for index in range(len(config.depths))]
        self.num_features = [config.stem_channels]
        for index, name in enumerate(self.stage_module_names):
            self.add_module(name, make_stage(config, index, self.num_features[-1]))
            self.num_features.append(config.base_channels * 2**index * BOTTLENECK_EXPANSION)
        self.post_init()

    @can_return_tuple
    @filter_output_hidden_states
    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BackboneOutput:
        """`pixel_values` (batch, num_channels, H, W) -> `feature_maps`, one per `out_features`; `hidden_states`
        (when asked) are the stem's and every stage's output."""
        hidden_states = (self.maxpool(self.stem(pixel_values)),)
        for name in self.stage_module_names:
            hidden_states += (getattr(self, name)(hidden_states[-1]),)
        feature_maps = tuple(
            hidden_state for stage, hidden_state in zip(self.stage_names, hidden_states) if stage in self.out_features
        )
        return BackboneOutput(feature_maps=feature_maps, hidden_states=hidden_states)


def convert_mmseg_resnet_state_dict(
    state_dict: dict[str, torch.Tensor], prefix: str = "backbone."
) -> dict[str, torch.Tensor]:
    """The `prefix`ed entries of an mmseg `ResNetV1c` checkpoint as a `ResNetV1cBackbone` state dict.

    The module names are mmseg's, so the mapping is the prefix removed: `backbone.stem.{0,3,6}.weight` (convs)
    and `backbone.stem.{1,4,7}.*` (BatchNorms), `backbone.layer{i}.{j}.conv{1,2,3}.weight`,
    `backbone.layer{i}.{j}.bn{1,2,3}.*`, `backbone.layer{i}.0.downsample.{0,1}.*`; BatchNorm statistics and
    `num_batches_tracked` included. Other keys (the decode head's) are left out.
    """
    converted = {key[len(prefix) :]: tensor for key, tensor in state_dict.items() if key.startswith(prefix)}
    if not converted:
        raise ValueError(
            f"The state dict has no key starting with {prefix!r} (the backbone's prefix); its first keys are "
            f"{list(state_dict)[:5]}."
        )
    return converted


def resnet_v1c_config_from_state_dict(
    state_dict: dict[str, torch.Tensor],
    prefix: str = "backbone.",
    strides: list[int] | tuple[int, ...] = CITYSCAPES_STRIDES,
    dilations: list[int] | tuple[int, ...] = CITYSCAPES_DILATIONS,
    contract_dilation: bool = True,
    **kwargs,
) -> ResNetV1cConfig:
    """The `ResNetV1cConfig` of an mmseg checkpoint: blocks per stage, stem and base channels and input channels
    read from the key names and shapes (meta tensors suffice). Strides and dilations do not show in the weights:
    the defaults are the official GSS Cityscapes config's. `kwargs` go to the config (`out_features`, ...)."""

    def tensor(name: str) -> torch.Tensor:
        if prefix + name not in state_dict:
            raise ValueError(f"The state dict has no {prefix + name!r}, which every mmseg ResNetV1c has.")
        return state_dict[prefix + name]

    stem_input = tensor("stem.0.weight")  # (stem_channels / 2, num_channels, 3, 3)
    stem_output = tensor("stem.6.weight")  # (stem_channels, stem_channels / 2, 3, 3)
    block_key = re.compile(re.escape(prefix) + r"layer(\d+)\.(\d+)\.")
    blocks_by_stage: dict[int, set[int]] = {}
    for key in state_dict:
        match = block_key.match(key)
        if match:
            blocks_by_stage.setdefault(int(match[1]), set()).add(int(match[2]))
    if not blocks_by_stage:
        raise ValueError(f"The state dict has no residual stage ({prefix}layer1.0.* ...).")
    depths = []
    for stage in range(1, max(blocks_by_stage) + 1):
        blocks = blocks_by_stage.get(stage, set())
        missing = sorted(set(range(max(blocks, default=0) + 1)) - blocks)
        if missing:
            raise ValueError(
                f"The state dict has no {', '.join(f'{prefix}layer{stage}.{block}.*' for block in missing)} "
                f"(stages found: {sorted(blocks_by_stage)})."
            )
        depths.append(len(blocks))
    depth = next((depth for depth, counts in BLOCKS_PER_STAGE.items() if counts == tuple(depths)), None)
    return ResNetV1cConfig(
        num_channels=stem_input.shape[1],
        depth=depth,
        depths=depths,
        stem_channels=stem_output.shape[0],
        base_channels=tensor("layer1.0.conv1.weight").shape[0],
        strides=list(strides),
        dilations=list(dilations),
        contract_dilation=contract_dilation,
        **kwargs,
    )


AutoConfig.register(ResNetV1cConfig.model_type, ResNetV1cConfig, exist_ok=True)
AutoBackbone.register(ResNetV1cConfig, ResNetV1cBackbone, exist_ok=True)
ResNetV1cConfig.register_for_auto_class()
ResNetV1cBackbone.register_for_auto_class("AutoBackbone")
# GSS (and transformers' own checks) tell backbone classes from plain models by this static name table only.
MODEL_FOR_BACKBONE_MAPPING_NAMES.setdefault(ResNetV1cConfig.model_type, ResNetV1cBackbone.__name__)

__all__ = [
    "ResNetV1cBackbone",
    "ResNetV1cConfig",
    "ResNetV1cPreTrainedModel",
    "convert_mmseg_resnet_state_dict",
    "resnet_v1c_config_from_state_dict",
]
