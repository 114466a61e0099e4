"""gss_hf: Generative Semantic Segmentation (GSS, CVPR 2023), native to transformers and diffusers.

Importing the package registers the GSS classes with `AutoConfig` (model type "gss"),
`AutoModelForSemanticSegmentation` and `AutoImageProcessor`, and marks them for `register_for_auto_class`, so that
`save_pretrained` also writes their code files and an `auto_map`: a saved folder then loads with
`trust_remote_code=True` where this package is not installed. Each registration sits at the end of the class's own
file, so that the same happens when transformers imports those files as remote code (the pipeline then recognises
the model type).
"""

from .configuration_gss import GSSConfig, default_dalle_tokenizer_config, default_tokenizer_config
from .image_processing_gss import GSSImageProcessor
from .maskige import (
    IGNORE_INDEX,
    class_scores_least_squares,
    class_scores_nearest_color,
    generate_palette,
    least_squares_inverse,
    maskige_from_labels,
    maskige_to_tokenizer_pixels,
    min_pairwise_distance,
    preset_palette,
    tokenizer_pixels_to_maskige,
    upsample_labels_2x,
)
from .modeling_dalle_dvae import DalleTokenizer
from .modeling_gss import (
    GSSForSemanticSegmentation,
    GSSPreTrainedModel,
    GSSSamplingOutput,
    GSSSemanticSegmenterOutput,
)
from .modeling_maskige_tokenizer import MaskigeTokenizer, MaskigeTokenizerOutput
from .modeling_token_prior import (
    GSSTokenPriorConfig,
    GSSTokenPriorModel,
    complete_label_map,
    known_outside_region,
    sample_label_maps,
)
from .modeling_resnet_v1c import (
    ResNetV1cBackbone,
    ResNetV1cConfig,
    ResNetV1cPreTrainedModel,
    convert_mmseg_resnet_state_dict,
    resnet_v1c_config_from_state_dict,
)
from .presets import GSS_PRESETS


__version__ = "0.1.0"

__all__ = [
    "DalleTokenizer",
    "GSSConfig",
    "GSSForSemanticSegmentation",
    "GSSImageProcessor",
    "GSSPreTrainedModel",
    "GSSSamplingOutput",
    "GSSSemanticSegmenterOutput",
    "GSSTokenPriorConfig",
    "GSSTokenPriorModel",
    "GSS_PRESETS",
    "IGNORE_INDEX",
    "MaskigeTokenizer",
    "MaskigeTokenizerOutput",
    "ResNetV1cBackbone",
    "ResNetV1cConfig",
    "ResNetV1cPreTrainedModel",
    "class_scores_least_squares",
    "class_scores_nearest_color",
    "complete_label_map",
    "known_outside_region",
    "convert_mmseg_resnet_state_dict",
    "default_dalle_tokenizer_config",
    "default_tokenizer_config",
    "generate_palette",
    "least_squares_inverse",
    "maskige_from_labels",
    "maskige_to_tokenizer_pixels",
    "min_pairwise_distance",
    "preset_palette",
    "resnet_v1c_config_from_state_dict",
    "sample_label_maps",
    "tokenizer_pixels_to_maskige",
    "upsample_labels_2x",
]
