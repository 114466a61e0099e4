"""The discriminative baseline GSS is measured against: transformers' `MobileNetV2ForSemanticSegmentation` (DeepLabV3).

    accelerate launch training/train_baseline.py --pretrained_backbone imagenet-mobilenet-v2 \
        --data_dir ../shared/data/camvid --void_value 11 --output_dir outputs/deeplabv3-camvid

Everything except the model is GSS stage II's: the same data pipeline and augmentation, crop size, AdamW with the
same parameter groups and poly schedule, checkpoints, resume and evaluation. The backbone starts from the same
ImageNet MobileNetV2 weights as the GSS prior. DeepLabV3 dilates the last stages (`--output_stride`, 16 by default,
as torchvision's DeepLabV3-MobileNet) and is trained with pixel cross-entropy on its bilinearly up-sampled logits.
"""

import argparse

from transformers import MobileNetV2ForSemanticSegmentation

from gss_hf.pretrained_mobilenet_v2 import load_imagenet_mobilenet_v2
from training.baseline_model import deeplabv3_mobilenet_v2
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
from training.cli import run_script, usage_errors
from training.data import add_data_arguments, collate_segmentation


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--pretrained_backbone", choices=("none", "imagenet-mobilenet-v2"), default="none",
                       help="Start the backbone from these weights.")  # fmt: skip
    model.add_argument("--output_stride", type=int, choices=(8, 16, 32), default=16,
                       help="Backbone stride; below 32 the last stages are dilated.")  # fmt: skip
    model.add_argument("--config_name", default="gss-mobilenetv2-camvid",
                       help="GSS preset or config folder whose classes the baseline predicts.")  # fmt: skip
    add_data_arguments(parser)
    add_training_arguments(parser, "train_baseline.py", learning_rate=6e-4, max_train_steps=2000)
    args = parser.parse_args(argv)
    check_training_arguments(args)
    return args


def build_model(args: argparse.Namespace) -> MobileNetV2ForSemanticSegmentation:
    """DeepLabV3 on MobileNetV2 with the dataset's classes, the backbone from ImageNet when asked."""
    classes = load_gss_config(args.config_name)
    model = deeplabv3_mobilenet_v2(classes.id2label, classes.label2id, args.output_stride, classes.ignore_index)
    if args.pretrained_backbone == "imagenet-mobilenet-v2":
        load_imagenet_mobilenet_v2(model.mobilenet_v2)
    return model


def main(argv: list[str] | None = None) -> dict:
    with usage_errors():
        args = parse_args(argv)
        accelerator = make_accelerator(args, project_name="deeplabv3-baseline")
        model = build_model(args)
        processor = make_image_processor(args, model.config.semantic_loss_ignore_index)
        train_dataset, eval_dataset = make_datasets(args, model.config.num_labels, processor)
    dataloader = make_train_dataloader(train_dataset, args, collate_segmentation)
    optimizer, schedule = make_optimizer_and_schedule(model, args, accelerator.num_processes)
    model, optimizer, schedule, dataloader = accelerator.prepare(model, optimizer, schedule, dataloader)

    def loss_function(batch: dict) -> tuple:
        return model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss, {}

    train(accelerator, args, model, optimizer, schedule, dataloader, loss_function)
    return evaluate_and_save_model(
        accelerator, args, model, processor, eval_dataset,
        model_description=f"DeepLabV3-MobileNetV2 (output stride {args.output_stride}), the discriminative baseline.",
    )  # fmt: skip


if __name__ == "__main__":
    run_script(main)
