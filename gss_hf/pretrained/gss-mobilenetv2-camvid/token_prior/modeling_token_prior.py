"""A learned prior p(z) over the stage-I tokenizer's token grids, so that label maps can be generated and completed.

The paper's prior over tokens is uniform, which decodes to noise. `GSSTokenPriorModel` is a MaskGIT model instead: a
bidirectional transformer (transformers' BERT encoder) that predicts masked tokens of a grid from the others. It
samples grids by MaskGIT's iterative parallel decoding, and completes grids whose known tokens are fixed.

    token grid (batch, h, w) with [MASK]s ─▶ embeddings + positions ─▶ BERT encoder ─▶ LayerNorm ─▶ V logits

`sample_label_maps` and `complete_label_map` are the label-map level API: they paint, tokenise and decode through a
GSS tokenizer (any object with `encode`, `decode`, `codebook_size` and `token_stride`, e.g. a `MaskigeTokenizer`)
and read classes back by nearest palette colour.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, BertConfig, PreTrainedModel
from transformers import initialization as init
from transformers.models.bert.modeling_bert import BertEncoder
from transformers.utils import ModelOutput

from .configuration_token_prior import GSSTokenPriorConfig
from .maskige import IGNORE_INDEX, class_scores_nearest_color, maskige_from_labels, out_of_range_label_values
from .token_cross_entropy import check_positive_integer, check_sampling_arguments


@dataclass
class GSSTokenPriorOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Mean cross-entropy over the masked positions of `token_ids`, when `labels` are given.
        logits (`torch.FloatTensor` of shape `(batch, codebook_size, h, w)`):
            Scores of every code at every position.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


class GSSTokenPriorModel(PreTrainedModel):
    """MaskGIT's masked-token transformer over (batch, h, w) grids of `config.codebook_size` codes."""

    config_class = GSSTokenPriorConfig
    base_model_prefix = "token_prior"
    main_input_name = "token_ids"
    _supports_sdpa = True

    def __init__(self, config: GSSTokenPriorConfig):
        super().__init__(config)
        config.validate()
        self.token_embeddings = nn.Embedding(config.codebook_size + 1, config.hidden_size)
        # One learned vector per grid position (1-D over the raster order): the grid size is fixed by the config.
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_tokens, config.hidden_size))
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.encoder = BertEncoder(bert_encoder_config(config))
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = nn.Linear(config.hidden_size, config.codebook_size)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, GSSTokenPriorModel):
            init.normal_(module.position_embeddings, std=std)

    def forward(self, token_ids: torch.LongTensor, labels: torch.LongTensor | None = None) -> GSSTokenPriorOutput:
        """token_ids (batch, h, w): codes in 0..V-1 or `config.mask_token_id`; labels (batch, h, w): the complete
        grids. The loss is taken at the masked positions of `token_ids` only (MaskGIT's objective)."""
        self._check_grid(token_ids, "token_ids", allow_mask=True)
        batch, height, width = token_ids.shape
        hidden = self.token_embeddings(token_ids.reshape(batch, -1)) + self.position_embeddings
        hidden = self.encoder(self.embedding_dropout(hidden)).last_hidden_state
        logits = self.head(self.layer_norm(hidden))  # (batch, h * w, V)
        loss = None
        if labels is not None:
            self._check_grid(labels, "labels", allow_mask=False)
            if labels.shape != token_ids.shape:
                raise ValueError(
                    f"`labels` {tuple(labels.shape)} must have the shape of `token_ids` {tuple(token_ids.shape)}."
                )
            masked = token_ids.reshape(batch, -1) == self.config.mask_token_id
            if not masked.any():
                raise ValueError("`token_ids` has no [MASK] token: the loss is taken at masked positions only.")
            loss = nn.functional.cross_entropy(logits[masked], labels.reshape(batch, -1)[masked])
        logits = logits.transpose(1, 2).reshape(batch, self.config.codebook_size, height, width)
        return GSSTokenPriorOutput(loss=loss, logits=logits)

    @torch.no_grad()
    def generate(
        self,
        num_samples: int,
        num_steps: int = 8,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        known_token_ids: torch.LongTensor | None = None,
        known_mask: torch.BoolTensor | None = None,
    ) -> torch.LongTensor:
        """MaskGIT's iterative parallel decoding: (num_samples, h, w) codes in 0..V-1.

        All unknown tokens start masked. At step t of T every masked token is drawn from softmax(logits /
        temperature); the most confident draws are kept and the other cos(pi/2 (t+1)/T) of the unknown tokens
        masked again, confidence being the draw's log-probability plus Gumbel noise scaled by temperature (1 -
        (t+1)/T), which lets early steps explore. `known_token_ids` (num_samples or 1, h, w) at `known_mask` (same
        shape, bool) are fixed throughout. Deterministic for a seeded `generator` (on the model's device) in eval
        mode.
        """
        check_sampling_arguments(num_samples, temperature)
        check_positive_integer(num_steps, "num_steps")
        config = self.config
        shape = (num_samples, config.grid_height, config.grid_width)
        token_ids = torch.full(shape, config.mask_token_id, dtype=torch.long, device=self.device)
        if (known_token_ids is None) != (known_mask is None):
            raise ValueError("Give both `known_token_ids` and `known_mask`, or neither.")
        if known_mask is not None:
            known_token_ids, known_mask = self._check_known(known_token_ids, known_mask, num_samples)
            token_ids = torch.where(known_mask, known_token_ids, token_ids)
        flat = token_ids.reshape(num_samples, -1)
        num_unknown = (flat == config.mask_token_id).sum(dim=1)
        for step in range(num_steps):
            masked = flat == config.mask_token_id
            log_probs = torch.log_softmax(self(flat.reshape(shape)).logits.float() / temperature, dim=1)
            log_probs = log_probs.reshape(num_samples, config.codebook_size, -1).transpose(1, 2)  # (n, h*w, V)
            draws = torch.multinomial(log_probs.exp().reshape(-1, config.codebook_size), 1, generator=generator)
            draws = draws.reshape(num_samples, -1)
            confidence = log_probs.gather(2, draws[..., None])[..., 0]
            progress = (step + 1) / num_steps
            noise = gumbel_noise(confidence.shape, generator, flat.device)
            confidence = confidence + temperature * (1 - progress) * noise
            confidence = confidence.masked_fill(~masked, math.inf)  # what is decided stays decided
            filled = torch.where(masked, draws, flat)
            num_remasked = (num_unknown * math.cos(math.pi / 2 * progress)).floor().long()
            num_remasked = torch.minimum(num_remasked, masked.sum(dim=1) - 1).clamp(min=0)
            ranks = confidence.argsort(dim=1).argsort(dim=1)
            flat = filled.masked_fill(ranks < num_remasked[:, None], config.mask_token_id)
        return flat.reshape(shape)

    def _check_grid(self, token_ids: torch.Tensor, name: str, allow_mask: bool) -> None:
        config = self.config
        if not isinstance(token_ids, torch.Tensor) or token_ids.dtype != torch.int64:
            raise TypeError(f"`{name}` must be an int64 tensor of token ids.")
        grid = (config.grid_height, config.grid_width)
        if token_ids.ndim != 3 or tuple(token_ids.shape[1:]) != grid or token_ids.shape[0] == 0:
            raise ValueError(f"`{name}` must have shape (batch, {grid[0]}, {grid[1]}), got {tuple(token_ids.shape)}.")
        top = config.codebook_size if allow_mask else config.codebook_size - 1
        if token_ids.min() < 0 or token_ids.max() > top:
            raise ValueError(
                f"`{name}` must hold codes in 0..{config.codebook_size - 1}"
                + (f" or the mask token {config.mask_token_id}" if allow_mask else "")
                + f", got values in {int(token_ids.min())}..{int(token_ids.max())}."
            )

    def _check_known(
        self, known_token_ids: torch.Tensor, known_mask: torch.Tensor, num_samples: int
    ) -> tuple[torch.LongTensor, torch.BoolTensor]:
        """Both broadcast to (num_samples, h, w), after checking their shapes, dtypes and codes."""
        if not isinstance(known_mask, torch.Tensor) or known_mask.dtype != torch.bool:
            raise TypeError("`known_mask` must be a bool tensor, True where the token is given.")
        self._check_grid(known_token_ids, "known_token_ids", allow_mask=False)
        shape = (num_samples, self.config.grid_height, self.config.grid_width)
        for name, value in (("known_token_ids", known_token_ids), ("known_mask", known_mask)):
            if value.shape[0] not in (1, num_samples) or tuple(value.shape[1:]) != shape[1:]:
                raise ValueError(
                    f"`{name}` must have shape (1 or {num_samples}, {shape[1]}, {shape[2]}), got {tuple(value.shape)}."
                )
        return known_token_ids.to(self.device).expand(shape), known_mask.to(self.device).expand(shape)


def bert_encoder_config(config: GSSTokenPriorConfig) -> BertConfig:
    """The `BertConfig` of the prior's encoder layers: bidirectional (not a decoder), the prior's sizes and the
    attention implementation transformers chose for the prior."""
    return BertConfig(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_dropout_prob,
        layer_norm_eps=config.layer_norm_eps,
        is_decoder=False,
        attn_implementation=config._attn_implementation,
    )


def mask_random_tokens(
    token_ids: torch.LongTensor, mask_token_id: int, generator: torch.Generator | None = None
) -> torch.LongTensor:
    """MaskGIT's training input: per grid, a ratio r = cos(pi/2 u), u ~ U(0, 1), of its tokens (at least one)
    replaced by `mask_token_id`. (batch, h, w) -> (batch, h, w); the model learns the originals back (`forward`'s
    `labels`). Uses the global RNG without `generator`, so that a resumed training run draws the same masks."""
    batch = token_ids.shape[0]
    num_tokens = token_ids[0].numel()
    ratios = torch.cos(math.pi / 2 * torch.rand(batch, generator=generator, device=token_ids.device))
    counts = (ratios * num_tokens).ceil().clamp(min=1)
    scores = torch.rand(batch, num_tokens, generator=generator, device=token_ids.device)
    ranks = scores.argsort(dim=1).argsort(dim=1)  # a uniformly random order of each grid's positions
    return token_ids.masked_fill((ranks < counts[:, None]).reshape(token_ids.shape), mask_token_id)


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard Gumbel samples -log(-log U), U ~ U(0, 1) kept off 0 and 1."""
    uniform = torch.rand(shape, generator=generator, device=device).clamp(1e-20, 1 - 1e-7)
    return -torch.log(-torch.log(uniform))


# ----------------------------------------------------------------------------------------------------------------
# Label maps: the user-facing API
# ----------------------------------------------------------------------------------------------------------------
def check_prior_matches_tokenizer(token_prior: GSSTokenPriorModel, tokenizer) -> tuple[int, int]:
    """Raises unless the prior models this tokenizer's codes; returns the (H, W) label-map size of the prior's grid."""
    if token_prior.config.codebook_size != tokenizer.codebook_size:
        raise ValueError(
            f"The token prior models {token_prior.config.codebook_size} codes, but the tokenizer has "
            f"{tokenizer.codebook_size}: the prior must be trained on this tokenizer's tokens."
        )
    stride = tokenizer.token_stride
    return token_prior.config.grid_height * stride, token_prior.config.grid_width * stride


def labels_from_maskige(maskige: torch.Tensor, palette) -> torch.LongTensor:
    """(batch, 3, H, W) maskige -> (batch, H, W) int64 ids of the nearest palette colours."""
    return class_scores_nearest_color(maskige, palette).argmax(dim=1)


@torch.no_grad()
def sample_label_maps(
    token_prior: GSSTokenPriorModel,
    tokenizer,
    palette,
    num_samples: int,
    num_steps: int = 8,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.LongTensor, torch.Tensor]:
    """Label maps drawn from the prior: token grids by `generate`, decoded by `tokenizer`, read by nearest colour.

    Returns (num_samples, H, W) int64 class ids in 0..K-1 (K = len(palette)) and their (num_samples, 3, H, W) uint8
    maskiges, H x W being the prior's grid times the tokenizer's token stride."""
    check_prior_matches_tokenizer(token_prior, tokenizer)
    token_ids = token_prior.generate(num_samples, num_steps, temperature, generator)
    maskige = tokenizer.decode(token_ids)
    return labels_from_maskige(maskige, palette), maskige.round().clamp(0, 255).to(torch.uint8)


ERASABLE_REGIONS = ("centre box", "right half", "bottom half")


def known_outside_region(shape: tuple[int, int], region: str) -> torch.BoolTensor:
    """The `known` mask of `complete_label_map` for a map of (H, W) `shape` erased in a named region: "centre box"
    (half the height and width, centred), "right half" or "bottom half". (H, W) bool, True outside the region."""
    height, width = shape
    known = torch.ones(shape, dtype=torch.bool)
    if region == "centre box":
        known[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = False
    elif region == "right half":
        known[:, width // 2 :] = False
    elif region == "bottom half":
        known[height // 2 :] = False
    else:
        raise ValueError(f"No erasable region {region!r}; the regions are {', '.join(ERASABLE_REGIONS)}.")
    return known


@torch.no_grad()
def complete_label_map(
    token_prior: GSSTokenPriorModel,
    tokenizer,
    palette,
    ignore_color,
    label_map: torch.Tensor,
    known: torch.Tensor,
    num_steps: int = 8,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.LongTensor:
    """Fills the unknown region of a label map consistently with the known one (mask inpainting).

    `label_map` (H, W) integer class ids (only the known pixels are read; they may be `ignore_index`) and `known`
    (H, W) bool, True where the label is given. The map is painted and tokenised; tokens whose token_stride x
    token_stride patch is wholly known are fixed and the rest generated by the prior. Returns the (H, W) int64
    completed map: the known pixels exactly as given, the others decoded classes in 0..K-1.
    """
    size = check_prior_matches_tokenizer(token_prior, tokenizer)
    if not isinstance(label_map, torch.Tensor) or label_map.dtype.is_floating_point or label_map.dtype == torch.bool:
        raise TypeError("`label_map` must be an integer tensor of class ids.")
    if tuple(label_map.shape) != size:
        raise ValueError(
            f"`label_map` must be {size[0]}x{size[1]} (the prior's {token_prior.config.grid_height}x"
            f"{token_prior.config.grid_width} grid x the token stride {tokenizer.token_stride}), got "
            f"{tuple(label_map.shape)}."
        )
    if not isinstance(known, torch.Tensor) or known.dtype != torch.bool:
        raise TypeError("`known` must be a bool tensor, True where the label is given.")
    if known.shape != label_map.shape:
        raise ValueError(f"`known` must have the label map's shape {size}, got {tuple(known.shape)}.")
    num_classes = len(palette)
    bad = out_of_range_label_values(label_map[known], num_classes, ignore_index)
    if bad:
        raise ValueError(
            f"`label_map` holds values {bad} at known pixels, outside the {num_classes} classes "
            f"(0..{num_classes - 1}) and different from the ignore index {ignore_index}."
        )
    device = token_prior.device
    label_map, known = label_map.to(device).long(), known.to(device)
    painted = label_map.masked_fill(~known, ignore_index)[None]
    token_ids = tokenizer.encode(maskige_from_labels(painted, palette, ignore_color, ignore_index))
    stride = tokenizer.token_stride
    grid = (token_prior.config.grid_height, token_prior.config.grid_width)
    known_tokens = known.reshape(grid[0], stride, grid[1], stride).all(dim=3).all(dim=1)[None]
    token_ids = token_prior.generate(1, num_steps, temperature, generator, token_ids, known_tokens)
    generated = labels_from_maskige(tokenizer.decode(token_ids), palette)[0]
    return torch.where(known, label_map, generated)


AutoModel.register(GSSTokenPriorConfig, GSSTokenPriorModel, exist_ok=True)
GSSTokenPriorModel.register_for_auto_class("AutoModel")

__all__ = [
    "GSSTokenPriorConfig",
    "GSSTokenPriorModel",
    "GSSTokenPriorOutput",
    "complete_label_map",
    "known_outside_region",
    "mask_random_tokens",
    "sample_label_maps",
]
