"""Stage II: train the latent prior (backbone, MLA prior head, auxiliary head) against the frozen stage-I tokenizer.

    accelerate launch training/train_prior.py --config_name gss-mobilenetv2-camvid --tokenizer_path outputs/tokenizer \
        --pretrained_backbone imagenet-mobilenet-v2 --data_dir ../shared/data/camvid --void_value 11 \
        --output_dir outputs/gss-camvid-prior

Loss (spec §4): 0.8 x token cross-entropy against the tokenised, filled label map + 0.2 x auxiliary pixel
cross-entropy. The output folder is a complete GSS model (`from_pretrained`, pipeline, `trust_remote_code`) whose
X^-1 is the config's: nearest colour (GSS-FF), or an untrained learned X^-1 for `train_inverse.py` to fit.

`--token_loss_class_weighting inverse_sqrt_frequency` weights each token by the rarest-weighted class of its patch
(`GSSConfig.token_loss_class_weights`), the weights computed from the training split's label frequencies.
"""

import argparse

import numpy as np

from gss_hf import GSSConfig, GSSForSemanticSegmentation
from gss_hf.modeling_gss_tokenizer import tokenizer_class
from gss_hf.pretrained_mobilenet_v2 import gss_model_with_imagenet_mobilenet_v2
from training.common import (
    add_training_arguments,
    check_training_arguments,
    evaluate_and_save_model,
    load_gss_config,
    make_accelerator,
    make_datasets,
    make_image_processor,
    make_optimizer_and_schedule,
    make_train_dataloader,
    train,
)
from training.cli import (
    UsageError,
    check_crop_size,
    check_pretrained_paths,
    parse_json_object,
    run_script,
    usage_errors,
)
from training.data import add_data_arguments, collate_segmentation
from training.data.samples import ProcessedSplit


PRETRAINED_BACKBONES = ("none", "imagenet-mobilenet-v2")
TOKEN_LOSS_CLASS_WEIGHTINGS = ("none", "inverse_sqrt_frequency")
# The largest class weight `inverse_sqrt_frequency` gives (also that of a class absent from the training split).
MAX_CLASS_WEIGHT = 10.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    start = model.add_mutually_exclusive_group(required=True)
    start.add_argument("--config_name", help="GSS preset (e.g. gss-mobilenetv2-camvid) or config folder.")
    start.add_argument("--model_name_or_path", help="Continue training a saved GSS model (folder or Hub id).")
    model.add_argument("--config_overrides", default=None, help='JSON of GSSConfig fields, e.g. \'{"prior_depth": 2}\'.')
    model.add_argument("--tokenizer_path", help="The stage-I tokenizer (diffusers folder); needed with --config_name.")
    model.add_argument("--pretrained_backbone", choices=PRETRAINED_BACKBONES, default="none",
                       help="Start the backbone from these weights (with --config_name).")  # fmt: skip
    model.add_argument("--sliding_window", action="store_true", help="Validate with sliding-window inference.")
    model.add_argument("--token_loss_class_weighting", choices=TOKEN_LOSS_CLASS_WEIGHTINGS, default="none",
                       help="Weight tokens by the classes in their patch, from the training split's pixel frequencies "
                            "f: w = f^-1/2, scaled so that the mean weight of the training pixels is 1, then clipped "
                            f"to at most {MAX_CLASS_WEIGHT:g}; written into the config as token_loss_class_weights. "
                            "'none' keeps the config's.")  # fmt: skip
    add_data_arguments(parser)
    add_training_arguments(parser, "train_prior.py", learning_rate=6e-4, max_train_steps=2000)
    args = parser.parse_args(argv)
    if args.config_name and not args.tokenizer_path:
        parser.error("--config_name needs --tokenizer_path: the prior learns the tokens of a trained tokenizer.")
    check_training_arguments(args)
    args.config_overrides = parse_json_object(args.config_overrides, "--config_overrides")
    if args.token_loss_class_weighting != "none" and "token_loss_class_weights" in args.config_overrides:
        raise UsageError(
            "--token_loss_class_weighting and a token_loss_class_weights in --config_overrides both set the token "
            "loss's class weights: give one of them."
        )
    check_pretrained_paths(args, "model_name_or_path", "tokenizer_path")
    return args


def build_model(args: argparse.Namespace) -> GSSForSemanticSegmentation:
    """A saved GSS model, or a fresh one around the stage-I tokenizer (and a pretrained backbone when asked)."""
    if args.model_name_or_path:
        return GSSForSemanticSegmentation.from_pretrained(args.model_name_or_path)
    config = load_gss_config(args.config_name, args.config_overrides)
    if args.pretrained_backbone == "imagenet-mobilenet-v2":
        model = gss_model_with_imagenet_mobilenet_v2(config)
    else:
        model = GSSForSemanticSegmentation(config)
    model.load_tokenizer(tokenizer_class(config).from_pretrained(args.tokenizer_path))
    return model


def class_pixel_counts(dataset: ProcessedSplit, num_labels: int) -> np.ndarray:
    """(num_labels,) int64 labelled-pixel counts of each class over the split's label maps, unaugmented."""
    counts = np.zeros(num_labels, dtype=np.int64)
    for index in range(len(dataset)):
        _, labels = dataset.read(index, with_image=False)
        counts += np.bincount(labels[labels < num_labels].ravel(), minlength=num_labels)[:num_labels]
    return counts


def inverse_sqrt_frequency_weights(counts: np.ndarray, max_weight: float = MAX_CLASS_WEIGHT) -> list[float]:
    """Class weights w_c = f_c^-1/2 (f_c: class c's share of the labelled pixels), scaled so that the training
    pixels' mean weight sum_c f_c w_c is 1 (common classes end below 1, rare ones above), then clipped to at most
    `max_weight`; a class with no pixel gets `max_weight`. The square root keeps a 100x rarer class at 10x."""
    frequencies = counts / max(int(counts.sum()), 1)
    if not (frequencies > 0).any():
        raise UsageError("--token_loss_class_weighting: the training split has no labelled pixel.")
    root = np.sqrt(frequencies)
    with np.errstate(divide="ignore"):
        weights = np.where(frequencies > 0, 1.0 / (root * root.sum()), np.inf)
    return [round(float(weight), 6) for weight in np.minimum(weights, max_weight)]


def set_token_loss_class_weights(args: argparse.Namespace, config: GSSConfig, train_dataset: ProcessedSplit) -> None:
    """Writes the weights of `--token_loss_class_weighting` into `config` (saved with the model); 'none' leaves it."""
    if args.token_loss_class_weighting == "none":
        return
    counts = class_pixel_counts(train_dataset, config.num_labels)
    config.token_loss_class_weights = inverse_sqrt_frequency_weights(counts)
    config.validate()


def main(argv: list[str] | None = None) -> dict:
    with usage_errors():
        args = parse_args(argv)
        accelerator = make_accelerator(args, project_name="gss-prior")
        model = build_model(args)
        config = model.config
        check_crop_size(args.crop_size, config.token_stride)
        processor = make_image_processor(args, config.ignore_index)
        train_dataset, eval_dataset = make_datasets(args, config.num_labels, processor)
        set_token_loss_class_weights(args, config, train_dataset)
        if config.token_loss_class_weights is not None:
            accelerator.print(f"token_loss_class_weights: {config.token_loss_class_weights}")
    dataloader = make_train_dataloader(train_dataset, args, collate_segmentation)
    optimizer, schedule = make_optimizer_and_schedule(model, args, accelerator.num_processes)
    model, optimizer, schedule, dataloader = accelerator.prepare(model, optimizer, schedule, dataloader)

    def loss_function(batch: dict) -> tuple:
        outputs = model(pixel_values=batch["pixel_values"], labels=batch["labels"])
        return outputs.loss, {"token_loss": outputs.token_loss.item(), "auxiliary_loss": outputs.auxiliary_loss.item()}

    train(accelerator, args, model, optimizer, schedule, dataloader, loss_function)
    return evaluate_and_save_model(
        accelerator, args, model, processor, eval_dataset,
        model_description=f"GSS prior (stage II) with X^-1 = {config.inverse_type}.",
    )  # fmt: skip


if __name__ == "__main__":
    run_script(main)
