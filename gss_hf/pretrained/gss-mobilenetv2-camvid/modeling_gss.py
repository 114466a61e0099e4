"""GSSForSemanticSegmentation: segmentation as image-conditioned maskige generation (spec §2-4).

    photo ─▶ backbone ─▶ prior head ─▶ token logits (V, h, w) ─argmax─▶ tokens ─▶ tokenizer.decode ─▶ maskige
                    └──▶ auxiliary head (K classes)                                          X^-1 ─▶ class logits

`forward` with labels returns the stage-II loss: the prior learns the tokens the frozen tokenizer assigns to the
painted label map. Which parts train in which stage is the training scripts' choice, as in diffusers (stage III
trains only `model.inverse`, on the maskiges the frozen model predicts); the model only keeps frozen what its own
loss never trains.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForSemanticSegmentation, PreTrainedModel
from transformers import initialization as init
from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES
from transformers.models.swin.modeling_swin import SwinRelativePositionBias
from transformers.utils import ModelOutput, logging

from .configuration_gss import GSSConfig
from .maskige import check_labels, paint_maskige, upsample_labels_2x
from .modeling_dalle_dvae import DalleTokenizer  # noqa: F401  (registers tokenizer_type "dalle")
from .modeling_gss_inverse import build_inverse
from .modeling_gss_prior import GSSAuxiliaryHead, GSSBackbone, GSSPriorHead
from .modeling_gss_tokenizer import GSSTokenizer, build_tokenizer
from .modeling_maskige_tokenizer import MaskigeTokenizer  # noqa: F401  (registers tokenizer_type "vqmodel")
from .token_cross_entropy import (
    TOKEN_IGNORE_INDEX,
    chunked_token_argmax,
    check_sampling_arguments,
    chunked_token_cross_entropy,
    chunked_token_sample,
)


logger = logging.get_logger(__name__)

# ImageNet-normalised photos lie within about [-2.2, 2.7]; far beyond that, the photo was almost surely not
# normalised (for example 0..255 values), which silently gives nonsense.
NORMALISED_PIXEL_LIMIT = 20.0


@dataclass
class GSSSemanticSegmenterOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            The stage-II loss: `token_loss_weight` x token cross-entropy + `auxiliary_loss_weight` x auxiliary pixel
            cross-entropy (with a sliding window in eval mode, the mean of the crops' losses).
        logits (`torch.FloatTensor` of shape `(batch, num_labels, height, width)`):
            Class scores from X^-1 at the input's resolution (for the nearest colour: minus squared RGB distances).
            Not computed in training mode with labels, where only the loss is needed.
        maskige (`torch.FloatTensor` of shape `(batch, 3, height, width)`):
            The predicted maskige, colours in 0..255.
        token_ids (`torch.LongTensor` of shape `(batch, h, w)`):
            The argmax token of every cell of the token grid, h = ceil(height / token_stride) and
            w = ceil(width / token_stride) (whole-image inference only).
        token_logits (`torch.FloatTensor` of shape `(batch, codebook_size, h, w)`):
            The prior's V-way logits, only when asked for with `output_token_logits=True` (they take
            codebook_size x 4 bytes per token).
        auxiliary_logits (`torch.FloatTensor` of shape `(batch, num_labels, h, w)`):
            The auxiliary head's class logits on the token grid (whole-image passes only; None without an
            auxiliary head, `config.use_auxiliary_head=False`).
        token_loss (`torch.FloatTensor` of shape `()`, *optional*):
            The unweighted token cross-entropy (with labels).
        auxiliary_loss (`torch.FloatTensor` of shape `()`, *optional*):
            The unweighted auxiliary cross-entropy (with labels).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    maskige: torch.FloatTensor | None = None
    token_ids: torch.LongTensor | None = None
    token_logits: torch.FloatTensor | None = None
    auxiliary_logits: torch.FloatTensor | None = None
    token_loss: torch.FloatTensor | None = None
    auxiliary_loss: torch.FloatTensor | None = None


@dataclass
class GSSSamplingOutput(ModelOutput):
    """
    What `GSSForSemanticSegmentation.sample` returns; every map is at the input's resolution.

    Args:
        samples (`torch.LongTensor` of shape `(batch, num_samples, height, width)`):
            The class ids of each sampled segmentation: token grids drawn from the prior, decoded, read by X^-1.
        prediction (`torch.LongTensor` of shape `(batch, height, width)`):
            The usual prediction (argmax tokens), `forward(...).logits.argmax(1)`.
        majority_vote (`torch.LongTensor` of shape `(batch, height, width)`):
            The class most samples give each pixel (the lowest id on a tie).
        uncertainty (`torch.FloatTensor` of shape `(batch, height, width)`):
            The entropy (nats) of the samples' class frequencies at each pixel: 0 where all samples agree, at most
            log(min(num_samples, num_labels)).
        token_entropy (`torch.FloatTensor` of shape `(batch, height, width)`):
            A single-pass alternative: the entropy (nats) of the prior's token distribution (at the same
            temperature and top-k), each token's value spread over its patch.
        class_uncertainty (`torch.FloatTensor` of shape `(batch, height, width)`):
            The other single-pass alternative: 1 - the probability of the predicted class under the prior's token
            distributions, read through `code_class_patterns` (many codes paint the same classes, so the token
            entropy overstates what is in doubt).
        logits (`torch.FloatTensor` of shape `(batch, num_labels, height, width)`):
            The class scores of the usual prediction.
        maskige (`torch.FloatTensor` of shape `(batch, 3, height, width)`):
            The maskige of the usual prediction, colours in 0..255.
    """

    samples: torch.LongTensor | None = None
    prediction: torch.LongTensor | None = None
    majority_vote: torch.LongTensor | None = None
    uncertainty: torch.FloatTensor | None = None
    token_entropy: torch.FloatTensor | None = None
    class_uncertainty: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    maskige: torch.FloatTensor | None = None


class GSSPreTrainedModel(PreTrainedModel):
    """Weight initialisation of GSS models."""

    config_class = GSSConfig
    base_model_prefix = "gss"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        """Truncated-normal convolutions and linears, unit norms, and Swin's relative position tables.

        The tokenizer is never touched (its modules are flagged as initialised, see `MaskigeTokenizer`), and the
        backbone, a transformers model of its own, is initialised by its own class.
        """
        std = self.config.initializer_range
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm2d, nn.LayerNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, SwinRelativePositionBias):
            init.trunc_normal_(module.relative_position_bias_table, std=0.02)
            init.copy_(module.relative_position_index, module._create_relative_position_index().view(-1))


class GSSForSemanticSegmentation(GSSPreTrainedModel):
    """Generative Semantic Segmentation: backbone + prior head predict maskige tokens, a frozen VQ tokenizer
    decodes them, X^-1 turns the maskige into class scores."""

    def __init__(self, config: GSSConfig):
        super().__init__(config)
        config.validate()
        self.backbone = GSSBackbone(config)
        self.prior_head = GSSPriorHead(config, self.backbone.channels)
        # None without `config.use_auxiliary_head` (converted official GSS-FT-W models, which have none).
        self.auxiliary_head = GSSAuxiliaryHead(config, self.backbone.channels) if config.use_auxiliary_head else None
        self.tokenizer = build_tokenizer(config)
        self.inverse = build_inverse(config)
        self.freeze_untrained_parts()
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, strict: bool = True, **kwargs):
        """transformers' `from_pretrained`, but a checkpoint must hold exactly this model's weights.

        A missing key would leave a module randomly initialised (or, for the tokenizer, uninitialised), a key of
        another shape (loaded with `ignore_mismatched_sizes=True`, which transformers' own error message suggests)
        is re-initialised at random, and an unexpected key means the checkpoint belongs to another architecture:
        each silently gives a model that scores near zero, as happened with the official code. All raise here;
        `strict=False` downgrades them to a loud warning (to start from a checkpoint whose heads differ), except
        for the tokenizer, which is never re-initialised: a GSS model cannot train its own.
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        missing = sorted(loading_info["missing_keys"])
        mismatched = {
            key: (tuple(saved), tuple(built)) for key, saved, built in sorted(loading_info.get("mismatched_keys", []))
        }
        problems = []
        if missing:
            problems.append(f"missing keys (left untrained): {missing}")
        if mismatched:
            problems.append(f"keys of another size (checkpoint, model), re-initialised: {mismatched}")
        if loading_info["unexpected_keys"]:
            problems.append(f"unexpected keys (ignored): {sorted(loading_info['unexpected_keys'])}")
        if problems:
            message = (
                f"The checkpoint does not match {cls.__name__} as configured: " + "; ".join(problems) + "."
            )
            if any(key.startswith("tokenizer.") for key in [*missing, *mismatched]):
                raise ValueError(
                    message + " A GSS checkpoint must contain its tokenizer, with the config's settings (see "
                    "`load_tokenizer`)."
                )
            if strict:
                raise ValueError(message + " Pass `strict=False` to load it anyway.")
            logger.warning(message)
        model.freeze_untrained_parts()
        return (model, loading_info) if output_loading_info else model

    # ------------------------------------------------------------------------------------------------------------
    # Parts
    # ------------------------------------------------------------------------------------------------------------
    def load_tokenizer(self, tokenizer: GSSTokenizer) -> None:
        """Copies a stage-I tokenizer's weights in; it must be of this config's `tokenizer_type` and settings."""
        if not isinstance(tokenizer, type(self.tokenizer)):
            raise TypeError(
                f"The tokenizer is a {type(tokenizer).__name__}, but `config.tokenizer_type` "
                f"{self.config.tokenizer_type!r} builds a {type(self.tokenizer).__name__}."
            )
        if tokenizer.codebook_size != self.config.codebook_size:
            raise ValueError(
                f"The tokenizer has {tokenizer.codebook_size} codes but `config.codebook_size` is "
                f"{self.config.codebook_size}: the prior's classifier would predict the wrong codebook."
            )
        tokenizer.check_compatible(self.config)
        self.tokenizer.load_state_dict(tokenizer.state_dict(), strict=True)

    def set_inverse(self, inverse_type: str) -> None:
        """Replaces X^-1 by a freshly initialised one of `inverse_type` and records it in the config, for example
        to give a GSS-FF model the learned X^-1 that stage III trains, or to read a GSS-FT-W model by nearest colour.
        The new X^-1 starts frozen, like every part the model's own loss does not train."""
        self.config.inverse_type = inverse_type
        parameter = next(self.parameters())
        self.inverse = build_inverse(self.config).to(device=parameter.device, dtype=parameter.dtype)
        self.inverse.apply(self._init_weights)
        self.inverse.requires_grad_(False)
        self.inverse.train(self.training)

    def freeze_untrained_parts(self) -> None:
        """Turns gradients off for everything the stage-II loss of `forward` never trains, so that optimisers and
        DDP see only trained parameters: the tokenizer, unused backbone layers and X^-1 (stage III unfreezes
        `model.inverse` itself). Loading re-applies it (loading gives fresh parameters)."""
        self.requires_grad_(True)
        self.tokenizer.requires_grad_(False)
        self.inverse.requires_grad_(False)
        for parameter in self.backbone.unused_parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> "GSSForSemanticSegmentation":
        """Like `nn.Module.train`, but the tokenizer, which a GSS model never trains, stays in eval mode."""
        super().train(mode)
        self.tokenizer.eval()
        return self

    # ------------------------------------------------------------------------------------------------------------
    # Forward
    # ------------------------------------------------------------------------------------------------------------
    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        sliding_window: bool | None = None,
        output_token_logits: bool = False,
        return_dict: bool | None = None,
    ) -> GSSSemanticSegmenterOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch, 3, height, width)`):
                Normalised photos (see `GSSImageProcessor`).
            labels (`torch.LongTensor` of shape `(batch, height, width)`, *optional*):
                Class ids in 0..num_labels-1, `config.ignore_index` for unlabelled pixels. Height and width (and the
                sliding window's crops) must be multiples of `config.token_stride` (the tokenizer's grid).
            sliding_window (`bool`, *optional*):
                Inference on overlapping crops instead of the whole image; defaults to `config.sliding_window`.
                In training mode with labels nothing is predicted, so it changes nothing.
            output_token_logits (`bool`, *optional*, defaults to `False`):
                Also return the (batch, codebook_size, h, w) token logits (whole-image inference only).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        sliding_window = self.config.sliding_window if sliding_window is None else sliding_window
        pixel_values = self._check_pixel_values(pixel_values)
        if labels is not None:
            self._check_labels_match(labels, pixel_values)
        if output_token_logits and sliding_window:
            raise ValueError("`output_token_logits` is only available with whole-image inference.")

        if labels is not None and self.training:
            token_features, auxiliary_logits = self._prior(pixel_values)
            loss, token_loss, auxiliary_loss = self._prior_loss(token_features, auxiliary_logits, labels)
            output = GSSSemanticSegmenterOutput(
                loss=loss, token_loss=token_loss, auxiliary_loss=auxiliary_loss, auxiliary_logits=auxiliary_logits
            )
        elif sliding_window:
            output = self._predict_sliding_window(pixel_values, labels)
        else:
            output = self._predict_whole(pixel_values, labels, output_token_logits)
        return output if return_dict else output.to_tuple()

    def _prior(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Photos (batch, 3, H, W) -> token features (batch, prior_classifier_channels, h, w) and auxiliary logits
        (batch, num_labels, h, w) on the token grid, h = ceil(H / token_stride), w = ceil(W / token_stride)."""
        height, width = pixel_values.shape[-2:]
        stride = self.config.token_stride
        grid = (-(-height // stride), -(-width // stride))
        features = self.backbone(pixel_values)
        auxiliary_logits = None if self.auxiliary_head is None else self.auxiliary_head(features, grid)
        return self.prior_head(features, grid), auxiliary_logits

    def _prior_loss(
        self, token_features: torch.Tensor, auxiliary_logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage II loss (total, token, auxiliary): token cross-entropy against the tokenised (filled) label map and
        auxiliary pixel cross-entropy, each averaged over its non-ignored entries (the tokens' mean weighted by
        `token_loss_weights` when `config.token_loss_class_weights` is set). On the "official_2x" route both
        use the label map up-sampled 2x, the maskige size, as the official code does."""
        config = self.config
        if config.maskige_route == "official_2x":
            labels = upsample_labels_2x(labels)
        upsampled = nn.functional.interpolate(auxiliary_logits, size=labels.shape[-2:], mode="bilinear")
        auxiliary_loss = masked_cross_entropy(upsampled, labels, config.ignore_index)
        targets = self.token_targets(labels, upsampled.argmax(dim=1))
        token_weights = self.token_loss_weights(labels)
        weight, bias = self.prior_head.classifier_weight_and_bias
        token_loss = chunked_token_cross_entropy(
            token_features, weight, bias, targets, config.token_chunk_size, token_weights=token_weights
        )
        loss = self.config.token_loss_weight * token_loss + self.config.auxiliary_loss_weight * auxiliary_loss
        return loss, token_loss, auxiliary_loss

    @torch.no_grad()
    def token_loss_weights(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Each token's weight in the token loss, from `config.token_loss_class_weights` (None when unset).

        Rare classes own rare codes, which a plain mean over tokens seldom trains: a token weighs the largest class
        weight among the labelled pixels of its patch (`config.tokenizer_stride` pixels square), so a patch touched
        by a thin rare class weighs as that class does. A patch without labelled pixels weighs 1 (its token is a
        target only with `fill_unlabelled_with_auxiliary` off).

        Args:
            labels: (batch, H, W) class ids or `config.ignore_index`, the map the targets come from (H and W
                multiples of `config.tokenizer_stride`).

        Returns:
            (batch, H / tokenizer_stride, W / tokenizer_stride) float32 weights, or None.
        """
        config = self.config
        if config.token_loss_class_weights is None:
            return None
        class_weights = torch.tensor(config.token_loss_class_weights, dtype=torch.float32, device=labels.device)
        labelled = labels != config.ignore_index
        # Unlabelled pixels take -1, below every (non-negative) class weight, so the patch maximum ignores them.
        pixel_weights = torch.where(labelled, class_weights[torch.where(labelled, labels, 0).long()], -1.0)
        patch_weights = nn.functional.max_pool2d(pixel_weights[:, None], config.tokenizer_stride)[:, 0]
        return torch.where(patch_weights < 0, 1.0, patch_weights)

    @torch.no_grad()
    def token_targets(self, labels: torch.Tensor, fill: torch.Tensor) -> torch.LongTensor:
        """The prior's target tokens for label maps (spec §4, "unlabelled area auxiliary").

        See `fill_unlabelled_pixels`: the tokenizer sees the label map completed by `fill` wherever a token has
        labelled pixels, so the prior is never taught to "predict unlabelled"; a token is ignored only when its
        whole patch (`config.tokenizer_stride` pixels square) is unlabelled. With
        `config.fill_unlabelled_with_auxiliary` off (the ablation) the map is tokenised as painted, ignore colour
        included, and no token is ignored.

        Args:
            labels: (batch, H, W) class ids or `config.ignore_index`, already checked by `forward`, at the
                tokenizer's resolution (up-sampled 2x on the "official_2x" route).
            fill: (batch, H, W) class ids (the auxiliary head's argmax) for the unlabelled pixels.

        Returns:
            (batch, H / tokenizer_stride, W / tokenizer_stride) codebook indices, `TOKEN_IGNORE_INDEX` (-100) where
            ignored.
        """
        config = self.config
        if not config.fill_unlabelled_with_auxiliary:
            painted = paint_maskige(labels, config.palette, config.ignore_color, config.ignore_index)
            return self.tokenizer.encode(painted)
        filled, fully_unlabelled = fill_unlabelled_pixels(
            labels, fill, config.tokenizer_stride, config.ignore_index,
            fill_unlabelled_patches=config.maskige_route == "official_2x",
        )  # fmt: skip
        maskige = paint_maskige(filled, config.palette, config.ignore_color, config.ignore_index)
        return self.tokenizer.encode(maskige).masked_fill(fully_unlabelled, TOKEN_IGNORE_INDEX)

    # ------------------------------------------------------------------------------------------------------------
    # Inference
    # ------------------------------------------------------------------------------------------------------------
    def _predict_whole(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None, output_token_logits: bool
    ) -> GSSSemanticSegmenterOutput:
        """One pass of the prior over the whole image: the prediction and, with labels, the loss."""
        token_features, auxiliary_logits = self._prior(pixel_values)
        output = self._decode_prior(token_features, auxiliary_logits, pixel_values.shape[-2:], output_token_logits)
        if labels is not None:
            output.loss, output.token_loss, output.auxiliary_loss = self._prior_loss(
                token_features, auxiliary_logits, labels
            )
        return output

    @torch.no_grad()
    def generate_maskige(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The maskige the prior predicts for whole photos, without X^-1: what stage III trains the learned X^-1 on.

        (batch, 3, H, W) -> (batch, 3, H', W'), colours in 0..255, as the tokenizer decodes it: H' = h x
        `tokenizer_stride` for the h x w token grid, so the photo's size on the "direct" route (rounded up to the
        token stride) and twice it on "official_2x". X^-1 runs at this size and its scores are resized to the photo
        (`resize_scores`), in training as in inference, which is the official GSS-FT-W function."""
        pixel_values = self._check_pixel_values(pixel_values)
        token_features, _ = self._prior(pixel_values)
        return self.tokenizer.decode(self._argmax_tokens(token_features))

    def _argmax_tokens(self, token_features: torch.Tensor) -> torch.LongTensor:
        weight, bias = self.prior_head.classifier_weight_and_bias
        return chunked_token_argmax(token_features, weight, bias, self.config.token_chunk_size)

    def _decode_prior(
        self,
        token_features: torch.Tensor,
        auxiliary_logits: torch.Tensor,
        size: tuple[int, int],
        output_token_logits: bool,
    ) -> GSSSemanticSegmenterOutput:
        """Token features -> argmax tokens -> maskige -> class scores, resized to `size` if the grid overshoots."""
        token_ids = self._argmax_tokens(token_features)
        token_logits = self.prior_head.classifier(token_features) if output_token_logits else None
        maskige = self.tokenizer.decode(token_ids)
        logits = self.inverse(maskige)
        maskige, logits = resize_scores(maskige, size), resize_scores(logits, size)
        return GSSSemanticSegmenterOutput(
            logits=logits,
            maskige=maskige,
            token_ids=token_ids,
            token_logits=token_logits,
            auxiliary_logits=auxiliary_logits,
        )

    def _predict_sliding_window(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None
    ) -> GSSSemanticSegmenterOutput:
        """Crops of `sliding_window_crop_size` every `sliding_window_stride` pixels, run in batches; the class
        scores and maskige colours of overlapping crops are averaged. With labels, each crop's prior pass also
        gives that crop's loss, and the losses are the mean over crops."""
        losses = []

        def predict_crops(crops: torch.Tensor, regions: list) -> dict:
            crop_labels = None if labels is None else torch.cat([labels[region] for region in regions])
            prediction = self._predict_whole(crops, crop_labels, output_token_logits=False)
            if labels is not None:
                losses.append(torch.stack([prediction.loss, prediction.token_loss, prediction.auxiliary_loss]))
            return {"logits": prediction.logits, "maskige": prediction.maskige}

        output = GSSSemanticSegmenterOutput(**self._average_over_windows(pixel_values, predict_crops))
        if losses:
            output.loss, output.token_loss, output.auxiliary_loss = torch.stack(losses).mean(0)
        return output

    def _average_over_windows(self, pixel_values: torch.Tensor, predict_crops) -> dict[str, torch.Tensor]:
        """The sliding window's one rule: `predict_crops(crops, regions)` maps a batch of crops (the photos' crops
        at `regions`, window-major) to a dict of (len(regions) x batch, ..., crop_height, crop_width) maps; each map
        comes back as (batch, ..., height, width), the mean over the windows that cover each pixel."""
        batch, _, height, width = pixel_values.shape
        crop_height = min(self.config.sliding_window_crop_size, height)
        crop_width = min(self.config.sliding_window_crop_size, width)
        windows = [
            (top, left)
            for top in _window_starts(height, crop_height, self.config.sliding_window_stride)
            for left in _window_starts(width, crop_width, self.config.sliding_window_stride)
        ]
        sums = {}
        votes = pixel_values.new_zeros(height, width)
        crops_per_run = max(1, self.config.sliding_window_batch_size // batch)
        for first in range(0, len(windows), crops_per_run):
            group = windows[first : first + crops_per_run]
            regions = [(..., slice(top, top + crop_height), slice(left, left + crop_width)) for top, left in group]
            maps = predict_crops(torch.cat([pixel_values[region] for region in regions]), regions)
            for name, crop_maps in maps.items():
                if name not in sums:
                    sums[name] = crop_maps.new_zeros(batch, *crop_maps.shape[1:-2], height, width)
                for index, region in enumerate(regions):
                    sums[name][region] += crop_maps[index * batch : (index + 1) * batch]
            for region in regions:
                votes[region] += 1
        return {name: total / votes for name, total in sums.items()}

    # ------------------------------------------------------------------------------------------------------------
    # Sampling
    # ------------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        pixel_values: torch.Tensor,
        num_samples: int = 8,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        sliding_window: bool | None = None,
        code_class_patterns: torch.LongTensor | None = None,
    ) -> GSSSamplingOutput:
        r"""Segmentations drawn from the prior instead of its argmax, and where they disagree.

        Each token is drawn independently from softmax(token logits / `temperature`) over its `top_k` most likely
        codes (chunk by chunk, never the full V-way logits of the image); each of the `num_samples` token grids is
        decoded and read by X^-1. The prior's one pass is shared by all samples, so a sample costs one decode.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch, 3, height, width)`): normalised photos.
            num_samples (`int`): segmentations drawn per photo, >= 1.
            temperature (`float`): > 0; lower is closer to the argmax, higher spreads the samples.
            top_k (`int`, *optional*): draw among the k most likely codes of each token, 1..codebook_size.
            generator (`torch.Generator`, *optional*): the same seeded generator gives the same samples.
            sliding_window (`bool`, *optional*): defaults to `config.sliding_window`; each sample's class scores
                are then averaged over overlapping crops before its argmax, as in `forward`.
            code_class_patterns (`torch.LongTensor`, *optional*): `self.code_class_patterns()`, computed once by
                callers that sample many photos (it decodes every code); computed here when not given.
        """
        self._check_sampling_arguments(num_samples, temperature, top_k)
        if code_class_patterns is None:
            code_class_patterns = self.code_class_patterns()
        sliding_window = self.config.sliding_window if sliding_window is None else sliding_window
        pixel_values = self._check_pixel_values(pixel_values)
        draw = {"num_samples": num_samples, "temperature": temperature, "top_k": top_k, "generator": generator,
                "code_class_patterns": code_class_patterns}  # fmt: skip
        if sliding_window:
            maps = self._average_over_windows(
                pixel_values, lambda crops, regions: self._sample_whole(crops, sample_scores=True, **draw)
            )
            maps["samples"] = maps.pop("sample_logits").argmax(dim=2)
        else:
            maps = self._sample_whole(pixel_values, sample_scores=False, **draw)
        samples = maps["samples"]
        counts = torch.zeros_like(maps["logits"]).scatter_add_(
            1, samples, torch.ones_like(samples, dtype=maps["logits"].dtype)
        )
        frequencies = counts / num_samples
        uncertainty = -(frequencies * frequencies.clamp(min=1e-12).log()).sum(dim=1)
        prediction = maps["logits"].argmax(dim=1)
        class_uncertainty = 1.0 - maps["class_probabilities"].gather(1, prediction[:, None])[:, 0]
        return GSSSamplingOutput(
            samples=samples,
            prediction=prediction,
            majority_vote=counts.argmax(dim=1),
            uncertainty=uncertainty.clamp(min=0),
            token_entropy=maps["token_entropy"][:, 0],
            class_uncertainty=class_uncertainty.clamp(0.0, 1.0),
            logits=maps["logits"],
            maskige=maps["maskige"],
        )

    def _sample_whole(
        self,
        pixel_values: torch.Tensor,
        num_samples: int,
        temperature: float,
        top_k: int | None,
        generator: torch.Generator | None,
        code_class_patterns: torch.LongTensor,
        sample_scores: bool,
    ) -> dict[str, torch.Tensor]:
        """One prior pass, its argmax decode and `num_samples` sampled decodes at the input's size: "logits"
        (batch, K, H, W), "maskige" (batch, 3, H, W), "token_entropy" (batch, 1, H, W), "class_probabilities"
        (batch, K, H, W) and the samples, as class scores "sample_logits" (batch,
        num_samples, K, H, W) when `sample_scores` (to be averaged over windows first) or as class ids "samples"
        (batch, num_samples, H, W)."""
        size = pixel_values.shape[-2:]
        token_features, auxiliary_logits = self._prior(pixel_values)
        usual = self._decode_prior(token_features, auxiliary_logits, size, output_token_logits=False)
        weight, bias = self.prior_head.classifier_weight_and_bias
        draws = chunked_token_sample(
            token_features, weight, bias, num_samples, temperature, top_k, generator, self.config.token_chunk_size,
            code_classes=code_class_patterns, num_labels=self.config.num_labels,
        )  # fmt: skip
        stride = self.config.token_stride
        token_entropy = nn.functional.interpolate(draws.entropy[:, None], scale_factor=stride, mode="nearest")
        maps = {
            "logits": usual.logits,
            "maskige": usual.maskige,
            "token_entropy": resize_scores(token_entropy, size),
            "class_probabilities": resize_scores(draws.class_probabilities, size),
        }
        token_ids = draws.token_ids
        scores = [resize_scores(self.inverse(self.tokenizer.decode(token_ids[:, n])), size) for n in range(num_samples)]
        if sample_scores:
            maps["sample_logits"] = torch.stack(scores, dim=1)
        else:
            maps["samples"] = torch.stack([score.argmax(dim=1) for score in scores], dim=1)
        return maps

    @torch.no_grad()
    def code_class_patterns(self, context: int = 5, batch_size: int = 256) -> torch.LongTensor:
        """(codebook_size, s, s) the class X^-1 reads at each pixel of each code's decoded patch, s =
        `config.tokenizer_stride`: the centre token of a `context` x `context` grid of that one code (the decoder
        looks at neighbours, so a lone token would decode differently). It turns the prior's distribution over codes
        into one over classes (`sample`'s `class_uncertainty`); it decodes every code, so compute it once."""
        codebook_size, patch = self.tokenizer.codebook_size, self.config.tokenizer_stride
        device = next(self.parameters()).device
        centre = slice(context // 2 * patch, (context // 2 + 1) * patch)
        patterns = []
        for first in range(0, codebook_size, batch_size):
            codes = torch.arange(first, min(first + batch_size, codebook_size), device=device)
            grids = codes[:, None, None].expand(-1, context, context)
            patterns.append(self.inverse(self.tokenizer.decode(grids)).argmax(dim=1)[:, centre, centre])
        return torch.cat(patterns)

    def _check_sampling_arguments(self, num_samples: int, temperature: float, top_k: int | None) -> None:
        check_sampling_arguments(num_samples, temperature)
        codebook_size = self.tokenizer.codebook_size
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= codebook_size
        ):
            raise ValueError(f"`top_k` must be an integer in 1..{codebook_size} (the codebook size) or None, got {top_k!r}.")

    # ------------------------------------------------------------------------------------------------------------
    # Input checks
    # ------------------------------------------------------------------------------------------------------------
    def _check_pixel_values(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Validates the photos and casts floating ones to the model's dtype."""
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"`pixel_values` must be a torch.Tensor, got {type(pixel_values).__name__}.")
        if not pixel_values.is_floating_point():
            raise TypeError(
                f"`pixel_values` must be floating point (normalised photos), got {pixel_values.dtype}: preprocess "
                "images with GSSImageProcessor."
            )
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"`pixel_values` must have shape (batch, 3, height, width), got {tuple(pixel_values.shape)}: convert "
                "grey or RGBA images to RGB (GSSImageProcessor does)."
            )
        if pixel_values.shape[0] == 0:
            raise ValueError("`pixel_values` is an empty batch.")
        largest = float(pixel_values.abs().amax())  # the one host synchronisation of the checks
        if not math.isfinite(largest):
            raise ValueError(
                "`pixel_values` holds NaN or infinite values: the photos were not preprocessed correctly (see "
                "GSSImageProcessor); a prediction from them would be meaningless."
            )
        if largest > NORMALISED_PIXEL_LIMIT:
            logger.warning_once(
                f"`pixel_values` holds values beyond +-{NORMALISED_PIXEL_LIMIT:g}: the photos look un-normalised "
                "(for example 0..255); preprocess them with GSSImageProcessor."
            )
        return pixel_values.to(self.dtype)

    def _check_labels_match(self, labels: torch.Tensor, pixel_values: torch.Tensor) -> None:
        if self.auxiliary_head is None:
            raise ValueError(
                "This model has no auxiliary head (`config.use_auxiliary_head=False`, as for converted official "
                "GSS-FT-W models), and the stage-II loss needs one: call it without `labels`."
            )
        check_labels(labels, self.config.num_labels, self.config.ignore_index)
        if labels.shape != (pixel_values.shape[0], *pixel_values.shape[-2:]):
            raise ValueError(
                f"`labels` has shape {tuple(labels.shape)} but `pixel_values` is {tuple(pixel_values.shape)}: give "
                "one (height, width) label map per photo, at the photo's size."
            )
        height, width = pixel_values.shape[-2:]
        stride = self.config.token_stride
        if height % stride or width % stride:
            raise ValueError(
                f"With `labels`, height and width must be divisible by `token_stride` {stride} (the tokenizer's "
                f"grid), got {height}x{width}: crop or pad (labels with the ignore index) first."
            )


def masked_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Pixel cross-entropy averaged over labelled pixels; 0 (connected to the graph) when none is labelled,
    where `cross_entropy`'s mean would be NaN. Computed as a sum over a count, so that no host synchronisation is
    needed to tell the two cases apart. With `class_weights` it is the weighted mean: each pixel weighs its true
    class's weight (the mean that `cross_entropy(weight=...)` takes).

    Args:
        logits: (batch, K, H, W) class scores; labels: (batch, H, W) class ids or `ignore_index`.
        class_weights: optional (K,) non-negative weight of each class.
    """
    labelled = labels != ignore_index
    if class_weights is None:
        total = nn.functional.cross_entropy(logits.float(), labels.long(), ignore_index=ignore_index, reduction="sum")
        return total / labelled.sum().clamp(min=1)
    class_weights = class_weights.to(device=logits.device, dtype=torch.float32)
    total = nn.functional.cross_entropy(
        logits.float(), labels.long(), weight=class_weights, ignore_index=ignore_index, reduction="sum"
    )
    pixel_weights = class_weights[torch.where(labelled, labels, 0).long()] * labelled
    return total / pixel_weights.sum().clamp(min=torch.finfo(torch.float32).tiny)


def fill_unlabelled_pixels(
    labels: torch.Tensor, fill: torch.Tensor, patch_size: int, ignore_index: int, fill_unlabelled_patches: bool = False
) -> tuple[torch.Tensor, torch.BoolTensor]:
    """Completes label maps before they are tokenised.

    Unlabelled pixels of every token patch that has at least one labelled pixel take the `fill` class. Patches with
    no labelled pixel keep the ignore index (painted in the ignore colour, which the tokenizer was trained on)
    unless `fill_unlabelled_patches` (the official code's rule, route "official_2x"). Their tokens are ignored by
    the loss either way; gss_hf's own route leaves them unfilled because filling them makes the targets of *other*
    tokens depend on predictions inside wholly unlabelled areas (the tokenizer's receptive field and its GroupNorm
    statistics reach across the map).

    Args:
        labels: (batch, H, W) class ids or `ignore_index`; H and W multiples of `patch_size`.
        fill: (batch, H, W) class ids.
        patch_size: the side of one token's patch, the tokenizer's down-sampling factor.

    Returns:
        The filled (batch, H, W) labels and the (batch, H / patch_size, W / patch_size) mask of tokens whose patch
        is wholly unlabelled.
    """
    unlabelled = labels == ignore_index
    labelled_fraction = nn.functional.avg_pool2d((~unlabelled)[:, None].float(), patch_size)[:, 0]
    fully_unlabelled = labelled_fraction == 0
    to_fill = unlabelled
    if not fill_unlabelled_patches:
        to_fill = to_fill & ~fully_unlabelled.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)
    return torch.where(to_fill, fill.to(labels.dtype), labels), fully_unlabelled


def resize_scores(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Class scores or maskiges at the tokenizer's resolution to the photo's: (batch, channels, h, w) -> (batch,
    channels, *size), bilinear; unchanged when already of that size."""
    if maps.shape[-2:] == tuple(size):
        return maps
    return nn.functional.interpolate(maps, size=size, mode="bilinear")


def _window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of crops of size `crop` every `stride` pixels, the last one flush with the end."""
    count = max(length - crop + stride - 1, 0) // stride + 1
    return sorted({min(index * stride, length - crop) for index in range(count)})


AutoModelForSemanticSegmentation.register(GSSConfig, GSSForSemanticSegmentation, exist_ok=True)
GSSForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
# The image-segmentation pipeline checks the model against transformers' static name tables only, not against
# registered classes, and logs an error for anything else: GSS is listed there so that the pipeline accepts it.
MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES.setdefault(GSSConfig.model_type, GSSForSemanticSegmentation.__name__)

__all__ = [
    "GSSForSemanticSegmentation",
    "GSSPreTrainedModel",
    "GSSSamplingOutput",
    "GSSSemanticSegmenterOutput",
    "masked_cross_entropy",
    "resize_scores",
]
