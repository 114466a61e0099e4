"""Scores of a GSS model or a tokenizer on a split, shared by the training scripts and `evaluate_gss.py`.

Scores (mIoU, per-class IoU, mAcc, aAcc) come from one streaming confusion matrix. With several processes each
evaluates every n-th image (no padding, no duplicate) and the matrices are summed, so the figures equal the
single-process ones.
"""

import torch
from accelerate import Accelerator

from gss_hf import (
    GSSConfig,
    GSSForSemanticSegmentation,
    MaskigeTokenizer,
    class_scores_nearest_color,
    maskige_from_labels,
)
from segmentation_data import SegmentationEvalDataset, collate_segmentation
from segmentation_metrics import StreamingConfusionMatrix, codebook_usage, count_tokens


def process_shard(dataset: torch.utils.data.Dataset, accelerator: Accelerator, batch_size: int):
    """This process's share of the evaluation images (every num_processes-th one), batched."""
    indices = range(accelerator.process_index, len(dataset), accelerator.num_processes)
    return torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, indices), batch_size=batch_size, collate_fn=collate_segmentation
    )


@torch.no_grad()
def evaluate_segmentation(
    accelerator: Accelerator,
    model: GSSForSemanticSegmentation,
    dataset: SegmentationEvalDataset,
    batch_size: int,
    sliding_window: bool = False,
) -> dict:
    """Segmentation scores of `model` (unwrapped) on `dataset`, gathered over all processes."""
    config = model.config
    matrix = StreamingConfusionMatrix(config.num_labels, config.ignore_index)
    was_training = model.training
    model.eval()
    for batch in process_shard(dataset, accelerator, batch_size):
        with accelerator.autocast():
            logits = model(batch["pixel_values"].to(accelerator.device), sliding_window=sliding_window).logits
        matrix.update(logits.argmax(dim=1), batch["labels"].to(accelerator.device))
    model.train(was_training)
    matrix.reduce(accelerator)
    return matrix.compute(config.id2label)


@torch.no_grad()
def evaluate_reconstruction(
    accelerator: Accelerator, tokenizer: MaskigeTokenizer, config: GSSConfig, dataset: SegmentationEvalDataset,
    batch_size: int,
) -> dict:
    """The posterior's upper bound: label map -> maskige -> tokens -> maskige -> nearest colour, scored against the
    label map; plus codebook usage (perplexity, live codes) over all tokens."""
    matrix = StreamingConfusionMatrix(config.num_labels, config.ignore_index)
    token_counts = torch.zeros(tokenizer.codebook_size, dtype=torch.long, device=accelerator.device)
    was_training = tokenizer.training
    tokenizer.eval()
    for batch in process_shard(dataset, accelerator, batch_size):
        labels = batch["labels"].to(accelerator.device)
        padded = pad_to_multiple(labels, tokenizer.token_stride, config.ignore_index)
        maskige = maskige_from_labels(padded, config.palette, config.ignore_color, config.ignore_index)
        token_ids = tokenizer.encode(maskige)
        reconstruction = tokenizer.decode(token_ids)[..., : labels.shape[-2], : labels.shape[-1]]
        matrix.update(class_scores_nearest_color(reconstruction, config.palette).argmax(dim=1), labels)
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
