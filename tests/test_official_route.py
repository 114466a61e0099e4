"""The official route to the 1/4 token grid ("official_2x"): label maps up-sampled 2x before an 8x tokenizer, the
official code's filling and token ignore, and inference at 2x resized back; checked against hand-written official
steps and against the official code's own tensors (`../shared/data/official_gss`, skipped when absent)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from huggingface_hub.errors import StrictDataclassClassValidationError

from gss_hf import DalleTokenizer, GSSConfig, GSSForSemanticSegmentation, maskige_from_labels, upsample_labels_2x
from gss_hf.maskige import preset_class_names
from gss_hf.token_cross_entropy import TOKEN_IGNORE_INDEX
from official_gss import official_gss_file
from tiny_models import NUM_TINY_LABELS, tiny_gss_config, tiny_tokenizer_config


OFFICIAL_FF_FIXTURES = ("cityscapes_ff_r101_narrow", "ade20k_ff_swin_tiny")


def official_upsampling(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """`GenerativeSegHeadFF.forward_train`'s label up-sampling, step by step, on (batch, H, W) labels."""
    labels = labels.clone()
    labels[labels == 255] = num_classes
    one_hot = F.one_hot(labels, num_classes + 1).permute(0, 3, 1, 2).float()
    upsampled = F.interpolate(one_hot, size=(labels.shape[1] * 2, labels.shape[2] * 2), mode="bilinear").argmax(1)
    upsampled[upsampled == num_classes] = 255
    return upsampled


def test_upsampling_equals_the_official_steps_on_a_hand_made_map():
    labels = torch.tensor([[0, 0, 1, 255], [0, 2, 1, 255], [3, 3, 255, 255]])[None]
    upsampled = upsample_labels_2x(labels)
    assert torch.equal(upsampled, official_upsampling(labels, 4))
    assert upsampled.shape == (1, 6, 8)
    assert upsampled[0, :2, :2].tolist() == [[0, 0], [0, 0]] and upsampled[0, 2:4, 2:4].tolist() == [[2, 2], [2, 2]]


@pytest.mark.parametrize("num_classes", [3, 19, 150])
def test_upsampling_equals_the_official_steps_on_random_maps(num_classes):
    generator = torch.Generator().manual_seed(num_classes)
    labels = torch.randint(0, num_classes, (2, 13, 17), generator=generator)
    labels[torch.rand(labels.shape, generator=generator) < 0.2] = 255
    assert torch.equal(upsample_labels_2x(labels), official_upsampling(labels, num_classes))


@pytest.mark.parametrize("fixture", OFFICIAL_FF_FIXTURES)
def test_upsampling_equals_the_official_codes_training_labels(fixture):
    tensors = load_file(official_gss_file(fixture, "io.safetensors"))
    upsampled = upsample_labels_2x(tensors["labels"][:, 0])
    assert torch.equal(upsampled, tensors["train_pixel_seg_label"][:, 0].long())


@pytest.fixture(scope="module")
def official_route_model() -> GSSForSemanticSegmentation:
    torch.manual_seed(0)
    config = tiny_gss_config(maskige_route="official_2x", tokenizer_config=tiny_tokenizer_config(token_stride=8))
    return GSSForSemanticSegmentation(config)


def test_the_route_sets_the_tokenizer_stride(official_route_model):
    assert official_route_model.config.token_stride == 4
    assert official_route_model.config.tokenizer_stride == 8 == official_route_model.tokenizer.token_stride


def test_training_targets_follow_the_official_forward_train(official_route_model):
    model = official_route_model
    generator = torch.Generator().manual_seed(3)
    labels = torch.randint(0, NUM_TINY_LABELS, (1, 32, 64), generator=generator)
    labels[:, 8:24, 16:40] = 255  # wholly unlabelled 8x8 patches at 2x, and partly labelled ones at the edges
    fill_at_2x = torch.randint(0, NUM_TINY_LABELS, (1, 64, 128), generator=generator)
    upsampled = upsample_labels_2x(labels)

    targets = model.token_targets(upsampled, fill_at_2x)

    # forward_train: every unlabelled pixel takes the auxiliary prediction, the dVAE encodes the result, and a token
    # is ignored where an 8x8 max-pool of "labelled" is 0.
    for_reconstruction = torch.where(upsampled == 255, fill_at_2x, upsampled)
    config = model.config
    expected = model.tokenizer.encode(maskige_from_labels(for_reconstruction, config.palette, config.ignore_color))
    ignored = F.max_pool2d((upsampled != 255)[:, None].float(), kernel_size=8)[:, 0] == 0
    expected[ignored] = TOKEN_IGNORE_INDEX
    assert targets.shape == (1, 8, 16)
    assert ignored.any() and not ignored.all()
    assert torch.equal(targets, expected)


def test_the_loss_uses_the_upsampled_labels_and_inference_returns_the_photo_size(official_route_model):
    model = official_route_model
    pixel_values = torch.randn(2, 3, 32, 64, generator=torch.Generator().manual_seed(4))
    labels = torch.randint(0, NUM_TINY_LABELS, (2, 32, 64), generator=torch.Generator().manual_seed(5))
    output = model.train()(pixel_values, labels=labels)
    output.loss.backward()
    assert torch.isfinite(output.loss) and output.auxiliary_loss > 0
    model.eval()
    with torch.no_grad():
        prediction = model(pixel_values)
        maskige_at_2x = model.tokenizer.decode(prediction.token_ids)
    assert prediction.token_ids.shape == (2, 8, 16)
    assert maskige_at_2x.shape == (2, 3, 64, 128)
    assert prediction.logits.shape == (2, NUM_TINY_LABELS, 32, 64) and prediction.maskige.shape == (2, 3, 32, 64)
    scores_at_2x = model.inverse(maskige_at_2x)
    expected = F.interpolate(scores_at_2x, size=(32, 64), mode="bilinear")
    torch.testing.assert_close(prediction.logits, expected)


def official_dalle_tiny() -> DalleTokenizer:
    return DalleTokenizer.from_openai_pickles(official_gss_file("dalle_tiny", "encoder.pkl"),
                                              official_gss_file("dalle_tiny", "decoder.pkl"))  # fmt: skip


@pytest.mark.parametrize("mode", ["evalbn", "trainbn"])
def test_the_official_codes_training_targets_are_reproduced_with_its_dvae(mode):
    """Cityscapes GSS-FF (official code, random weights, the tiny dVAE of `dalle_tiny/`): from its label map and its
    auxiliary prediction, the route gives exactly the token targets the official `forward_train` computed."""
    tokenizer = official_dalle_tiny()
    tensors = load_file(official_gss_file("cityscapes_ff_r101_narrow", "io.safetensors"))
    config = GSSConfig(
        palette="cityscapes", **cityscapes_labels(), tokenizer_type="dalle", maskige_route="official_2x",
        tokenizer_config=tokenizer.tokenizer_config, mla_channels=8, prior_hidden_size=16, prior_num_heads=2,
        prior_intermediate_size=32, prior_classifier_channels=16, auxiliary_channels=8,
    )  # fmt: skip
    model = GSSForSemanticSegmentation(config)
    model.load_tokenizer(tokenizer)
    upsampled = upsample_labels_2x(tensors["labels"][:, 0])
    # The official auxiliary prediction is what `gt_for_recon` holds at the unlabelled pixels.
    auxiliary_prediction = tensors[f"train_{mode}.gt_for_recon"][:, 0].long()

    targets = model.token_targets(upsampled, auxiliary_prediction)

    official = tensors[f"train_{mode}.target_token_ids_masked"][:, 0]
    official = official.masked_fill(official == config.codebook_size, TOKEN_IGNORE_INDEX)
    assert (official == TOKEN_IGNORE_INDEX).sum() == 18
    assert torch.equal(targets, official)


def cityscapes_labels() -> dict:
    names = preset_class_names("cityscapes")
    return {"id2label": dict(enumerate(names)), "label2id": {name: index for index, name in enumerate(names)}}


def test_a_model_with_the_dvae_trains_and_predicts_on_the_official_route():
    tokenizer = official_dalle_tiny()
    config = tiny_gss_config(
        codebook_size=8192, tokenizer_type="dalle", maskige_route="official_2x",
        tokenizer_config={**tokenizer.tokenizer_config, "decode_tile_size": 4},
    )  # fmt: skip
    model = GSSForSemanticSegmentation(config)
    model.load_tokenizer(tokenizer)
    pixel_values = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(6))
    labels = torch.randint(0, NUM_TINY_LABELS, (1, 32, 48), generator=torch.Generator().manual_seed(7))
    loss = model.train()(pixel_values, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(parameter.grad is None for parameter in model.tokenizer.parameters())
    with torch.no_grad():
        prediction = model.eval()(pixel_values)
    assert prediction.token_ids.shape == (1, 8, 12) and prediction.logits.shape == (1, NUM_TINY_LABELS, 32, 48)


def test_a_config_of_another_codebook_size_cannot_take_openais_dvae():
    with pytest.raises(StrictDataclassClassValidationError, match=r"`tokenizer_config\['vocab_size'\]` \(8192\) must equal `codebook_size` \(1024\)"):
        GSSConfig(tokenizer_type="dalle", maskige_route="official_2x", codebook_size=1024)
    tokenizer = official_dalle_tiny()
    config = tiny_gss_config(codebook_size=1024, tokenizer_type="dalle", maskige_route="official_2x",
                             tokenizer_config={**tokenizer.tokenizer_config, "vocab_size": 1024})  # fmt: skip
    with pytest.raises(ValueError, match="The tokenizer has 8192 codes but `config.codebook_size` is 1024"):
        GSSForSemanticSegmentation(config).load_tokenizer(tokenizer)
