"""Evaluation: segmentation mIoU of a GSS model, or reconstruction mIoU and codebook usage of a tokenizer alone, or
the segmentation mIoU of a model with another tokenizer's decoder (both flags; the tokenizer must tokenise exactly as
the model's does, as one fine-tuned by `train_posterior.py --train_decoder_only` from it).

    accelerate launch training/evaluate_gss.py --model_name_or_path outputs/gss-camvid --data_dir ../shared/data/camvid --void_value 11
    accelerate launch training/evaluate_gss.py --tokenizer_path outputs/tokenizer --config_name gss-mobilenetv2-camvid \
        --data_dir ../shared/data/camvid --void_value 11

The scores come from `training/evaluation.py`, which the training scripts also use on their validation split;
with several processes (`accelerate launch --num_processes N`) they equal the single-process ones.
"""

import argparse
import json
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

from gss_hf import IGNORE_INDEX, GSSImageProcessor, MaskigeTokenizer
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


def swap_decoder(model, tokenizer_path: str) -> None:
    """Loads the tokenizer at `tokenizer_path` into `model`, refusing one that tokenises differently (another
    encoder or codebook): the model's prior was trained to predict its own tokenizer's tokens."""
    tokenizer = tokenizer_class(model.config).from_pretrained(tokenizer_path)
    if not isinstance(tokenizer, MaskigeTokenizer):
        raise UsageError(f"Only a VQModel tokenizer's decoder can be swapped in, not a {type(tokenizer).__name__}.")
    own = model.tokenizer.tokenizing_state_dict()
    given = tokenizer.tokenizing_state_dict()
    different = sorted(key for key in own if key not in given or not torch.equal(own[key], given[key].to(own[key])))
    if different:
        raise UsageError(
            f"{tokenizer_path} tokenises differently from the model's tokenizer (its {different[:3]} differ): the "
            "prior predicts the model's own tokens. Give a tokenizer fine-tuned with --train_decoder_only from it."
        )
    model.load_tokenizer(tokenizer.to(model.device))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", help="A GSS model folder or Hub id: segmentation scores.")
    parser.add_argument("--tokenizer_path", help="A stage-I tokenizer folder: reconstruction scores; with "
                        "--model_name_or_path, swapped into the model (same encoder and codebook).")  # fmt: skip
    parser.add_argument("--config_name", help="GSS preset or config folder giving the palette (with --tokenizer_path).")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--per_device_eval_batch_size", type=int, default=4)
    parser.add_argument("--sliding_window", action="store_true", help="Sliding-window instead of whole-image.")
    parser.add_argument("--mixed_precision", choices=("no", "bf16", "fp16"), default=None)
    parser.add_argument("--output_file", help="Also write the scores here as JSON.")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    if not (args.model_name_or_path or args.tokenizer_path):
        parser.error("give --model_name_or_path (segmentation), --tokenizer_path (reconstruction) or both.")
    if args.tokenizer_path and not (args.config_name or args.model_name_or_path):
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
            if args.tokenizer_path:
                swap_decoder(model, args.tokenizer_path)
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
