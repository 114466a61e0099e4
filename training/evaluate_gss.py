"""Evaluation: segmentation mIoU of a GSS model, or reconstruction mIoU and codebook usage of a tokenizer alone.

    accelerate launch training/evaluate_gss.py --model_name_or_path outputs/gss-camvid --data_dir ../shared/data/camvid --void_value 11
    accelerate launch training/evaluate_gss.py --tokenizer_path outputs/tokenizer --config_name gss-mobilenetv2-camvid \
        --data_dir ../shared/data/camvid --void_value 11

Scores (mIoU, per-class IoU, mAcc, aAcc) come from one streaming confusion matrix. With several processes each
evaluates every n-th image (no padding, no duplicate) and the matrices are summed, so the figures equal the
single-process ones. The training scripts call the same functions on their validation split.
"""

import argparse
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

from gss_hf import (
    GSSConfig,
    GSSForSemanticSegmentation,
    GSSImageProcessor,
    MaskigeTokenizer,
    class_scores_nearest_color,
    maskige_from_labels,
)
from segmentation_data import SegmentationEvalDataset, add_data_arguments, collate_segmentation, load_splits_from_args
from segmentation_metrics import StreamingConfusionMatrix, codebook_usage, count_tokens
from training_common import launched_on_cpu_only, load_gss_config


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


def eval_dataset_for(args: argparse.Namespace, config: GSSConfig, image_mean, image_std) -> SegmentationEvalDataset:
    """The `--split` of the data named by the data arguments, with this model's classes."""
    splits = load_splits_from_args(args)
    if args.split not in splits:
        raise ValueError(f"The data has no {args.split!r} split; it has {sorted(splits)}: choose one with --split.")
    return SegmentationEvalDataset(
        splits[args.split], image_mean=image_mean, image_std=image_std, void_value=args.void_value,
        reduce_labels=args.reduce_labels, num_labels=config.num_labels,
    )  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--model_name_or_path", help="A GSS model folder or Hub id: segmentation scores.")
    what.add_argument("--tokenizer_path", help="A stage-I tokenizer folder: reconstruction scores.")
    parser.add_argument("--config_name", help="GSS preset or config folder giving the palette (with --tokenizer_path).")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--per_device_eval_batch_size", type=int, default=4)
    parser.add_argument("--sliding_window", action="store_true", help="Sliding-window instead of whole-image.")
    parser.add_argument("--mixed_precision", choices=("no", "bf16", "fp16"), default=None)
    parser.add_argument("--output_file", help="Also write the scores here as JSON.")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    if args.tokenizer_path and not args.config_name:
        parser.error("--tokenizer_path needs --config_name (the palette and classes the tokenizer was trained for).")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = Accelerator(cpu=launched_on_cpu_only(), mixed_precision=args.mixed_precision)
    if args.model_name_or_path:
        model = AutoModelForSemanticSegmentation.from_pretrained(args.model_name_or_path).to(accelerator.device)
        try:
            processor = AutoImageProcessor.from_pretrained(args.model_name_or_path)
        except OSError:
            processor = GSSImageProcessor()
        dataset = eval_dataset_for(args, model.config, processor.image_mean, processor.image_std)
        scores = evaluate_segmentation(
            accelerator, model, dataset, args.per_device_eval_batch_size, args.sliding_window
        )
    else:
        config = load_gss_config(args.config_name)
        tokenizer = MaskigeTokenizer.from_pretrained(args.tokenizer_path).to(accelerator.device)
        dataset = eval_dataset_for(args, config, GSSImageProcessor.image_mean, GSSImageProcessor.image_std)
        scores = evaluate_reconstruction(accelerator, tokenizer, config, dataset, args.per_device_eval_batch_size)
    if accelerator.is_main_process:
        text = json.dumps(scores, indent=2)
        print(text)
        if args.output_file:
            Path(args.output_file).write_text(text + "\n")
    return scores


if __name__ == "__main__":
    main()
