"""The latent posterior trained here: a VQ tokenizer that turns maskiges into discrete tokens and back.

A thin wrapper around diffusers' `VQModel`, which holds every weight; the wrapper adds the maskige conventions
(colours in 0..255, DALL-E's pixel map, sigmoid on the decoder output), index-level `encode`/`decode` and the rest of
the `GSSTokenizer` contract. It is `tokenizer_type: "vqmodel"`.

How the 1/4 token grid is reached. The official code feeds DALL-E's 8x dVAE a label map up-sampled 2x, because
those were the only weights it had. Trained from scratch, a model that down-samples 4x directly sees the same
pixels per token at a quarter of the activations, and `benchmarks/tokenizer_grid.py` measured it to train faster
and reconstruct better under the same budget (table in `benchmarks/RESULTS.md`). So `token_stride` is the
`VQModel`'s own down-sampling factor and no label up-sampling happens on this route.
"""

from dataclasses import dataclass

import torch
from diffusers import VQModel
from torch import nn

from .configuration_gss import GSSConfig
from .maskige import check_maskige, maskige_to_tokenizer_pixels, tokenizer_pixels_to_maskige
from .modeling_gss_tokenizer import GSSTokenizer, TokenizerTrainingOutput, register_tokenizer_type


@dataclass
class MaskigeTokenizerOutput(TokenizerTrainingOutput):
    """
    The contract's training output (`loss`, `reconstruction_loss`, `token_ids`, `latents`), plus:

    Args:
        reconstruction (`torch.FloatTensor` of shape `(batch, 3, height, width)`):
            The decoded maskige, colours in 0..255, differentiable with respect to the tokenizer's weights.
        decoder_logits (`torch.FloatTensor` of shape `(batch, 3, height, width)`):
            The decoder's raw output; `sigmoid` of it is in tokenizer-pixel space ([0.1, 0.9] for valid colours).
        quantization_loss (`torch.FloatTensor` of shape `()`):
            The VQ codebook + commitment loss of `VQModel`'s quantizer.
    """

    reconstruction: torch.FloatTensor | None = None
    decoder_logits: torch.FloatTensor | None = None
    quantization_loss: torch.FloatTensor | None = None


class MaskigeTokenizer(GSSTokenizer):
    """Maskige (batch, 3, H, W) <-> token ids (batch, H / token_stride, W / token_stride).

    Its weights are never touched by transformers' weight initialisation: a GSS model's `post_init()` re-initialises
    every submodule it does not know to be initialised, which would silently overwrite a trained tokenizer. The
    wrapper marks all of the `VQModel`'s modules as initialised (transformers' own `_is_hf_initialized` flag), so a
    fresh tokenizer keeps diffusers' initialisation and a loaded one keeps its weights.
    """

    def __init__(self, vqmodel: VQModel):
        super().__init__()
        if not isinstance(vqmodel, VQModel):
            raise TypeError(f"`vqmodel` must be a diffusers VQModel, got {type(vqmodel).__name__}.")
        if vqmodel.config.in_channels != 3 or vqmodel.config.out_channels != 3:
            raise ValueError("A maskige tokenizer maps 3-channel maskiges to 3-channel maskiges.")
        self.vqmodel = vqmodel
        for module in self.vqmodel.modules():
            module._is_hf_initialized = True

    @classmethod
    def from_config(cls, tokenizer_config: dict) -> "MaskigeTokenizer":
        """A freshly initialised tokenizer from `VQModel` keyword arguments (`GSSConfig.tokenizer_config`)."""
        return cls(VQModel(**tokenizer_config))

    @classmethod
    def from_gss_config(cls, config: GSSConfig) -> "MaskigeTokenizer":
        return cls.from_config(config.tokenizer_config)

    def check_compatible(self, config: GSSConfig) -> None:
        given = self.vqmodel.config
        different = {
            key: (value, given.get(key))
            for key, value in config.tokenizer_config.items()
            if _as_list(given.get(key)) != _as_list(value)
        }
        if different:
            raise ValueError(
                f"The tokenizer differs from `config.tokenizer_config` in (config, tokenizer): {different}."
            )

    @classmethod
    def from_pretrained(cls, pretrained_path: str, subfolder: str | None = None, **kwargs) -> "MaskigeTokenizer":
        """Loads a tokenizer saved in diffusers format (a folder, or its `subfolder`, or a Hub id)."""
        return cls(VQModel.from_pretrained(pretrained_path, subfolder=subfolder, **kwargs))

    def save_pretrained(self, save_directory: str, **kwargs) -> None:
        """Saves the tokenizer in diffusers format (`config.json` + safetensors), loadable by `VQModel` alone."""
        self.vqmodel.save_pretrained(save_directory, **kwargs)

    @property
    def codebook_size(self) -> int:
        return self.vqmodel.config.num_vq_embeddings

    @property
    def token_stride(self) -> int:
        return 2 ** (len(self.vqmodel.config.block_out_channels) - 1)

    @property
    def codebook_dim(self) -> int:
        return self.vqmodel.quantize.vq_embed_dim

    def encode_to_latents(self, maskige: torch.Tensor) -> torch.Tensor:
        """(batch, 3, H, W) maskige -> (batch, codebook_dim, H / s, W / s) pre-quantisation latents."""
        check_maskige(maskige)
        height, width = maskige.shape[-2:]
        stride = self.token_stride
        if height % stride or width % stride:
            raise ValueError(
                f"The maskige is {height}x{width}, but the tokenizer needs height and width divisible by its token "
                f"stride {stride}: pad the label map (with the ignore index) or crop it first."
            )
        return self.vqmodel.encode(maskige_to_tokenizer_pixels(maskige)).latents

    def quantize(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.LongTensor]:
        """Nearest-code quantisation: returns (quantised latents, quantization loss, (batch, h, w) token ids)."""
        quantized, loss, (_, _, indices) = self.vqmodel.quantize(latents)
        batch, _, height, width = latents.shape
        return quantized, loss, indices.reshape(batch, height, width)

    @torch.no_grad()
    def encode(self, maskige: torch.Tensor) -> torch.LongTensor:
        """Maskige (batch, 3, H, W), colours in 0..255 -> token ids (batch, H / token_stride, W / token_stride)."""
        return self.quantize(self.encode_to_latents(maskige))[2]

    def decode_latents(self, quantized: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantised latents (batch, codebook_dim, h, w) -> (maskige in 0..255, decoder logits).

        Both outputs have shape (batch, 3, h * token_stride, w * token_stride).
        """
        logits = self.vqmodel.decode(quantized, force_not_quantize=True).sample
        return tokenizer_pixels_to_maskige(torch.sigmoid(logits)), logits

    def decode(self, token_ids: torch.LongTensor) -> torch.Tensor:
        """Token ids (batch, h, w) -> maskige (batch, 3, h * token_stride, w * token_stride), float in 0..255."""
        self.check_token_ids(token_ids)
        batch, height, width = token_ids.shape
        quantized = self.vqmodel.quantize.get_codebook_entry(
            token_ids.reshape(-1), (batch, height, width, self.codebook_dim)
        )
        return self.decode_latents(quantized)[0]

    # The modules that decide which token a maskige gets; `post_quant_conv` and `decoder` only draw tokens.
    TOKENIZING_MODULES = ("encoder", "quant_conv", "quantize")

    def tokenizing_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights of the encoder, its output convolution and the codebook: two tokenizers that share them give
        every maskige the same tokens, so a stage-II prior trained on one is valid for the other."""
        return {
            key: value
            for key, value in self.vqmodel.state_dict().items()
            if key.split(".")[0] in self.TOKENIZING_MODULES
        }

    def freeze_tokens(self) -> None:
        """Only the decoder (and `post_quant_conv`) trains from now on: the encoder and codebook are frozen, so token
        ids, and any prior trained on them, stay valid while the decoder learns to draw them better."""
        for name in self.TOKENIZING_MODULES:
            getattr(self.vqmodel, name).requires_grad_(False)

    @torch.no_grad()
    def reseed_dead_codes(self, usage: torch.LongTensor, latents: torch.Tensor, generator: torch.Generator) -> int:
        dead = (usage == 0).nonzero().flatten()
        if len(dead) == 0:
            return 0
        candidates = latents.detach().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        choice = torch.randint(len(candidates), (len(dead),), generator=generator).to(candidates.device)
        codebook = self.vqmodel.quantize.embedding.weight
        codebook[dead] = candidates[choice].to(codebook.dtype)
        return len(dead)

    def forward(self, maskige: torch.Tensor, reconstruction_weight: float = 10.0) -> MaskigeTokenizerOutput:
        """The stage-I training pass: encode, quantise (straight-through gradients) and decode. The loss is
        `reconstruction_weight` x MSE between the decoder's sigmoid output and the maskige in tokenizer-pixel space,
        plus the VQ codebook and commitment loss."""
        latents = self.encode_to_latents(maskige)
        quantized, quantization_loss, token_ids = self.quantize(latents)
        reconstruction, logits = self.decode_latents(quantized)
        target = maskige_to_tokenizer_pixels(maskige)
        reconstruction_loss = nn.functional.mse_loss(torch.sigmoid(logits.float()), target)
        return MaskigeTokenizerOutput(
            loss=reconstruction_weight * reconstruction_loss + quantization_loss,
            reconstruction_loss=reconstruction_loss,
            token_ids=token_ids,
            latents=latents,
            reconstruction=reconstruction,
            decoder_logits=logits,
            quantization_loss=quantization_loss,
        )


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else value


register_tokenizer_type("vqmodel", MaskigeTokenizer)

__all__ = ["MaskigeTokenizer", "MaskigeTokenizerOutput"]
