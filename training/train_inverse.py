"""Stage III: train the learned X^-1 (GSS-FT-W) on the frozen prior's predicted maskiges, then save one merged model.

    accelerate launch training/train_inverse.py --model_name_or_path outputs/gss-camvid-prior \
        --data_dir ../shared/data/camvid --void_value 11 --output_dir outputs/gss-camvid

Only X^-1 trains (spec §2): the photo goes through the frozen prior and tokenizer (`generate_maskige`), and X^-1
learns, with pixel cross-entropy, to turn the *predicted* maskige into classes, so it also learns to fix the prior's
typical errors. The stage is this script's choice, not a state of the model: the model is frozen and kept in eval
mode here, and only `model.inverse` is trained (and checkpointed) through Accelerate.
A stage-II model with a training-free X^-1 (GSS-FF) is switched to a fresh learned one. `--class_weighted_loss`
weights each pixel by its class's weight from the stage-II model's `token_loss_class_weights`, so that X^-1 is
taught the rare classes as the prior was. The output folder holds the
whole model (backbone, heads, tokenizer and the trained X^-1), ready for `from_pretrained` and the pipeline.
"""

import argparse

import torch
from transformers import AutoImageProcessor

from gss_hf import GSSConfig, GSSForSemanticSegmentation
from gss_hf.modeling_gss import masked_cross_entropy, resize_scores
from training.common import (
    add_training_arguments,
    check_training_arguments,
    evaluate_and_save_model,
    make_accelerator,
    make_datasets,
    make_image_processor,
    make_optimizer_and_schedule,
    make_train_dataloader,
    train,
)
from training.cli import UsageError, check_pretrained_paths, run_script, usage_errors
from training.data import add_data_arguments, collate_segmentation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="The stage-II GSS model (folder or Hub id).")
    parser.add_argument("--sliding_window", action="store_true", help="Validate with sliding-window inference.")
    parser.add_argument("--class_weighted_loss", action="store_true",
                        help="Weight each pixel's cross-entropy by its class's weight in the stage-II model's "
                             "token_loss_class_weights (a model trained with --token_loss_class_weighting).")  # fmt: skip
    add_data_arguments(parser)
    add_training_arguments(parser, "train_inverse.py", learning_rate=1e-3, max_train_steps=1000)
    args = parser.parse_args(argv)
    check_training_arguments(args)
    check_pretrained_paths(args, "model_name_or_path")
    return args


def load_stage_ii_model(path: str) -> GSSForSemanticSegmentation:
    """The stage-II model, frozen and in eval mode, with its learned X^-1 (a fresh one for a GSS-FF model) as the
    one part that trains."""
    model = GSSForSemanticSegmentation.from_pretrained(path)
    if model.config.inverse_type != "learned":
        model.set_inverse("learned")
    model.requires_grad_(False).eval()
    model.inverse.requires_grad_(True)
    return model


def pixel_loss_class_weights(args: argparse.Namespace, config: GSSConfig) -> torch.Tensor | None:
    """(num_labels,) class weights of the pixel loss with `--class_weighted_loss`, else None."""
    if not args.class_weighted_loss:
        return None
    if config.token_loss_class_weights is None:
        raise UsageError(
            f"--class_weighted_loss: {args.model_name_or_path} has no token_loss_class_weights in its config "
            "(train its prior with --token_loss_class_weighting, or drop the flag)."
        )
    return torch.tensor(config.token_loss_class_weights, dtype=torch.float32)


def main(argv: list[str] | None = None) -> dict:
    with usage_errors():
        args = parse_args(argv)
        accelerator = make_accelerator(args, project_name="gss-inverse")
        model = load_stage_ii_model(args.model_name_or_path).to(accelerator.device)
        config = model.config
        class_weights = pixel_loss_class_weights(args, config)
        saved_processor = AutoImageProcessor.from_pretrained(args.model_name_or_path)
        processor = make_image_processor(args, config.ignore_index, base=saved_processor)
        train_dataset, eval_dataset = make_datasets(args, config.num_labels, processor)
    dataloader = make_train_dataloader(train_dataset, args, collate_segmentation)
    # Only X^-1 is handed to Accelerate (optimiser, DDP, checkpoints): the frozen rest of the model stays as loaded.
    optimizer, schedule = make_optimizer_and_schedule(model.inverse, args, accelerator.num_processes)
    inverse, optimizer, schedule, dataloader = accelerator.prepare(model.inverse, optimizer, schedule, dataloader)

    def loss_function(batch: dict) -> tuple:
        with accelerator.autocast():
            maskige = model.generate_maskige(batch["pixel_values"])
        logits = resize_scores(inverse(maskige), batch["labels"].shape[-2:])
        return masked_cross_entropy(logits, batch["labels"], config.ignore_index, class_weights), {}

    train(accelerator, args, inverse, optimizer, schedule, dataloader, loss_function)
    return evaluate_and_save_model(
        accelerator, args, model, processor, eval_dataset,
        model_description="GSS-FT-W: the stage-II prior with a learned X^-1 trained on its predicted maskiges.",
    )  # fmt: skip


if __name__ == "__main__":
    run_script(main)
