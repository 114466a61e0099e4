"""OpenAI's DALL-E dVAE (the `dall-e` 0.1 package's encoder and decoder), native, as the GSS tokenizer "dalle".

The paper's GSS-FF uses this dVAE, frozen, as its latent posterior: a maskige up-sampled 2x goes through the 8x
encoder to the 1/4 token grid. The official code imports `dall_e` and loads OpenAI's `encoder.pkl` / `decoder.pkl`,
whole-module pickles, with a plain `torch.load`, which runs whatever the files name. Here:

* `DalleEncoder` / `DalleDecoder` are the package's architectures with plain `nn.Conv2d` layers in the same module
  tree, so a dall_e state dict loads after renaming `.w` -> `.weight` and `.b` -> `.bias`
  (`convert_openai_state_dict`). They run in float32 (dall_e switches most convs to float16 on CUDA) and work under
  `.to(torch.bfloat16)` and autocast.
* `DalleTokenizer.from_openai_pickles` reads the released pickles without the package and without running
  anything from them. Its unpickler resolves only the globals such files name (`OPENAI_PICKLE_GLOBALS`), the
  module classes as inert stand-ins that only keep their state; the parameters are read from that state and the
  hyperparameters from the tensors' shapes.
* Decoding looks the codes up instead of building a (batch, vocab_size, h, w) one-hot, and runs in tiles
  (`DalleTokenizer.decode`) to bound its memory.

The dVAE is never trained here (nor in the paper): `forward` and `reseed_dead_codes` refuse.
"""

import json
import math
import pickle
import re
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .configuration_gss import DALLE_TOKENIZER, GSSConfig, default_dalle_tokenizer_config
from .maskige import check_maskige, maskige_to_tokenizer_pixels, tokenizer_pixels_to_maskige
from .modeling_gss_tokenizer import GSSTokenizer, TokenizerTrainingOutput, register_tokenizer_type


# Kernel sizes of the four convs (`conv_1` .. `conv_4`) of a residual block's `res_path`, as in dall_e 0.1.
ENCODER_BLOCK_KERNELS = (3, 3, 3, 1)
DECODER_BLOCK_KERNELS = (1, 3, 3, 3)
ENCODER_INPUT_KERNEL = 7

# The settings that fix the architecture (everything but the inference-only `decode_tile_size`).
ARCHITECTURE_SETTINGS = (
    "group_count", "n_hid", "n_blk_per_group", "vocab_size", "n_init", "input_channels", "output_channels"
)  # fmt: skip


class DalleResidualBlock(nn.Module):
    """dall_e's `EncoderBlock` / `DecoderBlock`: `id_path(x) + post_gain * res_path(x)`.

    `res_path` is four ReLU + conv pairs (kernels `kernel_sizes`) through `out_channels / 4` hidden channels;
    `id_path` is a 1x1 conv where the width changes, else the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: tuple[int, ...], post_gain: float):
        super().__init__()
        hidden_channels = out_channels // 4
        widths = (in_channels, hidden_channels, hidden_channels, hidden_channels, out_channels)
        self.post_gain = post_gain
        self.id_path = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        layers = OrderedDict()
        for index, kernel_size in enumerate(kernel_sizes):
            layers[f"relu_{index + 1}"] = nn.ReLU()
            layers[f"conv_{index + 1}"] = nn.Conv2d(
                widths[index], widths[index + 1], kernel_size, padding=(kernel_size - 1) // 2
            )
        self.res_path = nn.Sequential(layers)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(batch, in_channels, height, width) -> (batch, out_channels, height, width)."""
        return self.id_path(hidden_states) + self.post_gain * self.res_path(hidden_states)


def _residual_post_gain(group_count: int, n_blk_per_group: int) -> float:
    """dall_e's residual gain 1 / n_layers ** 2, n_layers being the number of residual blocks."""
    return 1 / (group_count * n_blk_per_group) ** 2


class DalleEncoder(nn.Module):
    """dall_e 0.1's `Encoder`: pixels (batch, input_channels, H, W) -> logits (batch, vocab_size, H / s, W / s),
    s = 2 ** (group_count - 1).

    A 7x7 input conv to `n_hid` channels, then `group_count` groups of `n_blk_per_group` residual blocks, group g
    (from 1) at `n_hid * 2 ** (g - 1)` channels and each but the last ending in a 2x max-pool, then ReLU and a 1x1
    conv to the codebook logits. Module names are dall_e's (`blocks.group_1.block_1.res_path.conv_1`, ...).
    """

    def __init__(
        self,
        group_count: int = 4,
        n_hid: int = 256,
        n_blk_per_group: int = 2,
        input_channels: int = 3,
        vocab_size: int = 8192,
    ):
        super().__init__()
        post_gain = _residual_post_gain(group_count, n_blk_per_group)
        blocks = OrderedDict(
            input=nn.Conv2d(input_channels, n_hid, ENCODER_INPUT_KERNEL, padding=(ENCODER_INPUT_KERNEL - 1) // 2)
        )
        width = n_hid
        for group in range(1, group_count + 1):
            layers = OrderedDict()
            for block in range(1, n_blk_per_group + 1):
                group_width = n_hid * 2 ** (group - 1)
                layers[f"block_{block}"] = DalleResidualBlock(width, group_width, ENCODER_BLOCK_KERNELS, post_gain)
                width = group_width
            if group < group_count:
                layers["pool"] = nn.MaxPool2d(kernel_size=2)
            blocks[f"group_{group}"] = nn.Sequential(layers)
        blocks["output"] = nn.Sequential(OrderedDict(relu=nn.ReLU(), conv=nn.Conv2d(width, vocab_size, 1)))
        self.blocks = nn.Sequential(blocks)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (batch, input_channels, H, W) in dall_e's [0.1, 0.9] range -> (batch, vocab_size, H / s, W / s)."""
        return self.blocks(pixels)


class DalleDecoder(nn.Module):
    """dall_e 0.1's `Decoder`: token ids (batch, h, w) -> (batch, 2 * output_channels, h * s, w * s),
    s = 2 ** (group_count - 1); the first `output_channels` maps are the colours' logits.

    A 1x1 input conv from the one-hot codes to `n_init` channels, then `group_count` groups of `n_blk_per_group`
    residual blocks, group g (from 1) at `n_hid * 2 ** (group_count - g)` channels and each but the last ending in
    a 2x nearest up-sampling, then ReLU and a 1x1 output conv. Module names are dall_e's.
    """

    def __init__(
        self,
        group_count: int = 4,
        n_init: int = 128,
        n_hid: int = 256,
        n_blk_per_group: int = 2,
        output_channels: int = 3,
        vocab_size: int = 8192,
    ):
        super().__init__()
        post_gain = _residual_post_gain(group_count, n_blk_per_group)
        blocks = OrderedDict(input=nn.Conv2d(vocab_size, n_init, 1))
        width = n_init
        for group in range(1, group_count + 1):
            layers = OrderedDict()
            for block in range(1, n_blk_per_group + 1):
                group_width = n_hid * 2 ** (group_count - group)
                layers[f"block_{block}"] = DalleResidualBlock(width, group_width, DECODER_BLOCK_KERNELS, post_gain)
                width = group_width
            if group < group_count:
                layers["upsample"] = nn.Upsample(scale_factor=2, mode="nearest")
            blocks[f"group_{group}"] = nn.Sequential(layers)
        blocks["output"] = nn.Sequential(OrderedDict(relu=nn.ReLU(), conv=nn.Conv2d(width, 2 * output_channels, 1)))
        self.blocks = nn.Sequential(blocks)

    def embed_tokens(self, token_ids: torch.LongTensor) -> torch.Tensor:
        """`blocks.input` applied to the one-hot codes, as the lookup it amounts to: (batch, h, w) ids ->
        (batch, n_init, h, w). A 1x1 conv of a one-hot vector is its code's weight column plus the bias, so the
        (batch, vocab_size, h, w) one-hot (32 MB per 32x32 grid at 8192 codes) is never built."""
        conv = self.blocks.input
        embedded = nn.functional.embedding(token_ids, conv.weight[:, :, 0, 0].T) + conv.bias
        return embedded.permute(0, 3, 1, 2)

    def forward(self, token_ids: torch.LongTensor) -> torch.Tensor:
        """Token ids (batch, h, w) -> decoder output (batch, 2 * output_channels, h * s, w * s)."""
        return self.blocks[1:](self.embed_tokens(token_ids))


def convert_openai_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A dall_e state dict (`blocks.input.w`, `...res_path.conv_1.b`) in `DalleEncoder` / `DalleDecoder` names.

    Every key ending in `.w` or `.b` (dall_e's `Conv2d` parameters) ends in `.weight` / `.bias` instead; other
    keys, and any prefix (`decode_head.d_vae.encoder.` in an official GSS checkpoint), are kept. The tensors are
    the same objects.
    """
    renamed = {}
    for key, tensor in state_dict.items():
        if key.endswith(".w"):
            key = key[: -len(".w")] + ".weight"
        elif key.endswith(".b"):
            key = key[: -len(".b")] + ".bias"
        renamed[key] = tensor
    return renamed


# ----------------------------------------------------------------------------------------------------------------
# Reading OpenAI's whole-module pickles without running them
# ----------------------------------------------------------------------------------------------------------------
class _PickledModule:
    """An inert stand-in for a pickled module class: it keeps the state the pickle gives it (attributes,
    `_parameters`, `_buffers`, `_modules`) and has no other behaviour, so nothing of the real class runs."""

    pickled_class = ""
    pickled_state = types.MappingProxyType({})

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(
                f"The pickled {self.pickled_class} has a state of type {type(state).__name__}, not a dict."
            )
        self.pickled_state = state


# The module classes a `torch.save` of a dall_e 0.1 `Encoder` or `Decoder` names, unpickled as inert stand-ins.
_PICKLED_MODULE_CLASSES = (
    "dall_e.encoder.Encoder",
    "dall_e.encoder.EncoderBlock",
    "dall_e.decoder.Decoder",
    "dall_e.decoder.DecoderBlock",
    "dall_e.utils.Conv2d",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.linear.Identity",
    "torch.nn.modules.pooling.MaxPool2d",
    "torch.nn.modules.upsampling.Upsample",
)

# Every global such a pickle names, and what it resolves to; any other is refused. Besides the stand-ins: the
# containers of a module's state, its `device` attribute and torch's functions that rebuild tensors and parameters
# from the file's storages. (The storage types, `torch.FloatStorage`, are resolved by `torch.load` itself, as dtype
# markers, before the unpickler is asked.) `__builtin__.set` is how pickle protocol 2, `torch.save`'s, names `set`.
OPENAI_PICKLE_GLOBALS = {
    **{
        name: type(name.rsplit(".", 1)[1], (_PickledModule,), {"pickled_class": name})
        for name in _PICKLED_MODULE_CLASSES
    },
    "collections.OrderedDict": OrderedDict,
    "__builtin__.set": set,
    "torch.device": torch.device,
    "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
}


class _RefusedGlobalError(pickle.UnpicklingError):
    """A pickle named a global outside `OPENAI_PICKLE_GLOBALS`; nothing of it was called or built."""


class _OpenAIPickleUnpickler(pickle.Unpickler):
    """Resolves only `OPENAI_PICKLE_GLOBALS`: a pickle can call or instantiate nothing else."""

    def find_class(self, module: str, name: str):
        full_name = f"{module}.{name}"
        if full_name not in OPENAI_PICKLE_GLOBALS:
            raise _RefusedGlobalError(
                f"it names the global `{full_name}`, which no DALL-E dVAE pickle does: refused before anything "
                "from the file ran."
            )
        return OPENAI_PICKLE_GLOBALS[full_name]


# `torch.load` reads the zip archive and its tensor storages, and unpickles the module with `pickle_module.Unpickler`.
_OPENAI_PICKLE_MODULE = types.ModuleType("gss_hf_openai_pickle")
_OPENAI_PICKLE_MODULE.Unpickler = _OpenAIPickleUnpickler


def _load_openai_pickle(path: str | Path, expected_class: str) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Reads a `torch.save`d dall_e module of class `expected_class` without running anything from the file.

    Returns its parameters and buffers by dall_e name (`blocks.input.w`, ...), and the residual gain of each of
    its residual blocks (the one hyperparameter the tensors' shapes do not give).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No DALL-E dVAE pickle at {path}.")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a `torch.save` zip archive: it is truncated, corrupt or of another format.")
    try:
        # `weights_only` must be off to pass a `pickle_module`; the unpickler is narrower than torch's allowlist.
        root = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_OPENAI_PICKLE_MODULE)
    except _RefusedGlobalError as error:
        raise _RefusedGlobalError(f"{path} cannot be a DALL-E dVAE pickle: {error}") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise ValueError(
            f"{path} could not be read as a `torch.save` file (truncated or corrupt?): {error}"
        ) from error
    if not isinstance(root, _PickledModule) or root.pickled_class != expected_class:
        found = root.pickled_class if isinstance(root, _PickledModule) else type(root).__name__
        raise ValueError(f"{path} holds a {found}, not a {expected_class}.")
    tensors, post_gains = {}, []
    for prefix, module in _pickled_submodules(root, path):
        for kind in ("_parameters", "_buffers"):
            for name, tensor in _pickled_dict(module, kind, path).items():
                if tensor is None:
                    continue
                if not isinstance(tensor, torch.Tensor):
                    raise ValueError(f"{path}: `{prefix}{name}` is a {type(tensor).__name__}, not a tensor.")
                tensors[prefix + name] = tensor
        if module.pickled_class.endswith("Block"):
            post_gains.append(module.pickled_state.get("post_gain"))
    return tensors, post_gains


def _pickled_submodules(module: _PickledModule, path: Path, prefix: str = ""):
    """Yields (dotted prefix, stand-in) for `module` and every module under it, as `nn.Module.named_modules`."""
    yield prefix, module
    for name, child in _pickled_dict(module, "_modules", path).items():
        if child is None:
            continue
        if not isinstance(child, _PickledModule):
            raise ValueError(f"{path}: the submodule `{prefix}{name}` is a {type(child).__name__}, not a module.")
        yield from _pickled_submodules(child, path, f"{prefix}{name}.")


def _pickled_dict(module: _PickledModule, key: str, path: Path) -> dict:
    value = module.pickled_state.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"{path}: the {key} of a pickled {module.pickled_class} is a {type(value).__name__}.")
    return value


def dalle_settings_from_shapes(
    tensors: dict[str, torch.Tensor], path: Path, is_encoder: bool
) -> dict[str, int]:
    """The hyperparameters of a dall_e encoder or decoder, read from its parameters' names and shapes."""
    blocks_per_group: dict[int, int] = {}
    for key in tensors:
        match = re.match(r"blocks\.group_(\d+)\.block_(\d+)\.", key)
        if match:
            group, block = int(match[1]), int(match[2])
            blocks_per_group[group] = max(blocks_per_group.get(group, 0), block)
    try:
        input_weight, output_weight = tensors["blocks.input.w"], tensors["blocks.output.conv.w"]
    except KeyError as error:
        raise ValueError(f"{path} has no parameter {error}: it is no dall_e 0.1 module.") from None
    if not blocks_per_group or input_weight.ndim != 4 or output_weight.ndim != 4:
        raise ValueError(f"{path} has no residual groups or 4-d convs: it is no dall_e 0.1 module.")
    settings = {"group_count": max(blocks_per_group), "n_blk_per_group": blocks_per_group.get(1, 0)}
    if is_encoder:
        settings["n_hid"], settings["input_channels"] = input_weight.shape[:2]
        settings["vocab_size"] = output_weight.shape[0]
    else:
        settings["n_init"], settings["vocab_size"] = input_weight.shape[:2]
        settings["output_channels"], settings["n_hid"] = output_weight.shape[0] // 2, output_weight.shape[1]
    return {key: int(value) for key, value in settings.items()}


def _checked_settings(tokenizer_config: dict) -> dict:
    """`tokenizer_config` with the released dVAE's settings filled in, after checking every value."""
    if not isinstance(tokenizer_config, dict):
        raise TypeError(f"`tokenizer_config` must be a dict of dVAE settings, got {type(tokenizer_config).__name__}.")
    settings = default_dalle_tokenizer_config(**tokenizer_config)  # refuses unknown names
    for name, value in settings.items():
        smallest = 0 if name == "decode_tile_size" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
            raise ValueError(f"The dVAE setting `{name}` must be an integer >= {smallest}, got {value!r}.")
    if settings["n_hid"] % 4:
        raise ValueError(
            f"The dVAE setting `n_hid` must be a multiple of 4 (residual blocks work at a quarter of their width), "
            f"got {settings['n_hid']}."
        )
    if settings["input_channels"] != 3 or settings["output_channels"] != 3:
        raise ValueError("A maskige tokenizer maps 3-channel maskiges to 3-channel maskiges.")
    return settings


def _differences(expected: dict, given: dict, keys) -> str:
    """'name (expected, given), ...' for each of `keys` where the two dicts differ; empty when none does."""
    return ", ".join(
        f"{key} ({expected.get(key)}, {given.get(key)})" for key in keys if expected.get(key) != given.get(key)
    )


_FROZEN_MESSAGE = (
    "The DALL-E dVAE is frozen: GSS-FF uses OpenAI's weights as they are (load them with "
    "`DalleTokenizer.from_openai_pickles`), and gss_hf has no stage-I training for it. To train a tokenizer, use "
    'tokenizer_type "vqmodel".'
)


class DalleTokenizer(GSSTokenizer):
    """OpenAI's DALL-E dVAE as a GSS tokenizer: maskige (batch, 3, H, W) <-> token ids
    (batch, H / token_stride, W / token_stride), token_stride = 2 ** (group_count - 1), 8 for the released dVAE.

    `tokenizer_type: "dalle"`, built from the settings of `default_dalle_tokenizer_config` (`tokenizer_config`).
    Its weights are OpenAI's (`from_openai_pickles`, or a saved folder); transformers' weight initialisation never
    touches them (every module carries `_is_hf_initialized`, as in `MaskigeTokenizer`). It is used frozen, so
    `encode` and `decode` run without autograd.
    """

    def __init__(self, tokenizer_config: dict):
        super().__init__()
        self.tokenizer_config = _checked_settings(tokenizer_config)
        settings = self.tokenizer_config
        self.encoder = DalleEncoder(
            settings["group_count"],
            settings["n_hid"],
            settings["n_blk_per_group"],
            settings["input_channels"],
            settings["vocab_size"],
        )
        self.decoder = DalleDecoder(
            settings["group_count"],
            settings["n_init"],
            settings["n_hid"],
            settings["n_blk_per_group"],
            settings["output_channels"],
            settings["vocab_size"],
        )
        for module in self.modules():
            module._is_hf_initialized = True

    @classmethod
    def from_config(cls, tokenizer_config: dict) -> "DalleTokenizer":
        """A tokenizer with the settings `tokenizer_config` (`default_dalle_tokenizer_config` keys) and fresh
        (untrained) weights."""
        return cls(tokenizer_config)

    @classmethod
    def from_gss_config(cls, config: GSSConfig) -> "DalleTokenizer":
        return cls.from_config(config.tokenizer_config)

    def check_compatible(self, config: GSSConfig) -> None:
        different = _differences(config.tokenizer_config, self.tokenizer_config, ARCHITECTURE_SETTINGS)
        if different:
            raise ValueError(
                f"The tokenizer differs from `config.tokenizer_config` in (config, tokenizer): {different}."
            )

    @property
    def codebook_size(self) -> int:
        return self.tokenizer_config["vocab_size"]

    @property
    def token_stride(self) -> int:
        return 2 ** (self.tokenizer_config["group_count"] - 1)

    @property
    def decode_margin(self) -> int:
        """The decoder's receptive-field radius in tokens, rounded up: how far beyond its tile a decoded pixel sees.

        Each residual block's convs reach (kernel - 1) / 2 pixels each at its group's resolution, which in group g
        (from 1) is 2 ** (g - 1) pixels per token (nearest up-sampling between groups; the 1x1 input and output
        convs reach nothing). In tokens: ceil(n_blk_per_group * block_reach * sum_g 2 ** -(g - 1)), 12 for the
        released dVAE.
        """
        group_count = self.tokenizer_config["group_count"]
        block_reach = sum((kernel_size - 1) // 2 for kernel_size in DECODER_BLOCK_KERNELS)
        reach_in_finest_pixels = sum(
            self.tokenizer_config["n_blk_per_group"] * block_reach * 2 ** (group_count - group)
            for group in range(1, group_count + 1)
        )
        return -(-reach_in_finest_pixels // self.token_stride)

    @torch.no_grad()
    def encode(self, maskige: torch.Tensor) -> torch.LongTensor:
        """Maskige (batch, 3, H, W), colours in 0..255 -> token ids (batch, H / token_stride, W / token_stride):
        the argmax of the encoder's logits on DALL-E's pixel map of maskige / 255 (`map_pixels`, eps 0.1)."""
        check_maskige(maskige)
        height, width = maskige.shape[-2:]
        stride = self.token_stride
        if height % stride or width % stride:
            padded = f"{-(-height // stride) * stride}x{-(-width // stride) * stride}"
            cropped = f"{height // stride * stride}x{width // stride * stride}"
            crop_hint = f" or crop it to {cropped}" if height >= stride and width >= stride else ""
            raise ValueError(
                f"The maskige is {height}x{width}, but the DALL-E dVAE needs height and width divisible by its token "
                f"stride {stride}: pad the label map (with the ignore index) to {padded}{crop_hint} first."
            )
        pixels = maskige_to_tokenizer_pixels(maskige).to(self.encoder.blocks.input.weight.dtype)
        return self.encoder(pixels).argmax(1)

    @torch.no_grad()
    def decode(self, token_ids: torch.LongTensor) -> torch.Tensor:
        """Token ids (batch, h, w) -> maskige (batch, 3, h * token_stride, w * token_stride), float in 0..255:
        `unmap_pixels(sigmoid(decoder(one_hot(ids))[:, :3])) * 255`, in float32.

        Token grids larger than `decode_tile_size` are decoded in tiles of that many token rows and columns, each
        extended by `decode_margin` tokens of context, of which only the tile itself is kept: the result equals
        whole-grid decoding. The released decoder costs about 810 GFLOP per 360x480 maskige and its activations
        grow with the image (the official code runs out of GPU memory on Cityscapes at batch 1); tiles bound the
        memory whatever the image size.
        """
        self.check_token_ids(token_ids)
        return self._decode_in_tiles(token_ids, self.tokenizer_config["decode_tile_size"], self.decode_margin)

    def _decode_in_tiles(self, token_ids: torch.LongTensor, tile_size: int, margin: int) -> torch.Tensor:
        """`decode` with tiles of `tile_size` tokens (0: none), each seen with `margin` tokens of context."""
        batch, height, width = token_ids.shape
        if tile_size == 0 or (height <= tile_size and width <= tile_size):
            return self._decode_whole(token_ids)
        stride = self.token_stride
        maskige = torch.empty(
            (batch, 3, height * stride, width * stride), dtype=torch.float32, device=token_ids.device
        )
        for top, bottom, outer_top, outer_bottom in _tile_spans(height, tile_size, margin):
            for left, right, outer_left, outer_right in _tile_spans(width, tile_size, margin):
                decoded = self._decode_whole(token_ids[:, outer_top:outer_bottom, outer_left:outer_right])
                maskige[:, :, top * stride : bottom * stride, left * stride : right * stride] = decoded[
                    :,
                    :,
                    (top - outer_top) * stride : (bottom - outer_top) * stride,
                    (left - outer_left) * stride : (right - outer_left) * stride,
                ]
        return maskige

    def _decode_whole(self, token_ids: torch.LongTensor) -> torch.Tensor:
        """(batch, h, w) ids -> (batch, 3, h * token_stride, w * token_stride) float32 maskige, in one pass."""
        colour_logits = self.decoder(token_ids)[:, :3].float()
        return tokenizer_pixels_to_maskige(torch.sigmoid(colour_logits))

    def forward(self, maskige: torch.Tensor, reconstruction_weight: float = 10.0) -> TokenizerTrainingOutput:
        raise NotImplementedError(_FROZEN_MESSAGE)

    def reseed_dead_codes(self, usage: torch.LongTensor, latents: torch.Tensor, generator: torch.Generator) -> int:
        raise NotImplementedError(_FROZEN_MESSAGE)

    # ------------------------------------------------------------------------------------------------------------
    # Saving and loading
    # ------------------------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | Path) -> None:
        """Writes `config.json` (the settings and `tokenizer_class`) and `model.safetensors` to `save_directory`."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"tokenizer_class": type(self).__name__, **self.tokenizer_config}
        (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        weights = {key: tensor.detach().contiguous() for key, tensor in self.state_dict().items()}
        save_file(weights, folder / "model.safetensors")

    @classmethod
    def from_pretrained(cls, pretrained_path: str | Path, subfolder: str | None = None) -> "DalleTokenizer":
        """Loads a tokenizer from a local folder (or its `subfolder`) written by `save_pretrained`."""
        folder = Path(pretrained_path) / subfolder if subfolder else Path(pretrained_path)
        if not folder.is_dir():
            raise FileNotFoundError(f"No DALL-E tokenizer folder at {folder} (one written by `save_pretrained`).")
        config_file, weights_file = folder / "config.json", folder / "model.safetensors"
        for file in (config_file, weights_file):
            if not file.is_file():
                raise FileNotFoundError(f"{file} is missing: {folder} is no DALL-E tokenizer folder.")
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{config_file} is not valid JSON: {error}") from error
        saved_class = config.pop("tokenizer_class", None)
        if saved_class != cls.__name__:
            raise ValueError(f"{config_file} describes a {saved_class!r}, not a {cls.__name__}.")
        tokenizer = cls(config)
        try:
            weights = load_file(weights_file)
        except SafetensorError as error:
            raise ValueError(f"{weights_file} is not a readable safetensors file (truncated?): {error}") from error
        cls._load_weights(tokenizer, weights, weights_file)
        return tokenizer

    @classmethod
    def from_openai_pickles(
        cls, encoder_path: str | Path, decoder_path: str | Path, tokenizer_config: dict | None = None
    ) -> "DalleTokenizer":
        """The tokenizer of OpenAI's released `encoder.pkl` and `decoder.pkl` (`torch.save`s of dall_e 0.1's
        `Encoder` and `Decoder`), read without the `dall_e` package and without running anything from the files.

        The hyperparameters are read from the tensors' shapes; encoder and decoder must agree on them, and with
        `tokenizer_config` where it is given (its `decode_tile_size`, an inference setting, is taken from it).
        A file naming any global outside `OPENAI_PICKLE_GLOBALS` is refused (`pickle.UnpicklingError`).
        """
        encoder_tensors, encoder_gains = _load_openai_pickle(encoder_path, "dall_e.encoder.Encoder")
        decoder_tensors, decoder_gains = _load_openai_pickle(decoder_path, "dall_e.decoder.Decoder")
        encoder_settings = dalle_settings_from_shapes(encoder_tensors, Path(encoder_path), is_encoder=True)
        decoder_settings = dalle_settings_from_shapes(decoder_tensors, Path(decoder_path), is_encoder=False)
        different = _differences(
            encoder_settings, decoder_settings, ("vocab_size", "group_count", "n_hid", "n_blk_per_group")
        )
        if different:
            raise ValueError(
                f"The encoder ({encoder_path}) and decoder ({decoder_path}) are not one dVAE; they differ in "
                f"(encoder, decoder): {different}."
            )
        settings = {**decoder_settings, **encoder_settings}
        if tokenizer_config is not None:
            wanted = default_dalle_tokenizer_config(**tokenizer_config)
            different = _differences(
                settings, wanted, [key for key in ARCHITECTURE_SETTINGS if key in tokenizer_config]
            )
            if different:
                raise ValueError(
                    f"The pickles differ from `tokenizer_config` in (pickles, tokenizer_config): {different}."
                )
            settings["decode_tile_size"] = wanted["decode_tile_size"]
        tokenizer = cls(settings)
        expected_gain = _residual_post_gain(settings["group_count"], settings["n_blk_per_group"])
        for path, gains in ((encoder_path, encoder_gains), (decoder_path, decoder_gains)):
            if any(gain is None or not math.isclose(gain, expected_gain) for gain in gains):
                raise ValueError(
                    f"{path}: residual blocks with gains {sorted(set(map(str, gains)))}, but a dall_e dVAE of "
                    f"{settings['group_count']} groups of {settings['n_blk_per_group']} blocks has {expected_gain}."
                )
        cls._load_weights(tokenizer.encoder, convert_openai_state_dict(encoder_tensors), encoder_path)
        cls._load_weights(tokenizer.decoder, convert_openai_state_dict(decoder_tensors), decoder_path)
        return tokenizer

    @staticmethod
    def _load_weights(module: nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path) -> None:
        """`module.load_state_dict(state_dict, strict=True)`, failures as `ValueError` naming `source`."""
        try:
            module.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            raise ValueError(f"The weights of {source} do not fit a {type(module).__name__}: {error}") from error


def _tile_spans(length: int, tile_size: int, margin: int):
    """Yields (start, stop, outer_start, outer_stop) for each tile of `tile_size` along `length` tokens, the outer
    span being the tile extended by `margin` on either side, within 0..length."""
    for start in range(0, length, tile_size):
        stop = min(start + tile_size, length)
        yield start, stop, max(start - margin, 0), min(stop + margin, length)


register_tokenizer_type(DALLE_TOKENIZER, DalleTokenizer)

__all__ = [
    "OPENAI_PICKLE_GLOBALS",
    "DalleDecoder",
    "DalleEncoder",
    "DalleResidualBlock",
    "DalleTokenizer",
    "convert_openai_state_dict",
    "dalle_settings_from_shapes",
]
