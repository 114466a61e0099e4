import pytest
import torch
from diffusers import VQModel
from safetensors.torch import load_file
from transformers import PreTrainedModel

from gss_hf import GSSConfig, MaskigeTokenizer, generate_palette, maskige_from_labels
from tiny_models import tiny_tokenizer_config


@pytest.fixture
def tokenizer() -> MaskigeTokenizer:
    torch.manual_seed(0)
    return MaskigeTokenizer.from_config(tiny_tokenizer_config()).eval()


@pytest.fixture
def maskige() -> torch.Tensor:
    labels = torch.randint(0, 11, (2, 32, 48), generator=torch.Generator().manual_seed(0))
    labels[:, :4] = 255
    return maskige_from_labels(labels, generate_palette(11), [0, 0, 0])


def test_shape_contract(tokenizer, maskige):
    token_ids = tokenizer.encode(maskige)
    assert token_ids.shape == (2, 8, 12) and token_ids.dtype == torch.long
    assert 0 <= token_ids.min() and token_ids.max() < 64
    decoded = tokenizer.decode(token_ids)
    assert decoded.shape == (2, 3, 32, 48) and decoded.is_floating_point()
    assert 0 <= decoded.min() and decoded.max() <= 255
    assert (tokenizer.token_stride, tokenizer.codebook_size) == (4, 64)
    assert MaskigeTokenizer.from_config(tiny_tokenizer_config(token_stride=8)).token_stride == 8


def test_uint8_and_float_maskiges_give_the_same_tokens(tokenizer, maskige):
    assert torch.equal(tokenizer.encode(maskige), tokenizer.encode(maskige.float()))


def test_forward_reconstructs_and_passes_gradients_straight_through(tokenizer, maskige):
    output = tokenizer.train()(maskige)
    assert output.reconstruction.shape == maskige.shape
    assert output.decoder_logits.shape == maskige.shape
    assert torch.equal(output.token_ids, tokenizer.eval().encode(maskige))
    assert torch.equal(output.latents, tokenizer.encode_to_latents(maskige))
    assert output.latents.shape[1] == tokenizer.codebook_dim
    tokenizer.train()
    (output.reconstruction.mean() + output.quantization_loss).backward()
    assert tokenizer.vqmodel.encoder.conv_in.weight.grad.abs().sum() > 0
    assert tokenizer.vqmodel.quantize.embedding.weight.grad.abs().sum() > 0


def test_decode_of_encode_matches_forward(tokenizer, maskige):
    """Up to the rounding of the straight-through estimator z + (z_q - z)."""
    with torch.no_grad():
        reconstruction = tokenizer(maskige).reconstruction
        assert torch.allclose(tokenizer.decode(tokenizer.encode(maskige)), reconstruction, atol=1e-2)


def test_save_and_load_identity_in_diffusers_format(tokenizer, maskige, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    assert (tmp_path / "tokenizer" / "config.json").exists()
    weights = load_file(tmp_path / "tokenizer" / "diffusion_pytorch_model.safetensors")
    for key, value in tokenizer.vqmodel.state_dict().items():
        assert torch.equal(weights[key], value), key
    # Loadable by diffusers alone, and through the wrapper from a subfolder.
    assert isinstance(VQModel.from_pretrained(tmp_path / "tokenizer"), VQModel)
    loaded = MaskigeTokenizer.from_pretrained(tmp_path, subfolder="tokenizer").eval()
    token_ids = tokenizer.encode(maskige)
    assert torch.equal(loaded.encode(maskige), token_ids)
    assert torch.equal(loaded.decode(token_ids), tokenizer.decode(token_ids))


class ModelHoldingATokenizer(PreTrainedModel):
    """Stands for the GSS model: a PreTrainedModel whose post_init() initialises every submodule it owns."""

    config_class = GSSConfig
    base_model_prefix = "gss"

    def __init__(self, config: GSSConfig, tokenizer: MaskigeTokenizer):
        super().__init__(config)
        self.tokenizer = tokenizer
        self.head = torch.nn.Conv2d(3, 3, 1)
        self.post_init()


def test_post_init_never_overwrites_the_tokenizer(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = MaskigeTokenizer.from_pretrained(tmp_path)
    expected = {k: v.clone() for k, v in loaded.state_dict().items()}
    model = ModelHoldingATokenizer(GSSConfig(codebook_size=64, tokenizer_config=tiny_tokenizer_config()), loaded)
    for key, value in model.tokenizer.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_without_the_guard_post_init_would_overwrite_it():
    """The control for the test above: the same VQModel, unflagged, is re-initialised by post_init()."""
    vqmodel = VQModel(**tiny_tokenizer_config())
    before = vqmodel.encoder.conv_in.weight.clone()
    unguarded = torch.nn.Module()
    unguarded.vqmodel = vqmodel
    ModelHoldingATokenizer(GSSConfig(codebook_size=64, tokenizer_config=tiny_tokenizer_config()), unguarded)
    assert not torch.equal(vqmodel.encoder.conv_in.weight, before)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (torch.zeros(1, 3, 30, 48, dtype=torch.uint8), ValueError, "30x48.*divisible by its token stride 4"),
        (torch.zeros(1, 3, 32, 46, dtype=torch.uint8), ValueError, "divisible by its token stride 4"),
        (torch.zeros(1, 4, 32, 32, dtype=torch.uint8), ValueError, r"\(batch, 3, height, width\)"),
        (torch.zeros(1, 1, 32, 32, dtype=torch.uint8), ValueError, r"\(batch, 3, height, width\)"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.int64), TypeError, "uint8 .* or floating"),
        (torch.zeros(0, 3, 32, 32, dtype=torch.uint8), ValueError, "empty batch"),
    ],
)
def test_bad_maskiges_are_refused(tokenizer, bad, error, match):
    with pytest.raises(error, match=match):
        tokenizer.encode(bad)


@pytest.mark.parametrize(
    "bad, error, match",
    [
        (torch.full((1, 2, 2), 64), ValueError, r"in 0\.\.63"),
        (torch.full((1, 2, 2), -1), ValueError, r"in 0\.\.63"),
        (torch.zeros(1, 2, 2), TypeError, "integer codebook indices"),
        (torch.zeros(2, 2, dtype=torch.long), ValueError, r"\(batch, height, width\)"),
        (torch.zeros(0, 2, 2, dtype=torch.long), ValueError, "empty batch"),
    ],
)
def test_bad_token_ids_are_refused(tokenizer, bad, error, match):
    with pytest.raises(error, match=match):
        tokenizer.decode(bad)


def test_only_a_maskige_vqmodel_can_be_wrapped():
    with pytest.raises(TypeError, match="diffusers VQModel"):
        MaskigeTokenizer(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="3-channel"):
        MaskigeTokenizer(VQModel(**{**tiny_tokenizer_config(), "in_channels": 1}))


def test_cpu_preset_tokenizer_on_a_camvid_sized_maskige():
    """360x480 (CamVid) maps to a 90x120 token grid and back with the preset's own tokenizer."""
    config = GSSConfig.from_preset("gss-mobilenetv2-camvid")
    tokenizer = MaskigeTokenizer.from_config(config.tokenizer_config).eval()
    labels = torch.randint(0, 11, (1, 360, 480))
    token_ids = tokenizer.encode(maskige_from_labels(labels, config.palette, config.ignore_color))
    assert token_ids.shape == (1, 90, 120) and int(token_ids.max()) < config.codebook_size
    assert tokenizer.decode(token_ids).shape == (1, 3, 360, 480)


def test_freeze_tokens_trains_only_the_decoder_and_keeps_every_token(maskige):
    torch.manual_seed(0)
    tokenizer = MaskigeTokenizer.from_config(tiny_tokenizer_config())
    before = tokenizer.encode(maskige)
    tokenizing = {key: value.clone() for key, value in tokenizer.tokenizing_state_dict().items()}
    decoder = {key: value.clone() for key, value in tokenizer.vqmodel.decoder.state_dict().items()}
    tokenizer.freeze_tokens()
    trainable = [parameter for parameter in tokenizer.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    for _ in range(2):
        tokenizer(maskige).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert {name.split(".")[1] for name, p in tokenizer.named_parameters() if p.requires_grad} == {
        "post_quant_conv", "decoder"
    }
    assert tokenizing.keys() == tokenizer.tokenizing_state_dict().keys() and len(tokenizing) > 0
    assert all(torch.equal(value, tokenizer.tokenizing_state_dict()[key]) for key, value in tokenizing.items())
    assert torch.equal(tokenizer.encode(maskige), before)
    assert any(not torch.equal(value, tokenizer.vqmodel.decoder.state_dict()[key]) for key, value in decoder.items())
