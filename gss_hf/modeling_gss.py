"""GSSForSemanticSegmentation: segmentation as image-conditioned maskige generation (spec §2-4).

    photo ─▶ backbone ─▶ prior head ─▶ token logits (V, h, w) ─argmax─▶ tokens ─▶ tokenizer.decode ─▶ maskige
                    └──▶ auxiliary head (K classes)                                          X^-1 ─▶ class logits

Training (stage II) teaches the prior the tokens the frozen tokenizer assigns to the painted label map; stage III
(`freeze_for_inverse_training`) teaches only the learned X^-1, on the prior's predicted maskiges.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModelForSemanticSegmentation, PreTrainedModel
from transformers import initialization as init
from transformers.models.auto.modeling_auto import MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES
from transformers.models.swin.modeling_swin import SwinRelativePositionBias
from transformers.utils import ModelOutput, logging

from .configuration_gss import GSSConfig
from .maskige import check_labels, maskige_from_labels
from .modeling_gss_inverse import LearnedInverse, build_inverse
from .modeling_gss_prior import GSSAuxiliaryHead, GSSBackbone, GSSPriorHead
from .modeling_maskige_tokenizer import MaskigeTokenizer
from .token_cross_entropy import TOKEN_IGNORE_INDEX, chunked_token_argmax, chunked_token_cross_entropy


logger = logging.get_logger(__name__)

# ImageNet-normalised photos lie within about [-2.2, 2.7]; far beyond that, the photo was almost surely not
# normalised (for example 0..255 values), which silently gives nonsense.
NORMALISED_PIXEL_LIMIT = 20.0


@dataclass
class GSSSemanticSegmenterOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Stage II: `token_loss_weight` x token cross-entropy + `auxiliary_loss_weight` x auxiliary pixel
            cross-entropy. Stage III (after `freeze_for_inverse_training`): pixel cross-entropy of the learned X^-1.
        logits (`torch.FloatTensor` of shape `(batch, num_labels, height, width)`):
            Class scores from X^-1 at the input's resolution (for the nearest colour: minus squared RGB distances).
            Not computed in stage-II training mode, where only the loss is needed.
        maskige (`torch.FloatTensor` of shape `(batch, 3, height, width)`):
            The predicted maskige, colours in 0..255.
        token_ids (`torch.LongTensor` of shape `(batch, h, w)`):
            The argmax token of every cell of the token grid, h = ceil(height / token_stride) and
            w = ceil(width / token_stride) (whole-image inference only).
        token_logits (`torch.FloatTensor` of shape `(batch, codebook_size, h, w)`):
            The prior's V-way logits, only when asked for with `output_token_logits=True` (they take
            codebook_size x 4 bytes per token).
        auxiliary_logits (`torch.FloatTensor` of shape `(batch, num_labels, h, w)`):
            The auxiliary head's class logits on the token grid (not computed in stage III).
        token_loss (`torch.FloatTensor` of shape `()`, *optional*):
            The unweighted token cross-entropy (stage II with labels).
        auxiliary_loss (`torch.FloatTensor` of shape `()`, *optional*):
            The unweighted auxiliary cross-entropy (stage II with labels).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    maskige: torch.FloatTensor | None = None
    token_ids: torch.LongTensor | None = None
    token_logits: torch.FloatTensor | None = None
    auxiliary_logits: torch.FloatTensor | None = None
    token_loss: torch.FloatTensor | None = None
    auxiliary_loss: torch.FloatTensor | None = None


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
        self.auxiliary_head = GSSAuxiliaryHead(config, self.backbone.channels)
        self.tokenizer = MaskigeTokenizer.from_config(config.tokenizer_config)
        self.inverse = build_inverse(config)
        self.training_stage = "prior"
        self.freeze_untrained_parts()
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, strict: bool = True, **kwargs):
        """transformers' `from_pretrained`, but a checkpoint must hold exactly this model's weights.

        A missing key would leave a module randomly initialised (or, for the tokenizer, uninitialised) and an
        unexpected key means the checkpoint belongs to another architecture: either silently gives a model that
        scores near zero, as happened with the official code. Both raise here; `strict=False` downgrades them to a
        loud warning (for example to start stage III from a stage-II checkpoint, whose learned X^-1 is missing).
        """
        output_loading_info = kwargs.pop("output_loading_info", False)
        model, loading_info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        problems = []
        if loading_info["missing_keys"]:
            problems.append(f"missing keys (left untrained): {sorted(loading_info['missing_keys'])}")
        if loading_info["unexpected_keys"]:
            problems.append(f"unexpected keys (ignored): {sorted(loading_info['unexpected_keys'])}")
        if problems:
            message = (
                f"The checkpoint does not match {cls.__name__} as configured: " + "; ".join(problems) + "."
            )
            if any(key.startswith("tokenizer.") for key in loading_info["missing_keys"]):
                raise ValueError(message + " A GSS checkpoint must contain its tokenizer (see `load_tokenizer`).")
            if strict:
                raise ValueError(message + " Pass `strict=False` to load it anyway.")
            logger.warning(message)
        model.freeze_untrained_parts()
        return (model, loading_info) if output_loading_info else model

    # ------------------------------------------------------------------------------------------------------------
    # Stages
    # ------------------------------------------------------------------------------------------------------------
    def load_tokenizer(self, tokenizer: MaskigeTokenizer) -> None:
        """Copies a stage-I tokenizer's weights in; its `VQModel` settings must be this config's."""
        if tokenizer.codebook_size != self.config.codebook_size:
            raise ValueError(
                f"The tokenizer has {tokenizer.codebook_size} codes but `config.codebook_size` is "
                f"{self.config.codebook_size}: the prior's classifier would predict the wrong codebook."
            )
        given = tokenizer.vqmodel.config
        different = {
            key: (value, given.get(key))
            for key, value in self.config.tokenizer_config.items()
            if _as_list(given.get(key)) != _as_list(value)
        }
        if different:
            raise ValueError(
                f"The tokenizer differs from `config.tokenizer_config` in (config, tokenizer): {different}."
            )
        self.tokenizer.vqmodel.load_state_dict(tokenizer.vqmodel.state_dict(), strict=True)

    def freeze_untrained_parts(self) -> None:
        """Turns gradients off for everything the current stage does not train, so that optimisers and DDP see
        only trained parameters: the tokenizer and unused backbone layers always; X^-1 in stage II; all but X^-1 in
        stage III. Loading re-applies it (loading gives fresh parameters)."""
        if self.training_stage == "inverse":
            self.requires_grad_(False)
            self.inverse.requires_grad_(True)
            return
        self.requires_grad_(True)
        self.tokenizer.requires_grad_(False)
        self.inverse.requires_grad_(False)
        for parameter in self.backbone.unused_parameters():
            parameter.requires_grad_(False)

    def freeze_for_inverse_training(self) -> None:
        """Stage III: only the learned X^-1 trains; the prior and tokenizer are frozen and stay in eval mode.

        `forward(pixel_values, labels)` then predicts maskiges without gradients and returns the pixel
        cross-entropy of the learned X^-1 on them (spec §2: it learns to fix the prior's errors).
        """
        if not isinstance(self.inverse, LearnedInverse):
            raise ValueError(
                f"`freeze_for_inverse_training` needs `inverse_type='learned'`, the config has "
                f"{self.config.inverse_type!r}."
            )
        self.training_stage = "inverse"
        self.freeze_untrained_parts()
        self.train(self.training)

    def train(self, mode: bool = True) -> "GSSForSemanticSegmentation":
        """Like `nn.Module.train`, but frozen parts (always the tokenizer; all but X^-1 in stage III) stay in eval."""
        super().train(mode)
        self.tokenizer.eval()
        if self.training_stage == "inverse":
            for module in (self.backbone, self.prior_head, self.auxiliary_head):
                module.eval()
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
                Class ids in 0..num_labels-1, `config.ignore_index` for unlabelled pixels. Height and width must be
                multiples of `config.token_stride` in stage II (the tokenizer's grid).
            sliding_window (`bool`, *optional*):
                Inference on overlapping crops instead of the whole image; defaults to `config.sliding_window`.
            output_token_logits (`bool`, *optional*, defaults to `False`):
                Also return the (batch, codebook_size, h, w) token logits (whole-image inference only).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        sliding_window = self.config.sliding_window if sliding_window is None else sliding_window
        pixel_values = self._check_pixel_values(pixel_values)
        if labels is not None:
            self._check_labels_match(labels, pixel_values)
            self._check_divisible_by_token_stride(pixel_values)
        if output_token_logits and sliding_window:
            raise ValueError("`output_token_logits` is only available with whole-image inference.")
        if self.training_stage == "inverse" and labels is not None:
            output = self._inverse_training_step(pixel_values, labels)
            return output if return_dict else output.to_tuple()

        predicting = labels is None or not self.training
        output = GSSSemanticSegmenterOutput()
        if labels is not None or not sliding_window:
            token_features, auxiliary_logits = self._prior(pixel_values)
        if predicting and sliding_window:
            output = self._predict_sliding_window(pixel_values)
        elif predicting:
            output = self._decode_prior(token_features, auxiliary_logits, pixel_values.shape[-2:], output_token_logits)
        if labels is not None:
            output.auxiliary_logits = auxiliary_logits
            output.loss, output.token_loss, output.auxiliary_loss = self._prior_loss(
                token_features, auxiliary_logits, labels
            )
        return output if return_dict else output.to_tuple()

    def _prior(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Photos (batch, 3, H, W) -> token features (batch, prior_classifier_channels, h, w) and auxiliary logits
        (batch, num_labels, h, w) on the token grid, h = ceil(H / token_stride), w = ceil(W / token_stride)."""
        height, width = pixel_values.shape[-2:]
        stride = self.config.token_stride
        grid = (-(-height // stride), -(-width // stride))
        features = self.backbone(pixel_values)
        return self.prior_head(features, grid), self.auxiliary_head(features, grid)

    def _prior_loss(
        self, token_features: torch.Tensor, auxiliary_logits: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage II loss (total, token, auxiliary): token cross-entropy against the tokenised (filled) label map and
        auxiliary pixel cross-entropy, each averaged over its non-ignored entries."""
        upsampled = nn.functional.interpolate(auxiliary_logits, size=labels.shape[-2:], mode="bilinear")
        auxiliary_loss = masked_cross_entropy(upsampled, labels, self.config.ignore_index)
        targets = self.token_targets(labels, upsampled.argmax(dim=1))
        weight, bias = self.prior_head.classifier_weight_and_bias
        token_loss = chunked_token_cross_entropy(token_features, weight, bias, targets, self.config.token_chunk_size)
        loss = self.config.token_loss_weight * token_loss + self.config.auxiliary_loss_weight * auxiliary_loss
        return loss, token_loss, auxiliary_loss

    def _check_divisible_by_token_stride(self, pixel_values: torch.Tensor) -> None:
        height, width = pixel_values.shape[-2:]
        stride = self.config.token_stride
        if height % stride or width % stride:
            raise ValueError(
                f"With `labels`, height and width must be divisible by `token_stride` {stride} (the tokenizer's "
                f"grid), got {height}x{width}: crop or pad (labels with the ignore index) first."
            )

    @torch.no_grad()
    def token_targets(self, labels: torch.Tensor, fill: torch.Tensor) -> torch.LongTensor:
        """The prior's target tokens for label maps (spec §4, "unlabelled area auxiliary").

        See `fill_unlabelled_pixels`: the tokenizer sees the label map completed by `fill` wherever a token has
        labelled pixels, so the prior is never taught to "predict unlabelled"; a token is ignored only when its
        whole token_stride x token_stride patch is unlabelled. With `config.fill_unlabelled_with_auxiliary` off
        (the ablation) the map is tokenised as painted, ignore colour included, and no token is ignored.

        Args:
            labels: (batch, H, W) class ids or `config.ignore_index`.
            fill: (batch, H, W) class ids (the auxiliary head's argmax) for the unlabelled pixels.

        Returns:
            (batch, H / token_stride, W / token_stride) codebook indices, `TOKEN_IGNORE_INDEX` (-100) where ignored.
        """
        config = self.config
        if not config.fill_unlabelled_with_auxiliary:
            return self.tokenizer.encode(
                maskige_from_labels(labels, config.palette, config.ignore_color, config.ignore_index)
            )
        filled, fully_unlabelled = fill_unlabelled_pixels(labels, fill, config.token_stride, config.ignore_index)
        maskige = maskige_from_labels(filled, config.palette, config.ignore_color, config.ignore_index)
        return self.tokenizer.encode(maskige).masked_fill(fully_unlabelled, TOKEN_IGNORE_INDEX)

    def _inverse_training_step(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> GSSSemanticSegmenterOutput:
        """Stage III loss: pixel cross-entropy of the learned X^-1 on the frozen prior's predicted maskige."""
        with torch.no_grad():
            maskige = self.predict(pixel_values, sliding_window=False, output_token_logits=False).maskige
        logits = self.inverse(maskige)
        loss = masked_cross_entropy(logits, labels, self.config.ignore_index)
        return GSSSemanticSegmenterOutput(loss=loss, logits=logits, maskige=maskige)

    # ------------------------------------------------------------------------------------------------------------
    # Inference
    # ------------------------------------------------------------------------------------------------------------
    def predict(
        self, pixel_values: torch.Tensor, sliding_window: bool = False, output_token_logits: bool = False
    ) -> GSSSemanticSegmenterOutput:
        """Inference alone (what `forward` does without labels): argmax tokens -> decode -> X^-1, on the whole image
        or on overlapping crops. Stage III takes its predicted maskiges from here."""
        pixel_values = self._check_pixel_values(pixel_values)
        if sliding_window:
            return self._predict_sliding_window(pixel_values)
        return self._predict_whole(pixel_values, output_token_logits)

    def _predict_whole(self, pixel_values: torch.Tensor, output_token_logits: bool) -> GSSSemanticSegmenterOutput:
        token_features, auxiliary_logits = self._prior(pixel_values)
        return self._decode_prior(token_features, auxiliary_logits, pixel_values.shape[-2:], output_token_logits)

    def _decode_prior(
        self,
        token_features: torch.Tensor,
        auxiliary_logits: torch.Tensor,
        size: tuple[int, int],
        output_token_logits: bool,
    ) -> GSSSemanticSegmenterOutput:
        """Token features -> argmax tokens -> maskige -> class scores, resized to `size` if the grid overshoots."""
        weight, bias = self.prior_head.classifier_weight_and_bias
        token_ids = chunked_token_argmax(token_features, weight, bias, self.config.token_chunk_size)
        token_logits = self.prior_head.classifier(token_features) if output_token_logits else None
        maskige = self.tokenizer.decode(token_ids)
        logits = self.inverse(maskige)
        if logits.shape[-2:] != tuple(size):
            maskige = nn.functional.interpolate(maskige, size=size, mode="bilinear")
            logits = nn.functional.interpolate(logits, size=size, mode="bilinear")
        return GSSSemanticSegmenterOutput(
            logits=logits,
            maskige=maskige,
            token_ids=token_ids,
            token_logits=token_logits,
            auxiliary_logits=auxiliary_logits,
        )

    def _predict_sliding_window(self, pixel_values: torch.Tensor) -> GSSSemanticSegmenterOutput:
        """Crops of `sliding_window_crop_size` every `sliding_window_stride` pixels, run in batches; the class
        scores and maskige colours of overlapping crops are averaged."""
        batch, _, height, width = pixel_values.shape
        crop_height = min(self.config.sliding_window_crop_size, height)
        crop_width = min(self.config.sliding_window_crop_size, width)
        windows = [
            (top, left)
            for top in _window_starts(height, crop_height, self.config.sliding_window_stride)
            for left in _window_starts(width, crop_width, self.config.sliding_window_stride)
        ]
        logits_sum = pixel_values.new_zeros(batch, self.config.num_labels, height, width)
        maskige_sum = pixel_values.new_zeros(batch, 3, height, width)
        votes = pixel_values.new_zeros(1, 1, height, width)
        crops_per_run = max(1, self.config.sliding_window_batch_size // batch)
        for first in range(0, len(windows), crops_per_run):
            group = windows[first : first + crops_per_run]
            crops = torch.cat(
                [pixel_values[..., top : top + crop_height, left : left + crop_width] for top, left in group]
            )
            prediction = self._predict_whole(crops, output_token_logits=False)
            for index, (top, left) in enumerate(group):
                rows, cols = slice(top, top + crop_height), slice(left, left + crop_width)
                logits_sum[..., rows, cols] += prediction.logits[index * batch : (index + 1) * batch]
                maskige_sum[..., rows, cols] += prediction.maskige[index * batch : (index + 1) * batch]
                votes[..., rows, cols] += 1
        return GSSSemanticSegmenterOutput(logits=logits_sum / votes, maskige=maskige_sum / votes)

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
        if pixel_values.abs().amax() > NORMALISED_PIXEL_LIMIT:
            logger.warning_once(
                f"`pixel_values` holds values beyond +-{NORMALISED_PIXEL_LIMIT:g}: the photos look un-normalised "
                "(for example 0..255); preprocess them with GSSImageProcessor."
            )
        return pixel_values.to(self.dtype)

    def _check_labels_match(self, labels: torch.Tensor, pixel_values: torch.Tensor) -> None:
        check_labels(labels, self.config.num_labels, self.config.ignore_index)
        if labels.shape != (pixel_values.shape[0], *pixel_values.shape[-2:]):
            raise ValueError(
                f"`labels` has shape {tuple(labels.shape)} but `pixel_values` is {tuple(pixel_values.shape)}: give "
                "one (height, width) label map per photo, at the photo's size."
            )


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Pixel cross-entropy averaged over labelled pixels; 0 (connected to the graph) when none is labelled,
    where `cross_entropy` would return NaN."""
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return nn.functional.cross_entropy(logits.float(), labels.long(), ignore_index=ignore_index)


def fill_unlabelled_pixels(
    labels: torch.Tensor, fill: torch.Tensor, token_stride: int, ignore_index: int
) -> tuple[torch.Tensor, torch.BoolTensor]:
    """Completes label maps before they are tokenised.

    Unlabelled pixels of every token patch that has at least one labelled pixel take the `fill` class; patches
    with no labelled pixel keep the ignore index (painted in the ignore colour, which the tokenizer was trained on).
    Their tokens are ignored by the loss anyway, and filling them too would make the targets of *other* tokens depend
    on predictions inside wholly unlabelled areas: the tokenizer's receptive field and its GroupNorm statistics
    reach across the map.

    Args:
        labels: (batch, H, W) class ids or `ignore_index`; H and W multiples of `token_stride`.
        fill: (batch, H, W) class ids.

    Returns:
        The filled (batch, H, W) labels and the (batch, H / token_stride, W / token_stride) mask of tokens whose
        patch is wholly unlabelled.
    """
    unlabelled = labels == ignore_index
    labelled_fraction = nn.functional.avg_pool2d((~unlabelled)[:, None].float(), token_stride)[:, 0]
    fully_unlabelled = labelled_fraction == 0
    in_partly_labelled_patch = ~fully_unlabelled.repeat_interleave(token_stride, 1).repeat_interleave(token_stride, 2)
    filled = torch.where(unlabelled & in_partly_labelled_patch, fill.to(labels.dtype), labels)
    return filled, fully_unlabelled


def _window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Start offsets of crops of size `crop` every `stride` pixels, the last one flush with the end."""
    count = max(length - crop + stride - 1, 0) // stride + 1
    return sorted({min(index * stride, length - crop) for index in range(count)})


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else value


AutoModelForSemanticSegmentation.register(GSSConfig, GSSForSemanticSegmentation, exist_ok=True)
GSSForSemanticSegmentation.register_for_auto_class("AutoModelForSemanticSegmentation")
# The image-segmentation pipeline checks the model against transformers' static name tables only, not against
# registered classes, and logs an error for anything else: GSS is listed there so that the pipeline accepts it.
MODEL_FOR_SEMANTIC_SEGMENTATION_MAPPING_NAMES.setdefault(GSSConfig.model_type, GSSForSemanticSegmentation.__name__)

__all__ = ["GSSForSemanticSegmentation", "GSSPreTrainedModel", "GSSSemanticSegmenterOutput"]
