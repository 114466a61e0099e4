"""Scores of a GSS model or a tokenizer on a split, shared by the training scripts and `evaluate_gss.py`.

Scores (mIoU, per-class IoU, mAcc, aAcc) come from one streaming confusion matrix. With several processes each
evaluates every n-th image (no padding, no duplicate) and the matrices are summed, so the figures equal the
single-process ones.
"""

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from transformers import PreTrainedModel

from gss_hf import GSSConfig, class_scores_nearest_color, maskige_from_labels, upsample_labels_2x
from gss_hf.modeling_gss_tokenizer import GSSTokenizer
from training.data import SegmentationEvalDataset, collate_segmentation
from training.metrics import StreamingConfusionMatrix, codebook_usage, count_tokens


def process_shard(dataset: torch.utils.data.Dataset, accelerator: Accelerator, batch_size: int):
    """This process's share of the evaluation images (every num_processes-th one), batched."""
    indices = range(accelerator.process_index, len(dataset), accelerator.num_processes)
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=batch_size, collate_fn=collate_segmentation
    )


@torch.no_grad()
def evaluate_segmentation(
    accelerator: Accelerator,
    model: PreTrainedModel,
    dataset: SegmentationEvalDataset,
    batch_size: int,
    sliding_window: bool = False,
) -> dict:
    """Segmentation scores of `model` (unwrapped) on `dataset`, gathered over all processes.

    `model` is a GSS model (`sliding_window` selects its inference mode) or any transformers semantic-segmentation
    model; logits smaller than the labels (e.g. DeepLabV3's, at the output stride) are resized bilinearly first."""
    matrix = StreamingConfusionMatrix(model.config.num_labels, dataset.label_spec.ignore_index)
    forward_kwargs = {"sliding_window": True} if sliding_window else {}
    was_training = model.training
    model.eval()
    for batch in process_shard(dataset, accelerator, batch_size):
        labels = batch["labels"].to(accelerator.device)
        with accelerator.autocast():
            logits = model(batch["pixel_values"].to(accelerator.device), **forward_kwargs).logits
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
        matrix.update(logits.argmax(dim=1), labels)
    model.train(was_training)
    matrix.reduce(accelerator)
    return matrix.compute(model.config.id2label)


@torch.no_grad()
def evaluate_reconstruction(
    accelerator: Accelerator, tokenizer: GSSTokenizer, config: GSSConfig, dataset: SegmentationEvalDataset,
    batch_size: int,
) -> dict:
    """The posterior's upper bound: label map -> maskige -> tokens -> maskige -> nearest colour, scored against the
    label map; plus codebook usage (perplexity, live codes) over all tokens. On the "official_2x" route the label
    map is up-sampled 2x before it is painted and the class scores are resized back, as the model does."""
    matrix = StreamingConfusionMatrix(config.num_labels, config.ignore_index)
    token_counts = torch.zeros(tokenizer.codebook_size, dtype=torch.long, device=accelerator.device)
    was_training = tokenizer.training
    tokenizer.eval()
    for batch in process_shard(dataset, accelerator, batch_size):
        labels = batch["labels"].to(accelerator.device)
        padded = pad_to_multiple(labels, config.token_stride, config.ignore_index)
        tokenized = padded
        if config.maskige_route == "official_2x":
            tokenized = upsample_labels_2x(padded)
        maskige = maskige_from_labels(tokenized, config.palette, config.ignore_color, config.ignore_index)
        token_ids = tokenizer.encode(maskige)
        scores = class_scores_nearest_color(tokenizer.decode(token_ids), config.palette)
        if scores.shape[-2:] != padded.shape[-2:]:
            scores = F.interpolate(scores, size=padded.shape[-2:], mode="bilinear", align_corners=False)
        matrix.update(scores[..., : labels.shape[-2], : labels.shape[-1]].argmax(dim=1), labels)
        token_counts += count_tokens(token_ids, tokenizer.codebook_size)
    tokenizer.train(was_training)
    matrix.reduce(accelerator)
    token_counts = accelerator.reduce(token_counts, reduction="sum")
    return {**matrix.compute(config.id2label), **codebook_usage(token_counts)}


def pad_to_multiple(labels: torch.Tensor, multiple: int, ignore_index: int) -> torch.Tensor:
    """Pads (batch, H, W) label maps on the bottom and right with `ignore_index` to multiples of `multiple`."""
    height, width = labels.shape[-2:]
    pad_height, pad_width = -height % multiple, -width % multiple
    if not (pad_height or pad_width):
        return labels
    return torch.nn.functional.pad(labels, (0, pad_width, 0, pad_height), value=ignore_index)


@torch.no_grad()
def evaluate_photos(
    model: PreTrainedModel, image_processor, photos: list[PIL.Image.Image], label_maps: list[np.ndarray]
) -> dict:
    """Scores along the path users take, one photo at a time: image processor -> model -> the processor's
    post-processing to the photo's size. `label_maps` are (height, width) class ids with the processor's ignore index
    for unlabelled pixels (as `read_label_map` gives them with the processor's `label_spec`). The regression guard of
    the shipped model and the results table both use it, so they measure the same thing."""
    matrix = StreamingConfusionMatrix(model.config.num_labels, image_processor.ignore_index)
    model.eval()
    for photo, labels in zip(photos, label_maps, strict=True):
        outputs = model(**image_processor(images=photo, return_tensors="pt"))
        prediction = image_processor.post_process_semantic_segmentation(outputs, target_sizes=[labels.shape])[0]
        matrix.update(prediction[None], torch.from_numpy(labels)[None])
    return matrix.compute(model.config.id2label)
