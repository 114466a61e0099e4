"""The tokenizer contract: a GSS model uses its posterior only through `GSSTokenizer`, chosen by
`config.tokenizer_type`; a second tokenizer registered from outside the package trains a GSS prior unchanged."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from gss_hf import GSSForSemanticSegmentation, MaskigeTokenizer, maskige_from_labels, maskige_to_tokenizer_pixels
from gss_hf.modeling_gss_tokenizer import (
    TOKENIZER_TYPES,
    GSSTokenizer,
    TokenizerTrainingOutput,
    build_tokenizer,
    register_tokenizer_type,
    tokenizer_class,
)
from tiny_models import NUM_TINY_LABELS, tiny_gss_config


class PatchColorTokenizer(GSSTokenizer):
    """A tokenizer with nothing in common with VQModel: each 4x4 patch's mean colour snaps to the nearest of
    `codebook_size` learned colours; decoding paints the patch in its code's colour."""

    def __init__(self, codebook_size: int, stride: int = 4):
        super().__init__()
        self.stride = stride
        self.codebook = nn.Parameter(torch.rand(codebook_size, 3) * 255)

    @classmethod
    def from_gss_config(cls, config):
        return cls(config.codebook_size, config.token_stride)

    @classmethod
    def from_pretrained(cls, pretrained_path, **kwargs):
        codebook = load_file(f"{pretrained_path}/codebook.safetensors")["codebook"]
        tokenizer = cls(len(codebook))
        tokenizer.codebook.data.copy_(codebook)
        return tokenizer

    def save_pretrained(self, save_directory, **kwargs) -> None:
        save_file({"codebook": self.codebook.detach().contiguous()}, f"{save_directory}/codebook.safetensors")

    def check_compatible(self, config) -> None:
        if self.stride != config.token_stride:
            raise ValueError(f"stride {self.stride} differs from the config's {config.token_stride}")

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    @property
    def token_stride(self) -> int:
        return self.stride

    def _patch_means(self, maskige: torch.Tensor) -> torch.Tensor:
        return nn.functional.avg_pool2d(maskige.float(), self.stride)

    def _nearest_codes(self, means: torch.Tensor) -> torch.LongTensor:
        distances = ((means[:, None] - self.codebook[None, :, :, None, None]) ** 2).sum(2)
        return distances.argmin(1)

    @torch.no_grad()
    def encode(self, maskige: torch.Tensor) -> torch.LongTensor:
        return self._nearest_codes(self._patch_means(maskige))

    def decode(self, token_ids: torch.LongTensor) -> torch.Tensor:
        painted = self.codebook[token_ids].permute(0, 3, 1, 2)
        return painted.repeat_interleave(self.stride, 2).repeat_interleave(self.stride, 3)

    def forward(self, maskige: torch.Tensor, reconstruction_weight: float = 1.0) -> TokenizerTrainingOutput:
        means = self._patch_means(maskige)
        token_ids = self._nearest_codes(means)
        loss = nn.functional.mse_loss(self.codebook[token_ids].permute(0, 3, 1, 2), means) / 255**2
        return TokenizerTrainingOutput(
            loss=reconstruction_weight * loss, reconstruction_loss=loss, token_ids=token_ids, latents=means
        )

    @torch.no_grad()
    def reseed_dead_codes(self, usage, latents, generator) -> int:
        dead = (usage == 0).nonzero().flatten()
        candidates = latents.permute(0, 2, 3, 1).reshape(-1, 3)
        self.codebook[dead] = candidates[torch.randint(len(candidates), (len(dead),), generator=generator)]
        return len(dead)


@pytest.fixture
def patch_color_type():
    register_tokenizer_type("patch-color", PatchColorTokenizer)
    yield "patch-color"
    del TOKENIZER_TYPES["patch-color"]


def test_vqmodel_is_the_registered_default():
    config = tiny_gss_config()
    assert config.tokenizer_type == "vqmodel"
    assert TOKENIZER_TYPES["vqmodel"] is MaskigeTokenizer
    assert isinstance(build_tokenizer(config), MaskigeTokenizer)


def test_an_unknown_tokenizer_type_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"Unknown `tokenizer_type` 'dalle-typo'.*'vqmodel'"):
        build_tokenizer(tiny_gss_config(tokenizer_type="dalle-typo"))


def test_only_gss_tokenizers_can_be_registered():
    with pytest.raises(TypeError, match="GSSTokenizer subclass"):
        register_tokenizer_type("conv", nn.Conv2d)


def test_a_registered_tokenizer_trains_two_stage_ii_steps_and_predicts(patch_color_type):
    torch.manual_seed(0)
    model = GSSForSemanticSegmentation(tiny_gss_config(tokenizer_type=patch_color_type))
    assert isinstance(model.tokenizer, PatchColorTokenizer)
    assert not model.tokenizer.codebook.requires_grad, "a GSS model keeps its tokenizer frozen"
    codebook = model.tokenizer.codebook.detach().clone()
    pixel_values = torch.randn(2, 3, 32, 48)
    labels = torch.randint(0, NUM_TINY_LABELS, (2, 32, 48))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    head = model.prior_head.classifier.weight.detach().clone()
    model.train()
    for _ in range(2):
        output = model(pixel_values, labels=labels)
        assert torch.isfinite(output.loss)
        output.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert not torch.equal(model.prior_head.classifier.weight, head), "the prior trained"
    assert torch.equal(model.tokenizer.codebook, codebook), "the tokenizer did not"
    model.eval()
    with torch.no_grad():
        prediction = model(pixel_values)
    assert prediction.logits.shape == (2, NUM_TINY_LABELS, 32, 48)
    assert torch.equal(prediction.maskige, model.tokenizer.decode(prediction.token_ids))


def test_load_tokenizer_takes_only_the_configured_type(patch_color_type, tmp_path):
    model = GSSForSemanticSegmentation(tiny_gss_config(tokenizer_type=patch_color_type))
    PatchColorTokenizer(model.config.codebook_size).save_pretrained(tmp_path)
    trained = tokenizer_class(model.config).from_pretrained(tmp_path)
    model.load_tokenizer(trained)
    assert torch.equal(model.tokenizer.codebook, trained.codebook)
    with pytest.raises(TypeError, match="builds a PatchColorTokenizer"):
        model.load_tokenizer(MaskigeTokenizer.from_gss_config(tiny_gss_config()))


def test_the_vqmodel_stage_i_loss_is_weighted_reconstruction_plus_the_codebook_loss():
    config = tiny_gss_config()
    tokenizer = MaskigeTokenizer.from_gss_config(config)
    labels = torch.randint(0, NUM_TINY_LABELS, (2, 16, 16))
    maskige = maskige_from_labels(labels, config.palette, config.ignore_color)
    output = tokenizer(maskige, reconstruction_weight=3.0)
    expected = nn.functional.mse_loss(torch.sigmoid(output.decoder_logits), maskige_to_tokenizer_pixels(maskige))
    torch.testing.assert_close(output.reconstruction_loss, expected)
    torch.testing.assert_close(output.loss, 3.0 * expected + output.quantization_loss)
    assert output.token_ids.shape == (2, 4, 4) and output.latents.shape[-2:] == (4, 4)


def test_vqmodel_reseeding_moves_exactly_the_unused_codes_onto_encoder_outputs():
    tokenizer = MaskigeTokenizer.from_gss_config(tiny_gss_config())
    before = tokenizer.vqmodel.quantize.embedding.weight.detach().clone()
    usage = torch.ones(tokenizer.codebook_size, dtype=torch.long)
    usage[[3, 17]] = 0
    latents = torch.randn(2, before.shape[1], 4, 4)
    assert tokenizer.reseed_dead_codes(usage, latents, torch.Generator().manual_seed(0)) == 2
    after = tokenizer.vqmodel.quantize.embedding.weight.detach()
    changed = (after != before).any(1).nonzero().flatten().tolist()
    assert changed == [3, 17]
    candidates = latents.permute(0, 2, 3, 1).reshape(-1, before.shape[1])
    assert all((candidates == after[code]).all(1).any() for code in changed)
