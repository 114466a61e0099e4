"""Shifted-window transformer blocks on (batch, channels, height, width) feature maps.

Both the prior head and the learned X^-1 (GSS-FT-W) run a few Swin blocks at a fixed width over a dense map.
transformers' `SwinStage` already implements them (window partition, cyclic shift with its attention mask, relative
position bias, padding to window multiples), so this module only adapts its (batch, tokens, channels) layout to
feature maps and builds the `SwinConfig` it reads its hyper-parameters from.
"""

import torch
from torch import nn
from transformers import SwinConfig
from transformers.models.swin.modeling_swin import SwinStage


def window_transformer_config(
    hidden_size: int, num_heads: int, window_size: int, intermediate_size: int, attn_implementation: str | None
) -> SwinConfig:
    """The `SwinConfig` whose block hyper-parameters are the given ones (no dropout, GELU, qkv bias).

    Swin takes the MLP width as a ratio of `hidden_size`; `GSSConfig` checks that the ratio gives it back exactly.
    """
    config = SwinConfig(
        embed_dim=hidden_size,
        depths=[1],
        num_heads=[num_heads],
        window_size=window_size,
        mlp_ratio=intermediate_size / hidden_size,
        qkv_bias=True,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
    )
    config._attn_implementation = attn_implementation if attn_implementation in ("eager", "sdpa") else "sdpa"
    return config


class WindowTransformer(nn.Module):
    """`depth` Swin blocks (alternately regular and shifted windows) at constant width `hidden_size`.

    Windows are always partitioned at `window_size` (padding the map when it is smaller), so a block computes the
    same function whatever the input size: sliding-window inference and whole-image inference stay comparable.
    """

    def __init__(
        self,
        hidden_size: int,
        depth: int,
        num_heads: int,
        window_size: int,
        intermediate_size: int,
        attn_implementation: str | None = None,
    ):
        super().__init__()
        config = window_transformer_config(hidden_size, num_heads, window_size, intermediate_size, attn_implementation)
        self.stage = SwinStage(
            config=config,
            dim=hidden_size,
            input_resolution=(window_size, window_size),
            depth=depth,
            num_heads=num_heads,
            drop_path=[0.0] * depth,
            downsample=None,
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, hidden_size, height, width) -> (batch, hidden_size, height, width)."""
        batch, channels, height, width = features.shape
        tokens = features.flatten(2).transpose(1, 2)
        tokens = self.stage(tokens, (height, width), always_partition=True)[0]
        return tokens.transpose(1, 2).reshape(batch, channels, height, width)
