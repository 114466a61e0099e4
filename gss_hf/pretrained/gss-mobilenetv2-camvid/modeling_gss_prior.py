"""The latent prior (the conditioning network): image backbone, multi-level aggregation head, auxiliary head.

The prior predicts, from the photo, the codebook index of every token of the maskige tokenizer (spec §4). Its
head ("MLA") projects each backbone level, resizes all of them to the token grid, fuses them, mixes them with
shifted-window transformer blocks and classifies every token into V codebook entries. The auxiliary head predicts K
classes per pixel from the same levels; its argmax also fills unlabelled pixels before label maps are tokenised.
"""

import torch
from torch import nn
from transformers import AutoBackbone, AutoModel
from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING_NAMES

from .configuration_gss import GSSConfig
from .modeling_resnet_v1c import ResNetV1cBackbone  # noqa: F401 (registers the backbone)
from .modeling_window_transformer import WindowTransformer


# transformers' MobileNet ports hard-code BatchNorm momentum 0.997, TensorFlow's moving-average *decay*: in PyTorch
# it replaces the running statistics at almost every training step. Backbones of these types get PyTorch's 0.1.
TENSORFLOW_PORTED_BATCH_NORM = ("mobilenet_v1", "mobilenet_v2")
BATCH_NORM_MOMENTUM = 0.1


class ConvNormActivation(nn.Sequential):
    """1x1 convolution, BatchNorm, ReLU: the projection unit of both heads."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class GSSBackbone(nn.Module):
    """Multi-level features (strides 4 to 32) from any transformers vision model.

    Models with a transformers `Backbone` class (ResNet, Swin, ConvNeXt, ...) give their `feature_maps`; others
    (MobileNetV2) give the `hidden_states` listed in `config.backbone_hidden_state_indices`.
    """

    def __init__(self, config: GSSConfig):
        super().__init__()
        backbone_config = config.backbone_config
        self.hidden_state_indices = config.backbone_hidden_state_indices
        if backbone_config.model_type in MODEL_FOR_BACKBONE_MAPPING_NAMES:
            self.model = AutoBackbone.from_config(backbone_config)
        else:
            self.model = AutoModel.from_config(backbone_config)
        if backbone_config.model_type in TENSORFLOW_PORTED_BATCH_NORM:
            for module in self.model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.momentum = BATCH_NORM_MOMENTUM
        self.channels, self.unused_parameter_names = self._probe()

    def _probe(self) -> tuple[list[int], list[str]]:
        """One small forward pass (on the weights' device, meta included) to read the channels of every level and
        the parameters that never reach them (Swin's final norm, MobileNetV2's last 1x1 conv, ...). Those stay in
        the model, so that pretrained checkpoints load strictly, but must not train: DDP refuses parameters that
        get no gradient."""
        was_training = self.model.training
        self.model.eval()
        parameter = next(self.model.parameters())
        probe = torch.zeros(1, 3, 64, 64, device=parameter.device, dtype=parameter.dtype)
        with torch.enable_grad():
            outputs = self.model(probe, output_hidden_states=True)
            if self.hidden_state_indices is None:
                features = list(outputs.feature_maps)
            else:
                out_of_range = [i for i in self.hidden_state_indices if i >= len(outputs.hidden_states)]
                if out_of_range:
                    raise ValueError(
                        f"`backbone_hidden_state_indices` {self.hidden_state_indices} asks for hidden states "
                        f"{out_of_range}, but the {self.model.config.model_type!r} backbone returns "
                        f"{len(outputs.hidden_states)}."
                    )
                features = [outputs.hidden_states[index] for index in self.hidden_state_indices]
            named_parameters = [(name, p) for name, p in self.model.named_parameters() if p.requires_grad]
            gradients = torch.autograd.grad(
                sum(level.sum() for level in features), [p for _, p in named_parameters], allow_unused=True
            )
        self.model.train(was_training)
        unused = [name for (name, _), gradient in zip(named_parameters, gradients) if gradient is None]
        return [level.shape[1] for level in features], unused

    def unused_parameters(self) -> list[nn.Parameter]:
        """Backbone parameters that do not influence the selected feature levels."""
        parameters = dict(self.model.named_parameters())
        return [parameters[name] for name in self.unused_parameter_names]

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """(batch, 3, H, W) -> one (batch, channels[level], H / stride, W / stride) map per level."""
        if self.hidden_state_indices is None:
            return list(self.model(pixel_values).feature_maps)
        hidden_states = self.model(pixel_values, output_hidden_states=True).hidden_states
        return [hidden_states[index] for index in self.hidden_state_indices]


def resize_and_concatenate(
    features: list[torch.Tensor], projections: nn.ModuleList, size: tuple[int, int]
) -> torch.Tensor:
    """Projects every level, resizes it bilinearly to `size` and concatenates them along the channels."""
    resized = []
    for level, projection in zip(features, projections):
        projected = projection(level)
        if projected.shape[-2:] != size:
            projected = nn.functional.interpolate(projected, size=size, mode="bilinear", align_corners=False)
        resized.append(projected)
    return torch.cat(resized, dim=1)


class GSSPriorHead(nn.Module):
    """The multi-level aggregation (MLA) head: backbone levels -> token features -> V codebook logits.

    With `config.prior_head_type == "plain"` it aggregates nothing: only the deepest level is projected and resized,
    everything after that is the same (the paper's "+ MLA" ablation).

    `forward` stops before the classifier and returns the (batch, prior_classifier_channels, h, w) features, so that
    the V-way logits (hundreds of MB per image at V = 8192 and stride 4) are only formed chunk by chunk, by the
    token loss and the token argmax; `classifier` is applied whole only when the caller asks for the logits.
    """

    def __init__(self, config: GSSConfig, in_channels: list[int]):
        super().__init__()
        self.num_levels = len(in_channels) if config.prior_head_type == "mla" else 1
        in_channels = in_channels[-self.num_levels :]
        self.level_projections = nn.ModuleList([ConvNormActivation(c, config.mla_channels) for c in in_channels])
        fused_channels = config.mla_channels * len(in_channels)
        # The official head fuses with conv + BatchNorm + ReLU; gss_hf's own heads keep a plain conv with bias (see
        # `GSSConfig.prior_fuse_norm_activation`). Both are needed: converted official checkpoints hold the former.
        if config.prior_fuse_norm_activation:
            self.fuse = ConvNormActivation(fused_channels, config.prior_hidden_size)
        else:
            self.fuse = nn.Conv2d(fused_channels, config.prior_hidden_size, kernel_size=1)
        self.window_transformer = WindowTransformer(
            hidden_size=config.prior_hidden_size,
            depth=config.prior_depth,
            num_heads=config.prior_num_heads,
            window_size=config.prior_window_size,
            intermediate_size=config.prior_intermediate_size,
            attn_implementation=config._attn_implementation,
        )
        self.layernorm = nn.LayerNorm(config.prior_hidden_size)
        self.classifier_projection = ConvNormActivation(config.prior_hidden_size, config.prior_classifier_channels)
        self.dropout = nn.Dropout2d(config.prior_dropout)
        self.classifier = nn.Conv2d(config.prior_classifier_channels, config.codebook_size, kernel_size=1)

    def forward(self, features: list[torch.Tensor], token_grid_size: tuple[int, int]) -> torch.Tensor:
        """Backbone levels -> (batch, prior_classifier_channels, h, w) features at the (h, w) token grid."""
        levels = features[-self.num_levels :]
        hidden_states = self.fuse(resize_and_concatenate(levels, self.level_projections, token_grid_size))
        hidden_states = self.window_transformer(hidden_states)
        hidden_states = self.layernorm(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.dropout(self.classifier_projection(hidden_states))

    @property
    def classifier_weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier as a (V, channels) matrix and a (V,) bias, for chunked use."""
        weight = self.classifier.weight
        return weight.reshape(weight.shape[0], weight.shape[1]), self.classifier.bias


class GSSAuxiliaryHead(nn.Module):
    """K-class pixel classifier on the same levels: its loss guides the backbone, its argmax fills unlabelled
    pixels of the label maps before they are tokenised (spec §4)."""

    def __init__(self, config: GSSConfig, in_channels: list[int]):
        super().__init__()
        channels = config.auxiliary_channels
        self.level_projections = nn.ModuleList([ConvNormActivation(c, channels) for c in in_channels])
        self.fuse = ConvNormActivation(channels * len(in_channels), channels)
        self.classifier = nn.Conv2d(channels, config.num_labels, kernel_size=1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Backbone levels -> (batch, num_labels, *size) class logits."""
        return self.classifier(self.fuse(resize_and_concatenate(features, self.level_projections, size)))
