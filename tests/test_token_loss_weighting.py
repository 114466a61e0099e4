"""Class-aware token weighting (`GSSConfig.token_loss_class_weights`, issue 17): the config checks, the per-token
weights, the weighted stage-II token loss, and `train_prior.py --token_loss_class_weighting`."""

import json
import math

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from PIL import Image

from gss_hf import GSSForSemanticSegmentation, MaskigeTokenizer
from gss_hf.token_cross_entropy import TOKEN_IGNORE_INDEX, chunked_token_cross_entropy
from test_training import TINY_DATA, VOID, run_script, usage_error_of, write_tiny_camvid
from tiny_models import NUM_TINY_LABELS, tiny_gss_config
from training.train_prior import MAX_CLASS_WEIGHT, class_pixel_counts, inverse_sqrt_frequency_weights


WEIGHTS = [0.5, 1.0, 2.0, 3.0, 8.0]


def tiny_model(**overrides) -> GSSForSemanticSegmentation:
    """A tiny model whose codebook classifier is far from uniform, so that per-token losses differ."""
    torch.manual_seed(0)
    model = GSSForSemanticSegmentation(tiny_gss_config(**overrides)).eval()
    with torch.no_grad():
        model.prior_head.classifier.weight.normal_(0.0, 1.0)
        model.prior_head.classifier.bias.normal_(0.0, 1.0)
    return model


@pytest.fixture(scope="module")
def weighted_model() -> GSSForSemanticSegmentation:
    return tiny_model(token_loss_class_weights=WEIGHTS)


def photos_and_labels(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_TINY_LABELS, (2, 64, 96), generator=generator)
    labels[:, :9] = 255
    labels[0, 20:40, 20:40] = 4  # a block of one class, so that some patches hold a single class
    return torch.randn(2, 3, 64, 96, generator=generator), labels


# ----------------------------------------------------------------------------------------------------------------
# The config field
# ----------------------------------------------------------------------------------------------------------------
def test_class_weights_default_to_none_and_take_one_weight_per_class():
    assert tiny_gss_config().token_loss_class_weights is None
    config = tiny_gss_config(token_loss_class_weights=[1, 0.5, 0, 2, 3.25])
    assert config.token_loss_class_weights == [1, 0.5, 0, 2, 3.25]
    assert type(config).from_dict(config.to_dict()).token_loss_class_weights == [1, 0.5, 0, 2, 3.25]


@pytest.mark.parametrize(
    "weights, error, message",
    [
        ([1.0] * 4, StrictDataclassClassValidationError, "has 4 weights, but there are 5 labels"),
        ([1.0, -0.5, 1.0, 1.0, 1.0], StrictDataclassFieldValidationError, "finite weights >= 0, got -0.5"),
        ([1.0, math.nan, 1.0, 1.0, 1.0], StrictDataclassFieldValidationError, "finite weights >= 0, got nan"),
        ([1.0, math.inf, 1.0, 1.0, 1.0], StrictDataclassFieldValidationError, "finite weights >= 0, got inf"),
        ([0.0] * 5, StrictDataclassFieldValidationError, "at least one weight > 0"),
        ([], StrictDataclassFieldValidationError, "non-empty list of one weight per class"),
        ("inverse", StrictDataclassFieldValidationError, "expected a list"),
    ],
)
def test_bad_class_weights_are_refused_by_name(weights, error, message):
    with pytest.raises(error, match="token_loss_class_weights") as info:
        tiny_gss_config(token_loss_class_weights=weights)
    assert message in str(info.value)


def test_a_bad_weight_is_refused_on_assignment_and_a_wrong_length_by_validate():
    config = tiny_gss_config()
    with pytest.raises(StrictDataclassFieldValidationError, match="finite weights >= 0"):
        config.token_loss_class_weights = [1.0, 1.0, -1.0, 1.0, 1.0]
    config.token_loss_class_weights = [1.0, 2.0]
    with pytest.raises(StrictDataclassClassValidationError, match="has 2 weights, but there are 5 labels"):
        config.validate()


# ----------------------------------------------------------------------------------------------------------------
# The per-token weights and the weighted loss
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_token_weighs_the_largest_class_weight_of_its_labelled_pixels(weighted_model):
    model = weighted_model  # tokenizer_stride 4
    labels = torch.full((1, 8, 12), 255)
    labels[0, :4, :4] = 0
    labels[0, 1, 2] = 3  # patch (0, 0): classes 0 and 3 -> 4
    labels[0, :4, 4:6] = 1  # patch (0, 1): class 1 and unlabelled pixels -> 2
    labels[0, :4, 8:] = 2  # patch (0, 2): class 2 only, weight 0 -> 0
    labels[0, 4:, 4:8] = 4
    labels[0, 7, 7] = 0  # patch (1, 1): classes 4 and 0 -> 5; patches (1, 0) and (1, 2) are unlabelled -> 1
    labels[0, 4:, 8:] = 255
    model.config.token_loss_class_weights = [1.0, 2.0, 0.0, 4.0, 5.0]
    try:
        assert model.token_loss_weights(labels).tolist() == [[[4.0, 2.0, 0.0], [1.0, 5.0, 1.0]]]
        model.config.token_loss_class_weights = None
        assert model.token_loss_weights(labels) is None
    finally:
        model.config.token_loss_class_weights = WEIGHTS


@pytest.mark.slow
def test_the_weighted_token_loss_is_the_weighted_cross_entropy_of_the_full_logits(weighted_model):
    model = weighted_model
    pixel_values, labels = photos_and_labels()
    with torch.no_grad():
        output = model(pixel_values, labels=labels, output_token_logits=True)
        upsampled = torch.nn.functional.interpolate(output.auxiliary_logits, size=(64, 96), mode="bilinear")
        targets = model.token_targets(labels, upsampled.argmax(1))
    token_weights = model.token_loss_weights(labels)
    assert token_weights.shape == targets.shape and len(token_weights.unique()) > 2
    losses = torch.nn.functional.cross_entropy(
        output.token_logits, targets, ignore_index=TOKEN_IGNORE_INDEX, reduction="none"
    )
    valid = targets != TOKEN_IGNORE_INDEX
    expected = (losses * token_weights)[valid].sum() / token_weights[valid].sum()
    torch.testing.assert_close(output.token_loss, expected)
    plain = torch.nn.functional.cross_entropy(output.token_logits, targets, ignore_index=TOKEN_IGNORE_INDEX)
    assert not torch.allclose(output.token_loss, plain)
    torch.testing.assert_close(output.loss, 0.8 * expected + 0.2 * output.auxiliary_loss)


@pytest.mark.slow
def test_without_class_weights_the_loss_is_exactly_the_unweighted_one(weighted_model):
    """`None` takes the unweighted path of the chunked loss, bit for bit what the model computed before weighting."""
    model = weighted_model
    pixel_values, labels = photos_and_labels()
    model.config.token_loss_class_weights = None
    try:
        with torch.no_grad():
            token_features, auxiliary_logits = model._prior(pixel_values)
            loss, token_loss, auxiliary_loss = model._prior_loss(token_features, auxiliary_logits, labels)
            upsampled = torch.nn.functional.interpolate(auxiliary_logits, size=(64, 96), mode="bilinear")
            targets = model.token_targets(labels, upsampled.argmax(1))
            weight, bias = model.prior_head.classifier_weight_and_bias
            chunk_size = model.config.token_chunk_size
            unweighted = chunked_token_cross_entropy(token_features, weight, bias, targets, chunk_size)
    finally:
        model.config.token_loss_class_weights = WEIGHTS
    assert torch.equal(token_loss, unweighted)
    assert torch.equal(loss, 0.8 * unweighted + 0.2 * auxiliary_loss)


# ----------------------------------------------------------------------------------------------------------------
# train_prior.py --token_loss_class_weighting
# ----------------------------------------------------------------------------------------------------------------
def test_inverse_sqrt_frequency_weights_by_hand():
    # f = (0.8, 0.2, 0): w = f^-1/2 / (sqrt 0.8 + sqrt 0.2) = (1 / 1.2, 1 / 0.6); the absent class gets the clip.
    weights = inverse_sqrt_frequency_weights(np.array([64, 16, 0]))
    assert weights == pytest.approx([5 / 6, 5 / 3, MAX_CLASS_WEIGHT], abs=1e-6)
    assert 0.8 * weights[0] + 0.2 * weights[1] == pytest.approx(1.0, abs=1e-6)  # the pixels' mean weight is 1
    assert inverse_sqrt_frequency_weights(np.array([10**6, 1]), max_weight=10.0) == pytest.approx([1.0, 10.0], abs=1e-3)


class LabelMaps:
    """The part of a training dataset `class_pixel_counts` reads: `len` and `read(index, with_image)`."""

    def __init__(self, maps):
        self.maps = maps

    def __len__(self):
        return len(self.maps)

    def read(self, index, with_image):
        return None, self.maps[index]


def test_class_pixel_counts_skip_the_ignore_index():
    maps = [np.array([[0, 0, 255], [2, 2, 2]]), np.array([[2, 255, 255]])]
    assert class_pixel_counts(LabelMaps(maps), num_labels=4).tolist() == [2, 0, 4, 0]


def test_the_flag_and_explicit_weights_in_the_overrides_are_refused_together(tmp_path, capsys):
    arguments = ["--config_name", "gss-mobilenetv2-camvid", "--tokenizer_path", tmp_path, "--data_dir", tmp_path,
                 "--output_dir", tmp_path / "out", "--token_loss_class_weighting", "inverse_sqrt_frequency",
                 "--config_overrides", json.dumps({"token_loss_class_weights": [1.0] * 11})]  # fmt: skip
    says = usage_error_of("train_prior.py", arguments, capsys)
    assert "--token_loss_class_weighting and a token_loss_class_weights in --config_overrides" in says


@pytest.mark.slow
def test_the_flag_writes_the_training_splits_weights_into_the_saved_config(tmp_path):
    data = write_tiny_camvid(tmp_path / "camvid")
    config_dir, tokenizer_dir = tmp_path / "config", tmp_path / "tokenizer"
    config = tiny_gss_config()
    config.save_pretrained(config_dir)
    MaskigeTokenizer.from_gss_config(config).save_pretrained(tokenizer_dir)
    output = tmp_path / "prior"
    run_script(
        "train_prior.py", "--config_name", config_dir, "--tokenizer_path", tokenizer_dir, "--data_dir", data,
        *TINY_DATA, "--output_dir", output, "--max_train_steps", "1",
        "--token_loss_class_weighting", "inverse_sqrt_frequency",
    )  # fmt: skip
    counts = np.zeros(NUM_TINY_LABELS, dtype=np.int64)
    for path in (data / "trainannot").iterdir():  # the training split only, void pixels left out
        labels = np.array(Image.open(path))
        counts += np.bincount(labels[labels != VOID], minlength=NUM_TINY_LABELS)
    saved = json.loads((output / "config.json").read_text())["token_loss_class_weights"]
    assert saved == pytest.approx(inverse_sqrt_frequency_weights(counts), abs=1e-6)
    assert GSSForSemanticSegmentation.from_pretrained(output).config.token_loss_class_weights == saved
