"""Tiny GSS configurations shared by the tests: every family of backbone, a small tokenizer, small heads."""

from gss_hf import GSSConfig, default_tokenizer_config


NUM_TINY_LABELS = 5

TINY_BACKBONES = {
    "mobilenet_v2": {"model_type": "mobilenet_v2", "depth_multiplier": 0.35, "image_size": 64},
    "resnet": {
        "model_type": "resnet",
        "embedding_size": 8,
        "hidden_sizes": [8, 16, 16, 16],
        "depths": [1, 1, 1, 1],
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    },
    "swin": {
        "model_type": "swin",
        "image_size": 64,
        "embed_dim": 8,
        "depths": [1, 1, 1, 1],
        "num_heads": [1, 1, 1, 1],
        "window_size": 4,
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    },
}


def tiny_tokenizer_config(codebook_size: int = 64, token_stride: int = 4) -> dict:
    config = default_tokenizer_config(codebook_size, token_stride)
    levels = len(config["block_out_channels"])
    config.update(block_out_channels=[16] * levels, latent_channels=8, vq_embed_dim=4, norm_num_groups=8)
    return config


def tiny_gss_config(backbone: str = "mobilenet_v2", **overrides) -> GSSConfig:
    """A GSS model of a few hundred thousand parameters around a tiny `backbone` (a key of TINY_BACKBONES)."""
    names = [f"class_{index}" for index in range(NUM_TINY_LABELS)]
    settings = {
        "backbone_config": dict(TINY_BACKBONES[backbone]),
        "id2label": dict(enumerate(names)),
        "label2id": {name: index for index, name in enumerate(names)},
        "codebook_size": 64,
        "tokenizer_config": tiny_tokenizer_config(),
        "mla_channels": 8,
        "prior_hidden_size": 16,
        "prior_depth": 2,
        "prior_num_heads": 2,
        "prior_window_size": 4,
        "prior_intermediate_size": 32,
        "prior_classifier_channels": 16,
        "auxiliary_channels": 8,
        "inverse_hidden_size": 8,
        "inverse_num_heads": 2,
        "inverse_window_size": 4,
        "inverse_intermediate_size": 16,
        "token_chunk_size": 7,
    }
    settings.update(overrides)
    return GSSConfig(**settings)
