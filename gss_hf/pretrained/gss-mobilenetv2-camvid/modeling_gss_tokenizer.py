"""The tokenizer contract: what a GSS model needs of its latent posterior, and the registry that builds one.

A GSS model knows its tokenizer only through `GSSTokenizer`: maskige -> token ids, token ids -> maskige, the
codebook size and stride, the stage-I loss and dead-code re-seeding. `config.tokenizer_type` names the class, which
`build_tokenizer` looks up in `TOKENIZER_TYPES`; each built-in tokenizer registers itself at the end of its own module
(`register_tokenizer_type`), so that a new posterior plugs in without a change to `modeling_gss.py`.
"""

import abc
from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput

from .configuration_gss import GSSConfig
from .maskige import check_index_map


@dataclass
class TokenizerTrainingOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`):
            The stage-I training loss (the weighted reconstruction term and whatever the codebook needs).
        reconstruction_loss (`torch.FloatTensor` of shape `()`):
            The reconstruction term alone, unweighted, for logging.
        token_ids (`torch.LongTensor` of shape `(batch, height / token_stride, width / token_stride)`):
            The codes chosen for the maskige, for codebook-usage statistics.
        latents (`torch.FloatTensor` of shape `(batch, codebook_dim, height / token_stride, width / token_stride)`):
            The encoder's output before quantisation, from which dead codes are re-seeded.
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    token_ids: torch.LongTensor | None = None
    latents: torch.FloatTensor | None = None


class GSSTokenizer(nn.Module, abc.ABC):
    """Maskige (batch, 3, H, W), colours in 0..255 <-> token ids (batch, H / token_stride, W / token_stride).

    Subclasses implement every abstract method below (instantiating one that misses any fails). A GSS model keeps
    its tokenizer frozen and in eval mode; stage I trains a tokenizer on its own, through `forward` (its loss) and
    `reseed_dead_codes`.
    """

    @classmethod
    @abc.abstractmethod
    def from_gss_config(cls, config: GSSConfig) -> "GSSTokenizer":
        """A freshly initialised tokenizer with the settings of `config` (its `tokenizer_config`)."""

    @classmethod
    @abc.abstractmethod
    def from_pretrained(cls, pretrained_path: str, **kwargs) -> "GSSTokenizer":
        """A trained tokenizer from a folder written by `save_pretrained` (or a Hub id)."""

    @abc.abstractmethod
    def save_pretrained(self, save_directory: str, **kwargs) -> None:
        """Writes the tokenizer, weights and settings, for `from_pretrained` (stage I's output folder)."""

    @abc.abstractmethod
    def check_compatible(self, config: GSSConfig) -> None:
        """Raises `ValueError` naming the differences unless this tokenizer has the settings of `config`, so that
        its weights can be loaded into the tokenizer a model with `config` builds."""

    @property
    @abc.abstractmethod
    def codebook_size(self) -> int:
        """The number of codes V."""

    @property
    @abc.abstractmethod
    def token_stride(self) -> int:
        """The down-sampling factor from maskige to token grid."""

    @abc.abstractmethod
    def encode(self, maskige: torch.Tensor) -> torch.LongTensor:
        """(batch, 3, H, W) maskige, colours in 0..255 -> (batch, H / token_stride, W / token_stride) token ids."""

    @abc.abstractmethod
    def decode(self, token_ids: torch.LongTensor) -> torch.Tensor:
        """(batch, h, w) token ids -> (batch, 3, h * token_stride, w * token_stride) maskige, float in 0..255."""

    @abc.abstractmethod
    def forward(self, maskige: torch.Tensor, reconstruction_weight: float) -> TokenizerTrainingOutput:
        """The stage-I training pass of a (batch, 3, H, W) maskige, differentiable with respect to the tokenizer.
        It is `forward` (not a method of its own) so that distributed wrappers see it."""

    def check_token_ids(self, token_ids: torch.Tensor) -> None:
        """Raises `ValueError` unless `token_ids` (batch, h, w) are integer codes in 0..codebook_size-1; `decode`
        implementations call it, since an out-of-range code would index past the codebook."""
        check_index_map(token_ids, "token_ids", "integer codebook indices")
        if token_ids.min() < 0 or token_ids.max() >= self.codebook_size:
            raise ValueError(
                f"`token_ids` must be in 0..{self.codebook_size - 1} (the codebook size), got values in "
                f"{int(token_ids.min())}..{int(token_ids.max())}."
            )

    @abc.abstractmethod
    def reseed_dead_codes(
        self, usage: torch.LongTensor, latents: torch.Tensor, generator: torch.Generator
    ) -> int:
        """Moves every code whose `usage` count (codebook_size,) is 0 onto a random encoder output of `latents`
        (batch, codebook_dim, h, w), drawn with `generator`; returns how many codes moved."""


TOKENIZER_TYPES: dict[str, type[GSSTokenizer]] = {}


def register_tokenizer_type(tokenizer_type: str, tokenizer_class: type[GSSTokenizer]) -> None:
    """Makes `GSSConfig(tokenizer_type=tokenizer_type)` build `tokenizer_class`."""
    if not (isinstance(tokenizer_class, type) and issubclass(tokenizer_class, GSSTokenizer)):
        raise TypeError(f"A tokenizer type must be a GSSTokenizer subclass, got {tokenizer_class!r}.")
    TOKENIZER_TYPES[tokenizer_type] = tokenizer_class


def tokenizer_class(config: GSSConfig) -> type[GSSTokenizer]:
    """The class registered for `config.tokenizer_type`."""
    if config.tokenizer_type not in TOKENIZER_TYPES:
        raise ValueError(
            f"Unknown `tokenizer_type` {config.tokenizer_type!r}; registered types: {sorted(TOKENIZER_TYPES)} "
            "(add one with `register_tokenizer_type`)."
        )
    return TOKENIZER_TYPES[config.tokenizer_type]


def build_tokenizer(config: GSSConfig) -> GSSTokenizer:
    """The tokenizer named by `config.tokenizer_type`, freshly initialised."""
    return tokenizer_class(config).from_gss_config(config)


__all__ = [
    "GSSTokenizer",
    "TOKENIZER_TYPES",
    "TokenizerTrainingOutput",
    "build_tokenizer",
    "register_tokenizer_type",
    "tokenizer_class",
]
