"""Configuration of the learned token prior p(z): a masked-token transformer over the stage-I tokenizer's grids.

The tokenizer is not part of this config: a prior is trained on one tokenizer's tokens, so it stores that
tokenizer's `codebook_size`, and the functions that pair them (`modeling_token_prior.sample_label_maps`, ...) check it
at use time. This file is also shipped as remote code with saved priors: it imports only installed libraries and
`configuration_gss`'s field rules.
"""

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig

from .configuration_gss import dropout_probability, non_negative_finite, positive_int


@strict
class GSSTokenPriorConfig(PreTrainedConfig):
    r"""
    Configuration of `GSSTokenPriorModel`, a MaskGIT-style bidirectional transformer that models token grids of a
    GSS maskige tokenizer. Each field is checked whenever it is set (as `GSSConfig`'s are); the rule between fields
    (heads dividing the width) runs at creation and on `validate()`.

    Args:
        codebook_size (`int`, *optional*, defaults to 1024):
            Codes V of the tokenizer whose grids the prior models; the embedding has V + 1 rows, the last being
            [MASK].
        grid_height (`int`, *optional*, defaults to 24):
            Token rows of a grid (label maps of `grid_height` x the tokenizer's token stride pixels: 96 at stride 4).
        grid_width (`int`, *optional*, defaults to 32):
            Token columns of a grid (128 pixels at stride 4).
        hidden_size (`int`, *optional*, defaults to 192):
            Width of the transformer (192 keeps the CamVid prior under 10 MB, small enough to embed).
        num_hidden_layers (`int`, *optional*, defaults to 4):
            Transformer layers.
        num_attention_heads (`int`, *optional*, defaults to 6):
            Attention heads; must divide `hidden_size`.
        intermediate_size (`int`, *optional*, defaults to 768):
            MLP width of each layer.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1):
            Dropout on embeddings and layer outputs.
        attention_dropout_prob (`float`, *optional*, defaults to 0.0):
            Dropout on attention weights. Off by default: with it, PyTorch's CPU attention leaves its fused kernel
            for the plain one and draws a (batch, heads, tokens, tokens) mask per layer, which made a training step
            four times slower here (7.2 s against 1.8 s for 16 grids of 24x32 on 2 cores).
        layer_norm_eps (`float`, *optional*, defaults to 1e-12):
            Epsilon of the layer norms.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser of embeddings and linears.
    """

    model_type = "gss_token_prior"

    codebook_size: int = positive_int(default=1024)
    grid_height: int = positive_int(default=24)
    grid_width: int = positive_int(default=32)
    hidden_size: int = positive_int(default=192)
    num_hidden_layers: int = positive_int(default=4)
    num_attention_heads: int = positive_int(default=6)
    intermediate_size: int = positive_int(default=768)
    hidden_dropout_prob: float | int = dropout_probability(default=0.1)
    attention_dropout_prob: float | int = dropout_probability(default=0.0)
    layer_norm_eps: float = non_negative_finite(default=1e-12)
    initializer_range: float | int = non_negative_finite(default=0.02)

    def validate_heads(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"`num_attention_heads` ({self.num_attention_heads}) must divide `hidden_size` ({self.hidden_size})."
            )

    @property
    def mask_token_id(self) -> int:
        """The [MASK] token: the embedding row after the V codes."""
        return self.codebook_size

    @property
    def num_tokens(self) -> int:
        """Tokens in a grid, h x w."""
        return self.grid_height * self.grid_width


AutoConfig.register(GSSTokenPriorConfig.model_type, GSSTokenPriorConfig, exist_ok=True)
GSSTokenPriorConfig.register_for_auto_class()

__all__ = ["GSSTokenPriorConfig"]
