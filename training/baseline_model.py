"""The discriminative baseline's model, built in one place for its training script and for the benchmarks.

Kept apart from `train_baseline.py` so that the speed and memory benchmarks build exactly the trained model's
architecture without importing the training stack (datasets, accelerate) into the processes they measure.
"""

from transformers import MobileNetV2ForSemanticSegmentation

from gss_hf.maskige import IGNORE_INDEX
from gss_hf.pretrained_mobilenet_v2 import torchvision_mobilenet_v2_config


def deeplabv3_mobilenet_v2(
    id2label: dict[int, str], label2id: dict[str, int], output_stride: int, ignore_index: int = IGNORE_INDEX
) -> MobileNetV2ForSemanticSegmentation:
    """transformers' DeepLabV3 head on torchvision's MobileNetV2 layout (random weights), predicting `id2label`'s
    classes and ignoring `ignore_index`; below stride 32 the last stages are dilated."""
    config = torchvision_mobilenet_v2_config()
    config.id2label, config.label2id = dict(id2label), dict(label2id)
    config.semantic_loss_ignore_index = ignore_index
    config.output_stride = output_stride
    return MobileNetV2ForSemanticSegmentation(config)
