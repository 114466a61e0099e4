"""Sampling segmentations from the prior: the chunked token sampler and `GSSForSemanticSegmentation.sample`."""

import math

import pytest
import torch

from gss_hf import GSSForSemanticSegmentation
from gss_hf.token_cross_entropy import chunked_token_argmax, chunked_token_sample
from tiny_models import NUM_TINY_LABELS, tiny_gss_config


def classifier_inputs(seed: int = 0, codes: int = 6):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 4, 3, 5, generator=generator)
    weight = torch.randn(codes, 4, generator=generator)
    bias = torch.randn(codes, generator=generator)
    return features, weight, bias


def naive_log_probs(features, weight, bias, temperature=1.0):
    logits = torch.einsum("bchw,vc->bhwv", features, weight) + bias
    return (logits / temperature).log_softmax(dim=-1)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_token_draws_follow_the_tempered_softmax_and_the_entropy_is_its_entropy(temperature):
    features, weight, bias = classifier_inputs()
    generator = torch.Generator().manual_seed(1)
    draws, entropy, _ = chunked_token_sample(
        features, weight, bias, 4000, temperature, generator=generator, chunk_size=4
    )
    log_probs = naive_log_probs(features, weight, bias, temperature)
    frequencies = torch.nn.functional.one_hot(draws, weight.shape[0]).float().mean(dim=1)
    # 4000 draws: the standard error of a frequency is at most 0.008.
    torch.testing.assert_close(frequencies, log_probs.exp(), atol=0.04, rtol=0)
    torch.testing.assert_close(entropy, -(log_probs.exp() * log_probs).sum(-1))


def test_top_k_draws_only_the_k_most_likely_codes_and_top_1_is_the_argmax():
    features, weight, bias = classifier_inputs(codes=9)
    draws, entropy, _ = chunked_token_sample(features, weight, bias, 500, top_k=3, chunk_size=5)
    allowed = naive_log_probs(features, weight, bias).topk(3, dim=-1).indices
    assert (draws[..., None] == allowed[:, None]).any(-1).all()
    assert len(draws.unique()) > 3 and bool((entropy <= math.log(3) + 1e-6).all())
    argmax, zero, _ = chunked_token_sample(features, weight, bias, 3, top_k=1)
    assert torch.equal(argmax, chunked_token_argmax(features, weight, bias)[:, None].expand_as(argmax))
    assert bool((zero.abs() < 1e-6).all())


@pytest.mark.parametrize("top_k", [None, 4])
def test_class_probabilities_are_the_mass_of_the_codes_that_paint_each_pixel_in_each_class(top_k):
    features, weight, bias = classifier_inputs(codes=9)
    code_classes = torch.randint(0, 3, (9, 2, 2), generator=torch.Generator().manual_seed(2))
    draws = chunked_token_sample(features, weight, bias, 2, 1.5, top_k, chunk_size=4, code_classes=code_classes,
                                 num_labels=3)  # fmt: skip
    probabilities = naive_log_probs(features, weight, bias, 1.5).exp()  # (b, h, w, V)
    if top_k is not None:
        kept = probabilities.topk(top_k, dim=-1)
        probabilities = torch.zeros_like(probabilities).scatter_(-1, kept.indices, kept.values)
        probabilities = probabilities / probabilities.sum(-1, keepdim=True)
    painted = torch.nn.functional.one_hot(code_classes, 3).float()  # (V, s, s, K)
    expected = torch.einsum("bhwv,vijk->bkhiwj", probabilities, painted).reshape(2, 3, 6, 10)
    torch.testing.assert_close(draws.class_probabilities, expected)


def test_a_seeded_generator_repeats_the_draws_and_another_seed_does_not():
    features, weight, bias = classifier_inputs()
    draw = lambda seed: chunked_token_sample(  # noqa: E731
        features, weight, bias, 16, generator=torch.Generator().manual_seed(seed), chunk_size=3
    )[0]
    assert torch.equal(draw(0), draw(0)) and not torch.equal(draw(0), draw(1))


@pytest.fixture(scope="module")
def model() -> GSSForSemanticSegmentation:
    torch.manual_seed(0)
    model = GSSForSemanticSegmentation(tiny_gss_config(inverse_type="nearest")).eval()
    with torch.no_grad():  # a classifier far from uniform: some tokens sure, some not
        model.prior_head.classifier.weight.normal_(0.0, 0.5)
    return model


def photos(batch: int = 2, height: int = 32, width: int = 48) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))


def test_samples_are_class_maps_at_the_input_size_and_the_prediction_is_the_usual_one(model):
    pixel_values = photos()
    output = model.sample(pixel_values, num_samples=5, generator=torch.Generator().manual_seed(0))
    assert output.samples.shape == (2, 5, 32, 48) and output.samples.dtype == torch.long
    assert 0 <= int(output.samples.min()) and int(output.samples.max()) < NUM_TINY_LABELS
    for name in ("prediction", "majority_vote", "uncertainty", "token_entropy"):
        assert getattr(output, name).shape == (2, 32, 48), name
    with torch.no_grad():
        usual = model(pixel_values).logits
        maskige = model(pixel_values).maskige
    torch.testing.assert_close(output.logits, usual)
    torch.testing.assert_close(output.maskige, maskige)
    assert torch.equal(output.prediction, usual.argmax(dim=1))
    assert not torch.equal(output.samples, output.prediction[:, None].expand_as(output.samples))


def test_uncertainty_is_the_entropy_of_the_samples_class_frequencies_and_the_vote_their_mode(model):
    output = model.sample(photos(), num_samples=6, generator=torch.Generator().manual_seed(3))
    counts = torch.nn.functional.one_hot(output.samples, NUM_TINY_LABELS).sum(dim=1).float()  # (b, h, w, K)
    frequencies = counts / 6
    entropy = -(frequencies * torch.where(counts > 0, frequencies.log(), 0.0)).sum(-1)
    torch.testing.assert_close(output.uncertainty, entropy)
    agree = (output.samples == output.samples[:, :1]).all(dim=1)
    assert agree.any() and not agree.all() and bool((output.uncertainty[agree] == 0).all())
    assert torch.equal(counts.gather(-1, output.majority_vote[..., None])[..., 0], counts.amax(-1))


def test_seeded_sampling_is_deterministic_and_top_1_gives_the_argmax_without_uncertainty(model):
    pixel_values = photos(batch=1)
    first = model.sample(pixel_values, num_samples=3, generator=torch.Generator().manual_seed(7))
    again = model.sample(pixel_values, num_samples=3, generator=torch.Generator().manual_seed(7))
    other = model.sample(pixel_values, num_samples=3, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first.samples, again.samples) and not torch.equal(first.samples, other.samples)
    certain = model.sample(pixel_values, num_samples=3, top_k=1)
    assert torch.equal(certain.samples, certain.prediction[:, None].expand(-1, 3, -1, -1))
    assert float(certain.uncertainty.abs().max()) == 0.0 and float(certain.token_entropy.abs().max()) < 1e-5
    assert float(first.token_entropy.min()) > 0


def test_class_uncertainty_is_one_minus_the_prior_probability_of_the_predicted_class(model):
    pixel_values = photos(batch=1)
    patterns = model.code_class_patterns()
    assert patterns.shape == (64, 4, 4) and 0 <= int(patterns.min()) and int(patterns.max()) < NUM_TINY_LABELS
    # A code's pattern is what X^-1 reads where that code fills the grid.
    grid = torch.full((1, 5, 5), 11)
    with torch.no_grad():
        painted = model.inverse(model.tokenizer.decode(grid)).argmax(1)[0, 8:12, 8:12]
    assert torch.equal(patterns[11], painted)
    output = model.sample(pixel_values, num_samples=2, code_class_patterns=patterns)
    features, _ = model._prior(pixel_values)
    weight, bias = model.prior_head.classifier_weight_and_bias
    probabilities = torch.einsum("bchw,vc->bhwv", features, weight).add(bias).softmax(-1)
    per_class = torch.einsum("bhwv,vijk->bkhiwj", probabilities, torch.nn.functional.one_hot(patterns, NUM_TINY_LABELS).float())
    per_class = per_class.reshape(1, NUM_TINY_LABELS, 32, 48)
    expected = 1 - per_class.gather(1, output.prediction[:, None])[:, 0]
    torch.testing.assert_close(output.class_uncertainty, expected)
    assert float(output.class_uncertainty.std()) > 0
    again = model.sample(pixel_values, num_samples=2)  # the patterns computed inside give the same
    torch.testing.assert_close(again.class_uncertainty, output.class_uncertainty)


def test_sliding_window_sampling_averages_crops_like_forward_and_one_crop_is_the_whole_image(model):
    pixel_values = photos(batch=1, height=32, width=64)
    saved = model.config.sliding_window_crop_size, model.config.sliding_window_stride
    model.config.sliding_window_crop_size, model.config.sliding_window_stride = 32, 16
    try:
        output = model.sample(pixel_values, num_samples=2, sliding_window=True)
        with torch.no_grad():
            usual = model(pixel_values, sliding_window=True).logits
        assert output.samples.shape == (1, 2, 32, 64)
        torch.testing.assert_close(output.logits, usual)
        model.config.sliding_window_crop_size = 64
        seeded = lambda sliding: model.sample(  # noqa: E731
            pixel_values, num_samples=2, generator=torch.Generator().manual_seed(0), sliding_window=sliding
        )
        whole, one_crop = seeded(False), seeded(True)
        assert torch.equal(whole.samples, one_crop.samples)
        torch.testing.assert_close(whole.token_entropy, one_crop.token_entropy)
        torch.testing.assert_close(whole.class_uncertainty, one_crop.class_uncertainty)
    finally:
        model.config.sliding_window_crop_size, model.config.sliding_window_stride = saved


@pytest.mark.parametrize(
    "arguments, says",
    [
        ({"num_samples": 0}, "`num_samples` must be a positive integer, got 0"),
        ({"num_samples": True}, "`num_samples` must be a positive integer, got True"),
        ({"num_samples": 2.0}, "`num_samples` must be a positive integer, got 2.0"),
        ({"temperature": 0}, "`temperature` must be a finite number > 0, got 0"),
        ({"temperature": -1.0}, "`temperature` must be a finite number > 0, got -1.0"),
        ({"temperature": float("nan")}, "`temperature` must be a finite number > 0, got nan"),
        ({"top_k": 0}, "`top_k` must be an integer in 1..64 (the codebook size) or None, got 0"),
        ({"top_k": 65}, "`top_k` must be an integer in 1..64 (the codebook size) or None, got 65"),
    ],
)
def test_bad_sampling_arguments_are_refused_with_the_reason(model, arguments, says):
    with pytest.raises(ValueError) as error:
        model.sample(photos(batch=1), **arguments)
    assert says in str(error.value)
