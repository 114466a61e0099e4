"""The chunked token loss and argmax equal their naive full-logit versions, values and gradients."""

import math

import pytest
import torch

from gss_hf.token_cross_entropy import TOKEN_IGNORE_INDEX, chunked_token_argmax, chunked_token_cross_entropy


def inputs(seed: int = 0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 6, 5, 7, generator=generator, dtype=dtype, requires_grad=True)
    weight = torch.randn(33, 6, generator=generator, dtype=dtype, requires_grad=True)
    bias = torch.randn(33, generator=generator, dtype=dtype, requires_grad=True)
    targets = torch.randint(0, 33, (2, 5, 7), generator=generator)
    targets[0, :2] = TOKEN_IGNORE_INDEX
    return features, weight, bias, targets


def naive_loss(features, weight, bias, targets):
    logits = torch.einsum("bchw,vc->bvhw", features, weight) + bias[None, :, None, None]
    return torch.nn.functional.cross_entropy(logits, targets, ignore_index=TOKEN_IGNORE_INDEX)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
def test_chunked_loss_and_gradients_equal_the_naive_ones(chunk_size):
    features, weight, bias, targets = inputs()
    loss = chunked_token_cross_entropy(features, weight, bias, targets, chunk_size=chunk_size)
    assert_same_loss_and_gradients(loss, naive_loss(features, weight, bias, targets), (features, weight, bias))


def assert_same_loss_and_gradients(loss: torch.Tensor, expected: torch.Tensor, inputs: tuple) -> None:
    torch.testing.assert_close(loss, expected)
    grads = torch.autograd.grad(loss * 3.0, inputs, retain_graph=True)
    for grad, expected_grad in zip(grads, torch.autograd.grad(expected * 3.0, inputs)):
        torch.testing.assert_close(grad, expected_grad)


def test_only_requested_gradients_are_computed_and_frozen_classifiers_work():
    features, weight, bias, targets = inputs()
    frozen_weight, frozen_bias = weight.detach(), bias.detach()
    loss = chunked_token_cross_entropy(features, frozen_weight, frozen_bias, targets, chunk_size=5)
    (grad,) = torch.autograd.grad(loss, (features,))
    (expected,) = torch.autograd.grad(naive_loss(features, frozen_weight, frozen_bias, targets), (features,))
    torch.testing.assert_close(grad, expected)
    with torch.no_grad():
        chunked = chunked_token_cross_entropy(features, weight, bias, targets, 4)
        torch.testing.assert_close(chunked, naive_loss(features, weight, bias, targets))


def test_no_target_token_gives_zero_connected_to_the_graph():
    features, weight, bias, targets = inputs()
    loss = chunked_token_cross_entropy(features, weight, bias, torch.full_like(targets, TOKEN_IGNORE_INDEX))
    assert loss.item() == 0.0
    loss.backward()
    assert features.grad is not None and not features.grad.any()


def test_chunked_argmax_equals_the_argmax_of_the_full_logits():
    features, weight, bias, _ = inputs(dtype=torch.float32)
    logits = torch.einsum("bchw,vc->bvhw", features, weight) + bias[None, :, None, None]
    assert torch.equal(chunked_token_argmax(features, weight, bias, chunk_size=4), logits.argmax(1))


def test_bad_chunk_size_is_refused():
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_token_cross_entropy(*inputs(), chunk_size=0)


# ----------------------------------------------------------------------------------------------------------------
# Per-token weights (class-aware token weighting)
# ----------------------------------------------------------------------------------------------------------------
def test_weighted_loss_equals_a_hand_computed_reference():
    # Identity classifier: the features are the logits. Token 0: logits (0, 0), target 0, ce = ln 2, weight 1.
    # Token 1: logits (ln 3, 0), target 1, ce = ln 4, weight 3. Token 2 is ignored (its weight 100 must not count).
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]], dtype=torch.float64)  # (tokens, V)
    features = logits.T[None, :, None, :]  # (1, channels = V = 2, 1, 3 tokens)
    weight, bias = torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    targets = torch.tensor([[[0, 1, TOKEN_IGNORE_INDEX]]])
    token_weights = torch.tensor([[[1.0, 3.0, 100.0]]])
    loss = chunked_token_cross_entropy(features, weight, bias, targets, chunk_size=1, token_weights=token_weights)
    assert loss.item() == pytest.approx((1 * math.log(2.0) + 3 * math.log(4.0)) / 4)  # = 7/4 ln 2


def naive_weighted_loss(features, weight, bias, targets, token_weights):
    logits = torch.einsum("bchw,vc->bvhw", features, weight) + bias[None, :, None, None]
    losses = torch.nn.functional.cross_entropy(logits, targets, ignore_index=TOKEN_IGNORE_INDEX, reduction="none")
    valid = targets != TOKEN_IGNORE_INDEX
    return (losses * token_weights)[valid].sum() / token_weights[valid].sum()


@pytest.mark.parametrize("chunk_size", [1, 7, 10_000])
def test_weighted_loss_and_gradients_equal_the_naive_weighted_mean(chunk_size):
    features, weight, bias, targets = inputs()
    token_weights = torch.rand(targets.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 5
    token_weights[1, 0, 0] = 0.0
    expected = naive_weighted_loss(features, weight, bias, targets, token_weights)
    loss = chunked_token_cross_entropy(features, weight, bias, targets, chunk_size, token_weights=token_weights)
    assert_same_loss_and_gradients(loss, expected, (features, weight, bias))


def test_no_weights_is_exactly_the_unweighted_loss_and_equal_weights_give_the_same_value():
    features, weight, bias, targets = inputs()
    plain = chunked_token_cross_entropy(features, weight, bias, targets, 7)
    assert torch.equal(chunked_token_cross_entropy(features, weight, bias, targets, 7, token_weights=None), plain)
    equal_weights = torch.full(targets.shape, 2.5)
    torch.testing.assert_close(chunked_token_cross_entropy(features, weight, bias, targets, 7, equal_weights), plain)


def test_zero_weights_give_zero_connected_to_the_graph_and_bad_shapes_are_refused():
    features, weight, bias, targets = inputs()
    loss = chunked_token_cross_entropy(features, weight, bias, targets, token_weights=torch.zeros(targets.shape))
    assert loss.item() == 0.0
    loss.backward()
    assert features.grad is not None and not features.grad.any()
    with pytest.raises(ValueError, match="`token_weights` \\(2, 5\\) must have the shape of `targets` \\(2, 5, 7\\)"):
        chunked_token_cross_entropy(features, weight, bias, targets, token_weights=torch.ones(2, 5))
