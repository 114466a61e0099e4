"""Named GSS settings: the paper's configurations and a small CPU one for CamVid.

`GSSConfig.from_preset(name, **overrides)` builds one. Each preset is a plain dict of `GSSConfig` keyword
arguments; the fields themselves, their documentation and their validation live in `configuration_gss.py`.
"""

from .configuration_gss import default_tokenizer_config
from .maskige import preset_class_names, preset_palette


SWIN_LARGE = {
    "model_type": "swin",
    "image_size": 384,
    "embed_dim": 192,
    "depths": [2, 2, 18, 2],
    "num_heads": [6, 12, 24, 48],
    "window_size": 12,
    "drop_path_rate": 0.3,
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}
# The official Cityscapes ResNet-101: mmseg's ResNetV1c (deep stem), dilated to output stride 8 (see
# modeling_resnet_v1c.py).
RESNET_101 = {
    "model_type": "resnet_v1c",
    "depth": 101,
    "depths": [3, 4, 23, 3],
    "stem_channels": 64,
    "base_channels": 64,
    "strides": [1, 2, 1, 1],
    "dilations": [1, 1, 2, 4],
    "contract_dilation": True,
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}
# transformers' MobileNetV2 computing exactly what torchvision's `mobilenet_v2()` computes, whose ImageNet weights
# exist offline (see pretrained_mobilenet_v2.py): symmetric padding, BatchNorm epsilon 1e-5, torchvision's dropout.
TORCHVISION_MOBILENET_V2_CONFIG = {
    "model_type": "mobilenet_v2",
    "num_channels": 3,
    "depth_multiplier": 1.0,
    "depth_divisible_by": 8,
    "min_depth": 8,
    "expand_ratio": 6.0,
    "output_stride": 32,
    "first_layer_is_expansion": True,
    "finegrained_output": True,
    "hidden_act": "relu6",
    "tf_padding": False,
    "layer_norm_eps": 1e-5,
    "classifier_dropout_prob": 0.2,
}
CAMVID_CLASSES = [
    "sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian", "bicyclist"
]  # fmt: skip


def _labels(names: list[str]) -> dict:
    """Both label maps, which transformers 5 needs to agree on the number of labels."""
    return {"id2label": dict(enumerate(names)), "label2id": {name: i for i, name in enumerate(names)}}


def paper_preset(dataset: str, backbone: dict, prior_depth: int, inverse_type: str) -> dict:
    """The paper's settings (spec §2-4) on one of its datasets. Every released model carries OpenAI's DALL-E dVAE as
    its posterior (8192 codes, 8x) and reaches the 1/4 token grid by the official 2x route."""
    names = preset_class_names(dataset) or [f"class_{i}" for i in range(len(preset_palette(dataset)[0]))]
    return {
        "backbone_config": backbone,
        "palette": dataset,
        "codebook_size": 8192,
        "token_stride": 4,
        "tokenizer_type": "dalle",
        "maskige_route": "official_2x",
        "prior_depth": prior_depth,
        "inverse_type": inverse_type,
        "inverse_depth": 1 if dataset == "cityscapes" else 2,
        "prior_fuse_norm_activation": True,
        "nearest_inverse_one_hot": True,
        # The official Cityscapes test pipeline: 2048x1024 photos by sliding window (768 crops, stride 512).
        "sliding_window": dataset == "cityscapes",
        "sliding_window_crop_size": 768,
        "sliding_window_stride": 512,
        **_labels(names),
    }


GSS_PRESETS: dict[str, dict] = {
    "gss-ff-swin-large": paper_preset("ade20k", SWIN_LARGE, prior_depth=2, inverse_type="nearest"),
    "gss-ftw-swin-large": paper_preset("ade20k", SWIN_LARGE, prior_depth=2, inverse_type="learned"),
    "gss-ff-swin-large-cityscapes": paper_preset("cityscapes", SWIN_LARGE, prior_depth=2, inverse_type="nearest"),
    "gss-ftw-swin-large-cityscapes": paper_preset("cityscapes", SWIN_LARGE, prior_depth=2, inverse_type="learned"),
    "gss-ff-swin-large-mseg": paper_preset("mseg", SWIN_LARGE, prior_depth=2, inverse_type="nearest"),
    "gss-ftw-swin-large-mseg": paper_preset("mseg", SWIN_LARGE, prior_depth=2, inverse_type="learned"),
    "gss-ff-resnet101": paper_preset("cityscapes", RESNET_101, prior_depth=6, inverse_type="nearest"),
    "gss-ftw-resnet101": paper_preset("cityscapes", RESNET_101, prior_depth=6, inverse_type="learned"),
    # Small enough to train every stage on 2 CPU cores: MobileNetV2 (real ImageNet weights exist offline), a
    # narrow 1024-code tokenizer and a narrow head. benchmarks/RESULTS.md has the measurements (its tokenizer
    # comparison, benchmarks/tokenizer_grid.py, trained a wider tokenizer than this one).
    "gss-mobilenetv2-camvid": {
        "backbone_config": dict(TORCHVISION_MOBILENET_V2_CONFIG),
        "palette": "generated",
        "codebook_size": 1024,
        "token_stride": 4,
        "tokenizer_config": default_tokenizer_config(
            1024, 4, base_channels=16, latent_channels=16, norm_num_groups=8
        ),
        "mla_channels": 64,
        "prior_hidden_size": 128,
        "prior_depth": 1,
        "prior_num_heads": 4,
        "prior_intermediate_size": 256,
        "prior_classifier_channels": 256,
        "auxiliary_channels": 64,
        "inverse_type": "learned",
        # The learned X^-1 is narrower than the paper's 128 because it runs at full resolution, where its cost
        # shows on a CPU; see benchmarks/RESULTS.md (inference_speed).
        "inverse_hidden_size": 32,
        "inverse_num_heads": 2,
        "inverse_intermediate_size": 64,
        # One sliding-window crop at a time, to bound the memory of sliding-window inference on large photos; see
        # benchmarks/RESULTS.md (large_images).
        "sliding_window_batch_size": 1,
        **_labels(CAMVID_CLASSES),
    },
}


__all__ = [
    "CAMVID_CLASSES", "GSS_PRESETS", "RESNET_101", "SWIN_LARGE", "TORCHVISION_MOBILENET_V2_CONFIG", "paper_preset"
]  # fmt: skip
