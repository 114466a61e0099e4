"""Token cross-entropy, argmax, sampling and entropy without materialising the V-way logits.

At V = 8192 codes and tokens at 1/4, the prior's logits for one 768x768 crop are 36,864 x 8,192 floats (1.2 GB),
and autograd would keep them (and their softmax) for the backward pass. The codebook classifier is a 1x1
convolution, i.e. a matrix product per token, so the loss and its gradients can be computed `chunk_size` tokens at a
time: each chunk's logits are formed, turned into its loss and its gradients with respect to the features and the
classifier, and freed. Peak extra memory is one chunk's logits; no logit is computed twice. `benchmarks/` measures
memory and time against the naive loss.

Optional per-token weights turn the mean into a weighted mean (class-aware token weighting: rare classes own rare
codes, which a plain mean rarely trains).
"""

import math
from typing import NamedTuple

import torch
from torch import nn


TOKEN_IGNORE_INDEX = -100


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of `features @ weight.T + bias` against `targets`, gradients computed chunk by chunk;
    with `token_weights` (num_tokens,) the weighted mean sum(w * ce) / sum(w) (no gradient to the weights)."""

    @staticmethod
    def forward(ctx, features, weight, bias, targets, chunk_size, token_weights=None):
        num_tokens = features.shape[0]
        needs_grad = ctx.needs_input_grad[:3]
        # Softmax statistics and classifier gradients accumulate in at least float32, also under bf16 autocast.
        accumulate = torch.promote_types(features.dtype, torch.float32)
        grad_features = torch.empty_like(features) if needs_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=accumulate) if needs_grad[1] else None
        grad_bias = torch.zeros_like(bias, dtype=accumulate) if needs_grad[2] else None
        total = torch.zeros((), dtype=accumulate, device=features.device)
        if token_weights is not None:
            token_weights = token_weights.to(accumulate)
            normaliser = token_weights.sum()
        else:
            normaliser = num_tokens
        for start in range(0, num_tokens, chunk_size):
            chunk = features[start : start + chunk_size]
            chunk_targets = targets[start : start + chunk_size]
            logits = nn.functional.linear(chunk, weight, bias).to(accumulate)
            log_normaliser = torch.logsumexp(logits, dim=1)
            token_losses = log_normaliser - logits.gather(1, chunk_targets[:, None])[:, 0]
            if token_weights is None:
                total += token_losses.sum()
            else:
                chunk_weights = token_weights[start : start + chunk_size]
                total += (token_losses * chunk_weights).sum()
            if any(needs_grad):
                # d loss / d logits = softmax - one_hot(target), scaled by the mean's 1 / num_tokens (weighted:
                # w / sum(w)); computed in place in the logits' buffer, the largest tensor here.
                grad_logits = logits.sub_(log_normaliser[:, None]).exp_()
                grad_logits[torch.arange(len(chunk_targets), device=logits.device), chunk_targets] -= 1.0
                if token_weights is None:
                    grad_logits /= num_tokens
                else:
                    grad_logits *= (chunk_weights / normaliser)[:, None]
                if grad_features is not None:
                    grad_features[start : start + chunk_size] = (grad_logits.to(weight.dtype) @ weight).to(
                        features.dtype
                    )
                if grad_weight is not None:
                    grad_weight += grad_logits.T @ chunk.to(accumulate)
                if grad_bias is not None:
                    grad_bias += grad_logits.sum(0)
        ctx.save_for_backward(grad_features, grad_weight, grad_bias)
        ctx.parameter_dtypes = (weight.dtype, bias.dtype)
        return total / normaliser

    @staticmethod
    def backward(ctx, grad_output):
        grad_features, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.parameter_dtypes
        return (
            None if grad_features is None else grad_features * grad_output.to(grad_features.dtype),
            None if grad_weight is None else (grad_weight * grad_output).to(weight_dtype),
            None if grad_bias is None else (grad_bias * grad_output).to(bias_dtype),
            None,
            None,
            None,
        )


def chunked_token_cross_entropy(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = 1024,
    token_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of the linear classifier (`weight`, `bias`) over the non-ignored tokens.

    Args:
        features: (batch, channels, h, w) token features (the classifier's input).
        weight: (V, channels) classifier weight; bias: (V,).
        targets: (batch, h, w) codebook indices, `TOKEN_IGNORE_INDEX` where a token is not a target.
        chunk_size: tokens whose logits are formed at once.
        token_weights: optional (batch, h, w) non-negative weights (constants, no gradient); the loss is then
            sum(w * ce) / sum(w) over the non-ignored tokens.

    Returns:
        A scalar, equal to `cross_entropy(logits, targets, ignore_index=TOKEN_IGNORE_INDEX)` with the full logits
        (without `token_weights`); 0 (still connected to the graph) when no token is a target or every target token
        weighs 0.
    """
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive integer, got {chunk_size}.")
    if token_weights is not None and token_weights.shape != targets.shape:
        raise ValueError(
            f"`token_weights` {tuple(token_weights.shape)} must have the shape of `targets` {tuple(targets.shape)}."
        )
    valid = targets != TOKEN_IGNORE_INDEX
    # One gather of the target tokens' features, (num_targets, channels), straight from the channels-first map; its
    # size is the one host synchronisation here.
    tokens = features.permute(0, 2, 3, 1)[valid]
    if token_weights is not None:
        token_weights = token_weights.detach()[valid]
    if tokens.shape[0] == 0 or (token_weights is not None and not bool(token_weights.sum() > 0)):
        return features.sum() * 0.0 + weight.sum() * 0.0 + bias.sum() * 0.0
    return _ChunkedLinearCrossEntropy.apply(tokens, weight, bias, targets[valid], chunk_size, token_weights)


def _position_chunks(features: torch.Tensor, chunk_size: int):
    """Yields (start, stop, chunk) over the grid positions of all images at once: chunk is (batch, positions,
    channels), read in place from the (batch, channels, h, w) features (no channels-last copy of the map)."""
    batch = features.shape[0]
    flat = features.flatten(2)
    positions_per_chunk = max(1, chunk_size // batch)
    for start in range(0, flat.shape[2], positions_per_chunk):
        stop = min(start + positions_per_chunk, flat.shape[2])
        yield start, stop, flat[:, :, start:stop].transpose(1, 2)


@torch.no_grad()
def chunked_token_argmax(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, chunk_size: int = 1024
) -> torch.LongTensor:
    """Per-token argmax of the linear classifier: (batch, channels, h, w) -> (batch, h, w) codebook indices."""
    batch, _, height, width = features.shape
    token_ids = torch.empty(batch, height * width, dtype=torch.long, device=features.device)
    for start, stop, chunk in _position_chunks(features, chunk_size):
        token_ids[:, start:stop] = nn.functional.linear(chunk, weight, bias).argmax(dim=2)
    return token_ids.reshape(batch, height, width)


def check_positive_integer(value: int, name: str) -> None:
    """Raises `ValueError` unless `value` is an int >= 1 (a bool is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def check_sampling_arguments(num_samples: int, temperature: float) -> None:
    """The checks every token sampler shares: `num_samples` a positive integer, `temperature` a finite number > 0."""
    check_positive_integer(num_samples, "num_samples")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"`temperature` must be a finite number > 0, got {temperature!r}.")


class TokenDraws(NamedTuple):
    """What `chunked_token_sample` returns."""

    token_ids: torch.LongTensor
    """(batch, num_samples, h, w) codebook indices."""
    entropy: torch.Tensor
    """(batch, h, w) float32 entropy of each token's distribution, in nats."""
    class_probabilities: torch.Tensor | None
    """(batch, num_labels, h x s, w x s) float32 probability of each class at each pixel of each token's s x s patch
    (None without `code_classes`)."""


@torch.no_grad()
def chunked_token_sample(
    features: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    num_samples: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    chunk_size: int = 1024,
    code_classes: torch.LongTensor | None = None,
    num_labels: int | None = None,
) -> TokenDraws:
    """Draws tokens from the classifier's per-token distributions, softmax(logits / temperature) restricted to the
    `top_k` most likely codes, independently per token; also each token's entropy under that distribution and,
    with `code_classes`, the class probabilities it implies.

    Args:
        features: (batch, channels, h, w) token features; weight: (V, channels); bias: (V,).
        num_samples: token grids drawn per image.
        temperature: > 0; below 1 sharpens the distributions, above 1 flattens them.
        top_k: keep only the k most likely codes per token (1..V), or all with None.
        generator: the random generator of the draws (the same generator state gives the same samples).
        chunk_size: tokens whose logits are formed at once.
        code_classes: (V, s, s) the class of each pixel of each code's decoded s x s patch; a pixel's class
            probability is then the mass of the codes that paint it in that class.
        num_labels: the number of classes, with `code_classes`.
    """
    batch, _, height, width = features.shape
    token_ids = torch.empty(batch, height * width, num_samples, dtype=torch.long, device=features.device)
    entropy = torch.empty(batch, height * width, dtype=torch.float32, device=features.device)
    class_probabilities = None
    if code_classes is not None:
        patch = code_classes.shape[-1]
        code_classes = code_classes.flatten(1)  # (V, s * s)
        class_probabilities = features.new_zeros(batch, height * width, num_labels, patch * patch, dtype=torch.float32)
    for start, stop, chunk in _position_chunks(features, chunk_size):
        logits = nn.functional.linear(chunk, weight, bias).float() / temperature
        codes = None
        if top_k is not None:
            logits, codes = logits.topk(top_k, dim=2)
        log_probs = logits.log_softmax(dim=2)
        probabilities = log_probs.exp()
        entropy[:, start:stop] = -(probabilities * log_probs).sum(dim=2)
        draws = torch.multinomial(probabilities.flatten(0, 1), num_samples, replacement=True, generator=generator)
        draws = draws.reshape(batch, stop - start, num_samples)
        token_ids[:, start:stop] = draws if codes is None else codes.gather(2, draws)
        if class_probabilities is not None:
            for pixel in range(code_classes.shape[1]):
                classes = code_classes[:, pixel]
                classes = classes.expand_as(probabilities) if codes is None else classes[codes]
                class_probabilities[:, start:stop, :, pixel].scatter_add_(2, classes, probabilities)
    if class_probabilities is not None:
        class_probabilities = (
            class_probabilities.reshape(batch, height, width, num_labels, patch, patch)
            .permute(0, 3, 1, 4, 2, 5)
            .reshape(batch, num_labels, height * patch, width * patch)
        )
    return TokenDraws(
        token_ids.permute(0, 2, 1).reshape(batch, num_samples, height, width),
        entropy.reshape(batch, height, width),
        class_probabilities,
    )
