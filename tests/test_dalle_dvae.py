"""The DALL-E dVAE port (tokenizer_type "dalle"): parity with OpenAI's `dall_e` package, the released pickles read
without the package and without running them, tiled decoding, saving and loading, alone and in a GSS model."""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")

import collections
import json
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from gss_hf import DalleTokenizer, GSSForSemanticSegmentation, default_dalle_tokenizer_config
from gss_hf.modeling_dalle_dvae import convert_openai_state_dict
from gss_hf.modeling_gss_tokenizer import TOKENIZER_TYPES, build_tokenizer
from official_gss import official_gss_file
from tiny_models import tiny_gss_config


SMALL_SETTINGS = {"n_hid": 8, "n_blk_per_group": 1, "vocab_size": 64, "n_init": 8}


@pytest.fixture(autouse=True)
def one_thread():
    """These convolutions are tiny: on a busy 2-core machine, thread hand-offs cost more than the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------------------------------------------
# References built with the dall_e package
# ----------------------------------------------------------------------------------------------------------------
def dall_e_modules(group_count=4, n_hid=16, n_blk_per_group=1, vocab_size=64, n_init=8, seed=0):
    """A dall_e 0.1 encoder and decoder with random weights, perturbed (biases, the encoder's input and output
    convs, the decoder's code embedding and output conv) so that codes and colours vary. dall_e builds exactly 4
    groups; other group counts are the same `blocks` tree of its own blocks and convs. Its validators
    (n_hid >= 64, vocab_size >= 512) are switched off."""
    attr = pytest.importorskip("attr")
    dall_e = pytest.importorskip("dall_e")
    from dall_e.decoder import DecoderBlock
    from dall_e.encoder import EncoderBlock
    from dall_e.utils import Conv2d

    torch.manual_seed(seed)
    with attr.validators.disabled():
        if group_count == 4:
            encoder = dall_e.Encoder(n_hid=n_hid, n_blk_per_group=n_blk_per_group, vocab_size=vocab_size)
            decoder = dall_e.Decoder(
                n_init=n_init, n_hid=n_hid, n_blk_per_group=n_blk_per_group, vocab_size=vocab_size
            )
        else:
            n_layers = group_count * n_blk_per_group
            encoder = package_blocks_tree(
                Conv2d(3, n_hid, 7),
                [n_hid * 2**group for group in range(group_count)],
                lambda n_in, n_out: EncoderBlock(n_in, n_out, n_layers=n_layers),
                lambda: nn.MaxPool2d(kernel_size=2),
                "pool",
                Conv2d(n_hid * 2 ** (group_count - 1), vocab_size, 1, use_float16=False),
            )
            decoder = package_blocks_tree(
                Conv2d(vocab_size, n_init, 1, use_float16=False),
                [n_hid * 2 ** (group_count - 1 - group) for group in range(group_count)],
                lambda n_in, n_out: DecoderBlock(n_in, n_out, n_layers=n_layers),
                lambda: nn.Upsample(scale_factor=2, mode="nearest"),
                "upsample",
                Conv2d(n_hid, 6, 1),
            )
    with torch.no_grad():
        for name, parameter in [*encoder.named_parameters(), *decoder.named_parameters()]:
            if name.endswith(".b"):
                parameter.normal_(std=0.1)
        encoder.blocks.input.b.copy_(-0.5 * encoder.blocks.input.w.sum((1, 2, 3)))  # zero response to mid-grey
        encoder.blocks.output.conv.w.mul_(4)
        decoder.blocks.input.w.mul_(vocab_size**0.5)
        decoder.blocks.output.conv.w.mul_(4)
    return encoder.eval(), decoder.eval()


def package_blocks_tree(input_conv, widths, make_block, make_resampler, resampler_name, output_conv):
    """dall_e's `blocks` tree for any number of groups: input conv, groups of one block each (the tests use
    n_blk_per_group 2 only with 4 groups) ending in the resampler but the last, ReLU and output conv."""
    layers = OrderedDict(input=input_conv)
    width = input_conv.n_out
    for group, group_width in enumerate(widths, 1):
        group_layers = OrderedDict(block_1=make_block(width, group_width))
        if group < len(widths):
            group_layers[resampler_name] = make_resampler()
        layers[f"group_{group}"] = nn.Sequential(group_layers)
        width = group_width
    layers["output"] = nn.Sequential(OrderedDict(relu=nn.ReLU(), conv=output_conv))
    return nn.Sequential(OrderedDict(blocks=nn.Sequential(layers)))


def package_tokens_and_maskige(encoder, decoder, maskige, vocab_size):
    """What the official code computes with the package: the encoder's argmax on `map_pixels(maskige / 255)`, and
    `unmap_pixels(sigmoid(decoder(one_hot)[:, :3])) * 255` of those codes."""
    from dall_e import map_pixels, unmap_pixels

    with torch.no_grad():
        token_ids = encoder(map_pixels(maskige / 255)).argmax(1)
        one_hot = nn.functional.one_hot(token_ids, vocab_size).permute(0, 3, 1, 2).float()
        decoded = unmap_pixels(torch.sigmoid(decoder(one_hot)[:, :3])) * 255
    return token_ids, decoded


def port_of(encoder, decoder, **settings) -> DalleTokenizer:
    tokenizer = DalleTokenizer(settings).eval()
    tokenizer.encoder.load_state_dict(convert_openai_state_dict(encoder.state_dict()))
    tokenizer.decoder.load_state_dict(convert_openai_state_dict(decoder.state_dict()))
    return tokenizer


def random_maskige(batch, height, width, seed=0):
    """A random colour per 4x4 patch, so that neighbouring tokens see different colours (as label regions do)."""
    colours = torch.randint(0, 256, (batch, 3, height // 4, width // 4), generator=torch.Generator().manual_seed(seed))
    return colours.repeat_interleave(4, 2).repeat_interleave(4, 3).float()


PARITY_SETTINGS = [
    {"group_count": 4, "n_hid": 16, "n_blk_per_group": 1, "vocab_size": 64, "n_init": 8},
    {"group_count": 4, "n_hid": 32, "n_blk_per_group": 2, "vocab_size": 8192, "n_init": 16},
    {"group_count": 3, "n_hid": 16, "n_blk_per_group": 1, "vocab_size": 512, "n_init": 32},
]


@pytest.mark.parametrize("settings", PARITY_SETTINGS, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()))
def test_encode_and_decode_match_the_dall_e_package(settings):
    encoder, decoder = dall_e_modules(**settings)
    tokenizer = port_of(encoder, decoder, **settings)
    stride = 2 ** (settings["group_count"] - 1)
    maskige = random_maskige(2, 6 * stride, 5 * stride)
    expected_ids, expected_maskige = package_tokens_and_maskige(encoder, decoder, maskige, settings["vocab_size"])
    token_ids = tokenizer.encode(maskige)
    assert token_ids.shape == (2, 6, 5)
    assert len(expected_ids.unique()) > 3, "the reference codes should vary"
    assert torch.equal(token_ids, expected_ids)
    decoded = tokenizer.decode(token_ids)
    assert decoded.shape == maskige.shape and decoded.dtype == torch.float32
    assert expected_maskige.std() > 5, "the reference colours should vary"
    torch.testing.assert_close(decoded, expected_maskige, rtol=0, atol=1e-4)


def test_the_code_lookup_equals_the_input_conv_on_one_hot_codes():
    tokenizer = DalleTokenizer(SMALL_SETTINGS)
    token_ids = torch.randint(0, 64, (2, 3, 4))
    one_hot = nn.functional.one_hot(token_ids, 64).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        expected = tokenizer.decoder.blocks.input(one_hot)
        torch.testing.assert_close(tokenizer.decoder.embed_tokens(token_ids), expected, rtol=0, atol=1e-6)


def test_the_state_dict_maps_by_renaming_w_and_b_only():
    encoder, decoder = dall_e_modules()
    tokenizer = DalleTokenizer(SMALL_SETTINGS | {"n_hid": 16})
    for package, port in ((encoder, tokenizer.encoder), (decoder, tokenizer.decoder)):
        renamed = convert_openai_state_dict(package.state_dict())
        assert renamed.keys() == port.state_dict().keys()
        assert all(renamed[key].shape == tensor.shape for key, tensor in port.state_dict().items())
    prefixed = convert_openai_state_dict({"decode_head.d_vae.encoder.blocks.input.w": 1, "other.wb": 2})
    assert prefixed == {"decode_head.d_vae.encoder.blocks.input.weight": 1, "other.wb": 2}


# ----------------------------------------------------------------------------------------------------------------
# OpenAI's whole-module pickles
# ----------------------------------------------------------------------------------------------------------------
def save_package_pickles(folder: Path, **settings) -> tuple[Path, Path, nn.Module, nn.Module]:
    encoder, decoder = dall_e_modules(**settings)
    encoder_path, decoder_path = folder / "encoder.pkl", folder / "decoder.pkl"
    torch.save(encoder, encoder_path)
    torch.save(decoder, decoder_path)
    return encoder_path, decoder_path, encoder, decoder


def test_from_openai_pickles_reads_torch_saved_package_modules(tmp_path):
    settings = {"n_hid": 16, "n_blk_per_group": 2, "vocab_size": 128, "n_init": 8}
    encoder_path, decoder_path, encoder, decoder = save_package_pickles(tmp_path, **settings)
    tokenizer = DalleTokenizer.from_openai_pickles(encoder_path, decoder_path).eval()
    assert tokenizer.tokenizer_config == default_dalle_tokenizer_config(**settings)
    expected = port_of(encoder, decoder, **settings).state_dict()
    assert all(torch.equal(tensor, expected[key]) for key, tensor in tokenizer.state_dict().items())
    maskige = random_maskige(1, 32, 40)
    expected_ids, expected_maskige = package_tokens_and_maskige(encoder, decoder, maskige, 128)
    assert torch.equal(tokenizer.encode(maskige), expected_ids)
    torch.testing.assert_close(tokenizer.decode(expected_ids), expected_maskige, rtol=0, atol=1e-4)
    with_tiles = DalleTokenizer.from_openai_pickles(encoder_path, decoder_path, {"n_hid": 16, "decode_tile_size": 0})
    assert with_tiles.tokenizer_config["decode_tile_size"] == 0


@pytest.fixture
def dalle_tiny() -> Path:
    return official_gss_file("dalle_tiny", "encoder.pkl").parent


def check_against_the_official_outputs(tokenizer: DalleTokenizer, folder: Path) -> None:
    outputs = load_file(folder / "io.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(tokenizer.encoder(outputs["mapped"]), outputs["encoder_logits"], rtol=0, atol=1e-5)
        torch.testing.assert_close(
            tokenizer.decoder(outputs["codebook_indices"]), outputs["decoder_output"], rtol=0, atol=1e-5
        )
    assert torch.equal(tokenizer.encode(outputs["x"] * 255), outputs["codebook_indices"])
    decoded = tokenizer.decode(outputs["codebook_indices"])
    torch.testing.assert_close(decoded, outputs["reconstruction"] * 255, rtol=0, atol=1e-4)


def test_the_official_pickles_reproduce_the_official_outputs(dalle_tiny):
    tokenizer = DalleTokenizer.from_openai_pickles(dalle_tiny / "encoder.pkl", dalle_tiny / "decoder.pkl")
    hyperparameters = json.loads((dalle_tiny / "hyperparameters.json").read_text())
    for part in ("encoder", "decoder"):
        for key, value in hyperparameters[part]["attrs_fields"].items():
            if key in tokenizer.tokenizer_config:
                assert tokenizer.tokenizer_config[key] == value, key
    assert tokenizer.tokenizer_config["group_count"] == hyperparameters["encoder"]["class_attributes"]["group_count"]
    check_against_the_official_outputs(tokenizer.eval(), dalle_tiny)


def test_the_official_state_dicts_convert_to_the_same_tokenizer(dalle_tiny):
    from_pickles = DalleTokenizer.from_openai_pickles(dalle_tiny / "encoder.pkl", dalle_tiny / "decoder.pkl")
    tokenizer = DalleTokenizer(from_pickles.tokenizer_config).eval()
    tokenizer.encoder.load_state_dict(
        convert_openai_state_dict(load_file(dalle_tiny / "encoder_state_dict.safetensors"))
    )
    tokenizer.decoder.load_state_dict(
        convert_openai_state_dict(load_file(dalle_tiny / "decoder_state_dict.safetensors"))
    )
    expected = from_pickles.state_dict()
    assert all(torch.equal(tensor, expected[key]) for key, tensor in tokenizer.state_dict().items())
    check_against_the_official_outputs(tokenizer, dalle_tiny)


class RunsAShellCommand:
    """Unpickling it runs `touch marker`, as a malicious checkpoint would run anything."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class NotADvaePart:
    """A class no dVAE pickle names."""


def test_the_malicious_payload_runs_when_unpickled_plainly(tmp_path):
    """The control for the test below: the payload is real."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(RunsAShellCommand(marker)))
    assert marker.exists()


@pytest.mark.parametrize("inside_a_module", [False, True])
def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path, inside_a_module):
    marker = tmp_path / "pwned"
    if inside_a_module:
        encoder_path, decoder_path, encoder, _ = save_package_pickles(tmp_path)
        encoder.blocks.input.payload = RunsAShellCommand(marker)
        torch.save(encoder, encoder_path)
    else:
        encoder_path, decoder_path = tmp_path / "encoder.pkl", tmp_path / "decoder.pkl"
        torch.save({"blocks.input.w": torch.zeros(1), "payload": RunsAShellCommand(marker)}, encoder_path)
    with pytest.raises(pickle.UnpicklingError, match=r"encoder\.pkl.*`(posix|os)\.system`"):
        DalleTokenizer.from_openai_pickles(encoder_path, decoder_path)
    assert not marker.exists()


@pytest.mark.parametrize("stranger", [collections.Counter({"a": 1}), NotADvaePart()], ids=["Counter", "custom"])
def test_any_other_global_is_refused_by_name(tmp_path, stranger):
    encoder_path, decoder_path, _, decoder = save_package_pickles(tmp_path)
    decoder.blocks.group_2.stranger = stranger
    torch.save(decoder, decoder_path)
    name = f"{type(stranger).__module__}.{type(stranger).__qualname__}"
    with pytest.raises(pickle.UnpicklingError, match=rf"decoder\.pkl.*`{name}`"):
        DalleTokenizer.from_openai_pickles(encoder_path, decoder_path)


def test_pickles_of_another_class_are_refused(tmp_path):
    encoder_path, decoder_path, _, _ = save_package_pickles(tmp_path)
    with pytest.raises(ValueError, match=r"dall_e\.decoder\.Decoder, not a dall_e\.encoder\.Encoder"):
        DalleTokenizer.from_openai_pickles(decoder_path, encoder_path)


def test_an_encoder_and_decoder_of_different_dvaes_are_refused(tmp_path):
    encoder_path, _, _, _ = save_package_pickles(tmp_path, vocab_size=64)
    other_folder = tmp_path / "other"
    other_folder.mkdir()
    _, other_decoder_path, _, other_decoder = save_package_pickles(other_folder, vocab_size=128)
    with pytest.raises(ValueError, match=r"differ in \(encoder, decoder\): vocab_size \(64, 128\)"):
        DalleTokenizer.from_openai_pickles(encoder_path, other_decoder_path)
    del other_decoder.blocks.group_4
    torch.save(other_decoder, other_decoder_path)
    with pytest.raises(ValueError, match=r"vocab_size \(64, 128\), group_count \(4, 3\)"):
        DalleTokenizer.from_openai_pickles(encoder_path, other_decoder_path)


def test_the_residual_gain_must_be_the_architectures(tmp_path, monkeypatch):
    """dall_e derives the gain from a class attribute; a pickle built with another one is not this architecture."""
    dall_e = pytest.importorskip("dall_e")
    monkeypatch.setattr(dall_e.Encoder, "group_count", 2)
    encoder_path, decoder_path, _, _ = save_package_pickles(tmp_path)
    with pytest.raises(ValueError, match=r"encoder\.pkl: residual blocks with gains \['0\.25'\].*0\.0625"):
        DalleTokenizer.from_openai_pickles(encoder_path, decoder_path)


@pytest.mark.parametrize(
    "tokenizer_config, match",
    [
        ({"n_hid": 32}, r"\(pickles, tokenizer_config\): n_hid \(16, 32\)"),
        ({"vocab_size": 8192, "n_blk_per_group": 2}, r"n_blk_per_group \(1, 2\), vocab_size \(64, 8192\)"),
        ({"nhid": 16}, r"Unknown DALL-E dVAE settings \['nhid'\]"),
    ],
)
def test_a_tokenizer_config_that_differs_from_the_pickles_is_refused(tmp_path, tokenizer_config, match):
    encoder_path, decoder_path, _, _ = save_package_pickles(tmp_path)
    with pytest.raises(ValueError, match=match):
        DalleTokenizer.from_openai_pickles(encoder_path, decoder_path, tokenizer_config)


def test_missing_and_truncated_pickles_are_named(tmp_path):
    encoder_path, decoder_path, _, _ = save_package_pickles(tmp_path)
    with pytest.raises(FileNotFoundError, match="nowhere.pkl"):
        DalleTokenizer.from_openai_pickles(encoder_path, tmp_path / "nowhere.pkl")
    data = decoder_path.read_bytes()
    decoder_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"decoder\.pkl is not a `torch.save` zip archive"):
        DalleTokenizer.from_openai_pickles(encoder_path, decoder_path)


# ----------------------------------------------------------------------------------------------------------------
# Encoding and decoding
# ----------------------------------------------------------------------------------------------------------------
def test_a_maskige_not_divisible_by_the_stride_names_the_sizes_to_pad_or_crop_to():
    tokenizer = DalleTokenizer(SMALL_SETTINGS)
    with pytest.raises(ValueError, match=r"20x30.*stride 8: pad .* to 24x32 or crop it to 16x24"):
        tokenizer.encode(torch.zeros(1, 3, 20, 30))
    with pytest.raises(ValueError, match=r"pad .* to 8x16 first"):
        tokenizer.encode(torch.zeros(1, 3, 4, 16))


@pytest.mark.parametrize("bad_id", [-1, 64])
def test_token_ids_outside_the_codebook_are_refused(bad_id):
    token_ids = torch.zeros(1, 2, 2, dtype=torch.long)
    token_ids[0, 1, 0] = bad_id
    with pytest.raises(ValueError, match=r"must be in 0\.\.63"):
        DalleTokenizer(SMALL_SETTINGS).decode(token_ids)


def test_tiled_decoding_equals_whole_decoding():
    """Tiles of 4 tokens on a 13x9 grid, two residual blocks per group (a 12-token margin), codes whose
    embeddings differ strongly."""
    torch.manual_seed(0)
    tokenizer = DalleTokenizer(SMALL_SETTINGS | {"n_blk_per_group": 2, "decode_tile_size": 4}).eval()
    with torch.no_grad():
        tokenizer.decoder.blocks.input.weight.mul_(30)
    assert tokenizer.decode_margin == 12
    token_ids = torch.randint(0, 64, (1, 13, 9), generator=torch.Generator().manual_seed(1))
    tiled = tokenizer.decode(token_ids)
    with torch.no_grad():
        whole = tokenizer._decode_in_tiles(token_ids, 0, 0)
        without_context = tokenizer._decode_in_tiles(token_ids, 4, margin=0)
    assert whole.std() > 1
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5)
    assert (without_context - whole).abs().max() > 1e-2, "tiles without context differ: the margin is needed"


@pytest.mark.parametrize("n_blk_per_group, margin", [(1, 6), (2, 12)])
def test_a_token_changes_nothing_beyond_the_margin(n_blk_per_group, margin):
    """The margin covers the receptive field: changing one code changes decoded pixels at most `decode_margin`
    tokens away (measured on the whole-grid decoder, independent of the tiling)."""
    torch.manual_seed(0)
    tokenizer = DalleTokenizer(SMALL_SETTINGS | {"n_blk_per_group": n_blk_per_group}).eval()
    assert tokenizer.decode_margin == margin
    size, centre = 2 * margin + 5, margin + 2
    token_ids = torch.randint(0, 64, (1, size, size))
    changed_ids = token_ids.clone()
    changed_ids[0, centre, centre] = (token_ids[0, centre, centre] + 1) % 64
    with torch.no_grad():
        changed = tokenizer._decode_in_tiles(token_ids, 0, 0) != tokenizer._decode_in_tiles(changed_ids, 0, 0)
    token_rows, token_cols = (changed.any(1)[0].nonzero() // tokenizer.token_stride).unbind(1)
    reach = max((token_rows - centre).abs().max(), (token_cols - centre).abs().max())
    assert 0 < reach <= margin


def test_it_runs_in_bfloat16_and_under_autocast():
    torch.manual_seed(0)
    tokenizer = DalleTokenizer(SMALL_SETTINGS).eval()
    maskige = random_maskige(1, 16, 24)
    token_ids = tokenizer.encode(maskige)
    reference = tokenizer.decode(token_ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_ids, autocast_maskige = tokenizer.encode(maskige), tokenizer.decode(token_ids)
    halved = tokenizer.to(torch.bfloat16)
    bfloat16_ids, bfloat16_maskige = halved.encode(maskige), halved.decode(token_ids)
    for ids, decoded in ((autocast_ids, autocast_maskige), (bfloat16_ids, bfloat16_maskige)):
        assert ids.shape == token_ids.shape and decoded.dtype == torch.float32
        torch.testing.assert_close(decoded, reference, rtol=0, atol=1.0)


def test_the_dvae_is_frozen():
    tokenizer = DalleTokenizer(SMALL_SETTINGS)
    with pytest.raises(NotImplementedError, match=r"frozen.*OpenAI's weights.*tokenizer_type \"vqmodel\""):
        tokenizer(torch.zeros(1, 3, 8, 8), reconstruction_weight=1.0)
    with pytest.raises(NotImplementedError, match="frozen"):
        tokenizer.reseed_dead_codes(torch.zeros(64, dtype=torch.long), torch.zeros(1, 8, 1, 1), torch.Generator())


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"n_hid": 10}, "multiple of 4"),
        ({"n_blk_per_group": 0}, "`n_blk_per_group` must be an integer >= 1"),
        ({"decode_tile_size": -1}, "`decode_tile_size` must be an integer >= 0"),
        ({"output_channels": 4}, "3-channel maskiges"),
        ({"vocab": 64}, r"Unknown DALL-E dVAE settings \['vocab'\]"),
    ],
)
def test_bad_settings_are_refused(settings, match):
    with pytest.raises(ValueError, match=match):
        DalleTokenizer(SMALL_SETTINGS | settings)


# ----------------------------------------------------------------------------------------------------------------
# Saving and loading, alone and in a GSS model
# ----------------------------------------------------------------------------------------------------------------
def test_save_and_load_round_trip_exactly(tmp_path):
    torch.manual_seed(0)
    tokenizer = DalleTokenizer(SMALL_SETTINGS | {"decode_tile_size": 3})
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    saved = json.loads((tmp_path / "tokenizer" / "config.json").read_text())
    assert saved == {"tokenizer_class": "DalleTokenizer", **tokenizer.tokenizer_config}
    loaded = DalleTokenizer.from_pretrained(tmp_path, subfolder="tokenizer")
    assert loaded.tokenizer_config == tokenizer.tokenizer_config
    assert loaded.state_dict().keys() == tokenizer.state_dict().keys()
    assert all(torch.equal(tensor, tokenizer.state_dict()[key]) for key, tensor in loaded.state_dict().items())


def test_loading_names_what_is_missing_or_broken(tmp_path):
    with pytest.raises(FileNotFoundError, match="No DALL-E tokenizer folder at .*absent"):
        DalleTokenizer.from_pretrained(tmp_path / "absent")
    DalleTokenizer(SMALL_SETTINGS).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file"):
        DalleTokenizer.from_pretrained(tmp_path)
    weights.unlink()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors is missing"):
        DalleTokenizer.from_pretrained(tmp_path)


def dalle_gss_config(**tokenizer_settings):
    return tiny_gss_config(
        tokenizer_type="dalle",
        maskige_route="official_2x",
        codebook_size=64,
        tokenizer_config=SMALL_SETTINGS | tokenizer_settings,
    )


def test_the_dalle_type_is_registered_and_follows_the_config():
    config = dalle_gss_config()
    assert TOKENIZER_TYPES["dalle"] is DalleTokenizer
    tokenizer = build_tokenizer(config)
    assert isinstance(tokenizer, DalleTokenizer)
    assert (tokenizer.codebook_size, tokenizer.token_stride) == (64, 8)
    assert tokenizer.tokenizer_config == config.tokenizer_config
    tokenizer.check_compatible(dalle_gss_config(decode_tile_size=7))  # an inference setting
    with pytest.raises(ValueError, match=r"\(config, tokenizer\): n_hid \(16, 8\)"):
        tokenizer.check_compatible(dalle_gss_config(n_hid=16))


def test_a_gss_model_with_the_dalle_tokenizer_saves_and_loads_it_exactly(tmp_path):
    torch.manual_seed(0)
    model = GSSForSemanticSegmentation(dalle_gss_config())
    assert isinstance(model.tokenizer, DalleTokenizer)
    trained = DalleTokenizer(model.config.tokenizer_config)
    model.load_tokenizer(trained)
    model.post_init()  # transformers' initialisation leaves the flagged dVAE alone
    expected = trained.state_dict()
    assert all(torch.equal(tensor, expected[key]) for key, tensor in model.tokenizer.state_dict().items())
    model.save_pretrained(tmp_path)
    assert (tmp_path / "modeling_dalle_dvae.py").is_file(), "the dVAE's code ships with the model"
    loaded = GSSForSemanticSegmentation.from_pretrained(tmp_path)
    assert isinstance(loaded.tokenizer, DalleTokenizer)
    assert all(torch.equal(tensor, expected[key]) for key, tensor in loaded.tokenizer.state_dict().items())


def test_without_the_flags_post_init_would_overwrite_the_dvae():
    """The control for the test above."""
    model = GSSForSemanticSegmentation(dalle_gss_config())
    before = model.tokenizer.decoder.blocks.input.weight.clone()
    for module in model.tokenizer.modules():
        module._is_hf_initialized = False
    model.post_init()
    assert not torch.equal(model.tokenizer.decoder.blocks.input.weight, before)
