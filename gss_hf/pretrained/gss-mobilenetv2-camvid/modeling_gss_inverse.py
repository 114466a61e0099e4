"""The inverse colour map X^-1: a decoded maskige (batch, 3, H, W) -> class scores (batch, K, H, W).

Three variants, chosen by `config.inverse_type` (spec §2):
- "nearest" (GSS-FF, training-free, as the official code): minus the squared distance to each class colour, or
  (`config.nearest_inverse_one_hot`) the one-hot of the nearest one, the official test output;
- "least_squares" (training-free, the paper's printed formula in its usable form): x (beta^T beta)^-1 beta^T;
- "learned" (GSS-FT-W): a small shifted-window transformer trained on the prior's predicted maskiges, so that it
  learns to correct the prior's typical errors rather than only invert clean colours.
"""

import torch
from torch import nn

from .configuration_gss import GSSConfig
from .maskige import check_maskige, class_scores_least_squares, class_scores_nearest_color, nearest_color_one_hot
from .modeling_window_transformer import WindowTransformer


class TrainingFreeInverse(nn.Module):
    """The nearest-colour (GSS-FF) or least-squares X^-1: a fixed function of the palette, so no weights (the
    palette lives in the config)."""

    SCORES = {"nearest": class_scores_nearest_color, "least_squares": class_scores_least_squares}

    def __init__(self, config: GSSConfig):
        super().__init__()
        self.palette = config.palette
        if config.inverse_type == "nearest" and config.nearest_inverse_one_hot:
            self.scores = nearest_color_one_hot
        else:
            self.scores = self.SCORES[config.inverse_type]

    def forward(self, maskige: torch.Tensor) -> torch.Tensor:
        """(batch, 3, H, W) colours in 0..255 -> (batch, K, H, W) class scores."""
        return self.scores(maskige, self.palette)


class LearnedInverse(nn.Module):
    """GSS-FT-W's X^-1: 1x1 conv 3 -> C (BN, ReLU), shifted-window blocks at width C, LayerNorm, 1x1 conv C -> K."""

    def __init__(self, config: GSSConfig):
        super().__init__()
        hidden_size = config.inverse_hidden_size
        self.embed = nn.Sequential(
            nn.Conv2d(3, hidden_size, kernel_size=1, bias=False), nn.BatchNorm2d(hidden_size), nn.ReLU(inplace=True)
        )
        self.window_transformer = WindowTransformer(
            hidden_size=hidden_size,
            depth=config.inverse_depth,
            num_heads=config.inverse_num_heads,
            window_size=config.inverse_window_size,
            intermediate_size=config.inverse_intermediate_size,
            attn_implementation=config._attn_implementation,
        )
        self.layernorm = nn.LayerNorm(hidden_size)
        self.classifier = nn.Conv2d(hidden_size, config.num_labels, kernel_size=1)

    def forward(self, maskige: torch.Tensor) -> torch.Tensor:
        """(batch, 3, H, W) colours in 0..255 -> (batch, K, H, W) class logits."""
        check_maskige(maskige)
        hidden_states = self.window_transformer(self.embed(maskige.to(self.classifier.weight.dtype) / 255.0))
        hidden_states = self.layernorm(hidden_states.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.classifier(hidden_states)


def build_inverse(config: GSSConfig) -> nn.Module:
    """The X^-1 module named by `config.inverse_type`."""
    return LearnedInverse(config) if config.inverse_type == "learned" else TrainingFreeInverse(config)
