"""Stage III: train the learned X^-1 (GSS-FT-W) on the frozen prior's predicted maskiges, then save one merged model.

    accelerate launch training/train_inverse.py --model_name_or_path outputs/gss-camvid-prior \
        --data_dir ../shared/data/camvid --void_value 11 --output_dir outputs/gss-camvid

Only X^-1 trains (spec §2): the photo goes through the frozen prior and tokenizer, and X^-1 learns, with pixel
cross-entropy, to turn the *predicted* maskige into classes, so it also learns to fix the prior's typical errors.
A stage-II model with a training-free X^-1 (GSS-FF) is switched to a fresh learned one. The output folder holds the
whole model (backbone, heads, tokenizer and the trained X^-1), ready for `from_pretrained` and the pipeline.
"""

import argparse

from transformers import AutoImageProcessor

from gss_hf import GSSConfig, GSSForSemanticSegmentation
from training.common import (
    add_training_arguments,
    check_training_arguments,
    evaluate_and_save_model,
    make_accelerator,
    make_datasets,
    make_optimizer_and_schedule,
    make_train_dataloader,
    train,
)
from training.data import add_data_arguments, collate_segmentation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="The stage-II GSS model (folder or Hub id).")
    parser.add_argument("--sliding_window", action="store_true", help="Validate with sliding-window inference.")
    add_data_arguments(parser)
    add_training_arguments(parser, learning_rate=1e-3, max_train_steps=1000)
    args = parser.parse_args(argv)
    check_training_arguments(args)
    return args


def load_stage_ii_model(path: str) -> GSSForSemanticSegmentation:
    """The stage-II model with a learned X^-1: its own when it has one, else a fresh one (the only weights that may
    be missing from the checkpoint)."""
    config = GSSConfig.from_pretrained(path)
    if config.inverse_type == "learned":
        return GSSForSemanticSegmentation.from_pretrained(path)
    config.inverse_type = "learned"
    model, loading_info = GSSForSemanticSegmentation.from_pretrained(
        path, config=config, strict=False, output_loading_info=True
    )
    unexpected = sorted(loading_info["unexpected_keys"])
    not_inverse = sorted(key for key in loading_info["missing_keys"] if not key.startswith("inverse."))
    if unexpected or not_inverse:
        raise ValueError(f"{path} is not a GSS stage-II model: missing {not_inverse}, unexpected {unexpected}.")
    return model


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = make_accelerator(args, project_name="gss-inverse")
    model = load_stage_ii_model(args.model_name_or_path)
    model.freeze_for_inverse_training()
    config = model.config
    processor = AutoImageProcessor.from_pretrained(args.model_name_or_path)
    train_dataset, eval_dataset = make_datasets(args, config.num_labels, processor)
    dataloader = make_train_dataloader(train_dataset, args, collate_segmentation)
    optimizer, schedule = make_optimizer_and_schedule(model, args, accelerator.num_processes)
    model, optimizer, schedule, dataloader = accelerator.prepare(model, optimizer, schedule, dataloader)

    def loss_function(batch: dict) -> tuple:
        return model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss, {}

    train(accelerator, args, model, optimizer, schedule, dataloader, loss_function)
    return evaluate_and_save_model(
        accelerator, args, model, processor, eval_dataset,
        model_description="GSS-FT-W: the stage-II prior with a learned X^-1 trained on its predicted maskiges.",
    )  # fmt: skip


if __name__ == "__main__":
    main()
