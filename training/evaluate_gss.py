"""Evaluation: segmentation mIoU of a GSS model, or reconstruction mIoU and codebook usage of a tokenizer alone.

    accelerate launch training/evaluate_gss.py --model_name_or_path outputs/gss-camvid --data_dir ../shared/data/camvid --void_value 11
    accelerate launch training/evaluate_gss.py --tokenizer_path outputs/tokenizer --config_name gss-mobilenetv2-camvid \
        --data_dir ../shared/data/camvid --void_value 11

The scores come from `training/evaluation.py`, which the training scripts also use on their validation split;
with several processes (`accelerate launch --num_processes N`) they equal the single-process ones.
"""

import argparse
import json
from pathlib import Path

from accelerate import Accelerator
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

from gss_hf import IGNORE_INDEX, GSSImageProcessor
from gss_hf.modeling_gss_tokenizer import tokenizer_class
from training.common import launched_on_cpu_only, load_gss_config, make_image_processor
from training.cli import UsageError, check_pretrained_paths, run_script, usage_errors
from training.data import SegmentationEvalDataset, add_data_arguments, load_splits_from_args
from training.evaluation import evaluate_reconstruction, evaluate_segmentation


def eval_dataset_for(
    args: argparse.Namespace, num_labels: int, image_processor: GSSImageProcessor
) -> SegmentationEvalDataset:
    """The `--split` of the data named by the data arguments, read and converted by `image_processor`."""
    splits = load_splits_from_args(args)
    if args.split not in splits:
        raise UsageError(f"The data has no {args.split!r} split; it has {sorted(splits)}: choose one with --split.")
    return SegmentationEvalDataset(splits[args.split], image_processor, num_labels)


def model_ignore_index(config) -> int:
    """The label a segmentation model's loss ignores: `ignore_index` for GSS, transformers' own name otherwise."""
    return getattr(config, "ignore_index", getattr(config, "semantic_loss_ignore_index", IGNORE_INDEX))


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
    check_pretrained_paths(args, "model_name_or_path", "tokenizer_path")
    return args


def main(argv: list[str] | None = None) -> dict:
    with usage_errors():
        args = parse_args(argv)
        accelerator = Accelerator(cpu=launched_on_cpu_only(), mixed_precision=args.mixed_precision)
        if args.model_name_or_path:
            model = AutoModelForSemanticSegmentation.from_pretrained(args.model_name_or_path).to(accelerator.device)
            try:
                saved_processor = AutoImageProcessor.from_pretrained(args.model_name_or_path)
            except OSError:
                saved_processor = None
            processor = make_image_processor(args, model_ignore_index(model.config), base=saved_processor)
            dataset = eval_dataset_for(args, model.config.num_labels, processor)
        else:
            config = load_gss_config(args.config_name)
            tokenizer = tokenizer_class(config).from_pretrained(args.tokenizer_path).to(accelerator.device)
            tokenizer.check_compatible(config)
            processor = make_image_processor(args, config.ignore_index)
            dataset = eval_dataset_for(args, config.num_labels, processor)
    if args.model_name_or_path:
        scores = evaluate_segmentation(
            accelerator, model, dataset, args.per_device_eval_batch_size, args.sliding_window
        )
    else:
        scores = evaluate_reconstruction(accelerator, tokenizer, config, dataset, args.per_device_eval_batch_size)
    if accelerator.is_main_process:
        text = json.dumps(scores, indent=2)
        print(text)
        if args.output_file:
            Path(args.output_file).write_text(text + "\n")
    return scores


if __name__ == "__main__":
    run_script(main)
