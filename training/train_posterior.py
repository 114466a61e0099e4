"""Stage I: train the maskige tokenizer (the latent posterior; the config's `tokenizer_type`, a diffusers `VQModel`
for the presets trained here) on maskiges of label maps.

    accelerate launch training/train_posterior.py --config_name gss-mobilenetv2-camvid \
        --data_dir ../shared/data/camvid --void_value 11 --output_dir outputs/tokenizer

The training label maps (augmented: resize, crop, flip) and optionally synthetic maps of random shapes are painted
with the config's palette; the tokenizer learns to reconstruct them through its codebook. The loss is the
tokenizer's own (its `forward`; for the VQModel: `--reconstruction_weight` x MSE in the tokenizer's pixel space +
the VQ codebook and commitment loss), plus, with `--label_loss_weight`, a loss aimed at the labels: cross-entropy of
the nearest-colour class scores (minus squared RGB distance / `--label_loss_temperature`) of the decoded maskige,
which weighs every pixel by whether it decodes to its class rather than by colour error, so thin classes count.
`--train_decoder_only` (with `--tokenizer_path`) fine-tunes only the decoder of a trained tokenizer: its encoder
and codebook stay frozen, so its tokens, and any stage-II prior trained on them, stay valid.

Against codebook collapse, entries that no token chose during the last `--reseed_dead_codes_every` steps are
re-seeded with encoder outputs of the current batch, the same on every process; what that does on CamVid is
measured by `benchmarks/posterior_codebook_remedies.py` (table and conditions in benchmarks/RESULTS.md). Validation
reports reconstruction mIoU (label map -> tokens -> maskige -> nearest colour) and codebook usage. The output folder
is the tokenizer's `save_pretrained` (a diffusers `VQModel` folder), which `train_prior.py --tokenizer_path` takes.
"""

import argparse
import json

import torch
from accelerate.utils import broadcast

from gss_hf import GSSConfig, MaskigeTokenizer, maskige_from_labels
from gss_hf.maskige import class_scores_nearest_color
from gss_hf.modeling_gss import masked_cross_entropy
from gss_hf.modeling_gss_tokenizer import GSSTokenizer, build_tokenizer, tokenizer_class
from training.common import (
    add_training_arguments,
    check_training_arguments,
    finish,
    load_gss_config,
    make_accelerator,
    make_datasets,
    make_image_processor,
    make_optimizer_and_schedule,
    make_train_dataloader,
    train,
)
from training.cli import UsageError, check_crop_size, check_pretrained_paths, run_script, usage_errors
from training.data import SyntheticLabelDataset, add_data_arguments, collate_segmentation
from training.evaluation import evaluate_reconstruction
from training.metrics import count_tokens


class RealAndSyntheticLabels(torch.utils.data.Dataset):
    """The training label maps followed by `len(synthetic)` synthetic ones, addressed by (epoch, index) keys."""

    def __init__(self, real: torch.utils.data.Dataset, synthetic: torch.utils.data.Dataset | None):
        self.real, self.synthetic = real, synthetic

    def __len__(self) -> int:
        return len(self.real) + (len(self.synthetic) if self.synthetic is not None else 0)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key
        if index < len(self.real):
            return self.real[key]
        return self.synthetic[(epoch, index - len(self.real))]


class DeadCodeReseeder:
    """Counts which codebook entries tokens choose and, every `interval` steps, lets the tokenizer move the unchosen
    ones onto encoder outputs of the latest batch (`GSSTokenizer.reseed_dead_codes`). Counts are summed over
    processes and every process re-seeds from the main process's latents with the same generator, so every replica
    keeps the same codebook."""

    def __init__(self, tokenizer: GSSTokenizer, accelerator, interval: int, seed: int):
        self.tokenizer, self.accelerator, self.interval, self.seed = tokenizer, accelerator, interval, seed
        self.counts = torch.zeros(tokenizer.codebook_size, dtype=torch.long, device=accelerator.device)
        self.latest_latents: torch.Tensor | None = None
        self.reseeded_total = 0

    def observe(self, token_ids: torch.Tensor, latents: torch.Tensor) -> None:
        self.counts += count_tokens(token_ids, self.tokenizer.codebook_size)
        self.latest_latents = latents.detach()

    @torch.no_grad()
    def __call__(self, step: int) -> None:
        if self.interval <= 0 or step % self.interval:
            return
        counts = self.accelerator.reduce(self.counts.clone(), reduction="sum")
        self.counts.zero_()
        latents = broadcast(self.latest_latents.contiguous(), from_process=0)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        self.reseeded_total += self.tokenizer.reseed_dead_codes(counts, latents, generator)


def label_cross_entropy(
    reconstruction: torch.Tensor, labels: torch.Tensor, config: GSSConfig, temperature: float
) -> torch.Tensor:
    """Cross-entropy of the nearest-colour class scores of decoded maskiges (batch, 3, H, W), colours in 0..255,
    against their (batch, H, W) labels, over the labelled pixels: a pixel costs the same whether its class is sky or
    a pole, unlike the colour error, which thin classes barely move."""
    scores = class_scores_nearest_color(reconstruction, config.palette) / temperature
    return masked_cross_entropy(scores, labels, config.ignore_index)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("tokenizer")
    model.add_argument("--config_name", required=True,
                       help="GSS preset or config folder: palette, classes and the VQModel settings.")  # fmt: skip
    model.add_argument("--tokenizer_path", help="Continue from this tokenizer instead of a fresh one.")
    model.add_argument("--reconstruction_weight", type=float, default=10.0)
    model.add_argument("--reseed_dead_codes_every", type=int, default=25, help="0 turns re-seeding off.")
    model.add_argument("--num_synthetic_samples", type=int, default=0,
                       help="Add this many synthetic label maps (random shapes and classes) per epoch.")  # fmt: skip
    model.add_argument("--label_loss_weight", type=float, default=0.0,
                       help="Weight of the cross-entropy of the decoded maskige's nearest-colour class scores.")  # fmt: skip
    model.add_argument("--label_loss_temperature", type=float, default=1000.0,
                       help="Squared RGB distance per unit of class score in that loss.")  # fmt: skip
    model.add_argument("--train_decoder_only", action="store_true",
                       help="Freeze the encoder and codebook of --tokenizer_path (its tokens stay valid).")  # fmt: skip
    add_data_arguments(parser)
    add_training_arguments(parser, "train_posterior.py", learning_rate=1e-3, max_train_steps=2000)
    args = parser.parse_args(argv)
    check_training_arguments(args)
    check_pretrained_paths(args, "tokenizer_path")
    if args.label_loss_weight < 0 or not args.label_loss_temperature > 0:
        raise UsageError("--label_loss_weight must be >= 0 and --label_loss_temperature > 0.")
    if args.train_decoder_only and not args.tokenizer_path:
        raise UsageError("--train_decoder_only fine-tunes a trained tokenizer's decoder: give --tokenizer_path.")
    if args.train_decoder_only and args.reseed_dead_codes_every:
        raise UsageError("--train_decoder_only keeps the codebook as it is: add --reseed_dead_codes_every 0.")
    return args


def main(argv: list[str] | None = None) -> dict:
    with usage_errors():
        args = parse_args(argv)
        accelerator = make_accelerator(args, project_name="gss-posterior")
        config = load_gss_config(args.config_name)
        if args.tokenizer_path:
            tokenizer = tokenizer_class(config).from_pretrained(args.tokenizer_path)
            tokenizer.check_compatible(config)
        else:
            tokenizer = build_tokenizer(config)
        if args.train_decoder_only:
            if not isinstance(tokenizer, MaskigeTokenizer):
                raise UsageError(f"--train_decoder_only needs a VQModel tokenizer, not a {type(tokenizer).__name__}.")
            tokenizer.freeze_tokens()
        check_crop_size(args.crop_size, tokenizer.token_stride)
        processor = make_image_processor(args, config.ignore_index)
        real, eval_dataset = make_datasets(args, config.num_labels, processor, with_images=False)
    synthetic = None
    if args.num_synthetic_samples:
        synthetic = SyntheticLabelDataset(
            args.num_synthetic_samples, tuple(args.crop_size), config.num_labels, args.seed, config.ignore_index
        )
    train_dataset = RealAndSyntheticLabels(real, synthetic)
    dataloader = make_train_dataloader(train_dataset, args, collate_segmentation)
    optimizer, schedule = make_optimizer_and_schedule(tokenizer, args, accelerator.num_processes)
    model, optimizer, schedule, dataloader = accelerator.prepare(tokenizer, optimizer, schedule, dataloader)
    reseeder = DeadCodeReseeder(tokenizer, accelerator, args.reseed_dead_codes_every, args.seed)

    def loss_function(batch: dict) -> tuple:
        maskige = maskige_from_labels(batch["labels"], config.palette, config.ignore_color, config.ignore_index)
        outputs = model(maskige, reconstruction_weight=args.reconstruction_weight)
        reseeder.observe(outputs.token_ids, outputs.latents)
        logs = {"reconstruction_loss": outputs.reconstruction_loss.item(), "reseeded": reseeder.reseeded_total}
        loss = outputs.loss
        if args.label_loss_weight:
            label_loss = label_cross_entropy(outputs.reconstruction, batch["labels"], config, args.label_loss_temperature)
            loss = loss + args.label_loss_weight * label_loss
            logs["label_loss"] = label_loss.item()
        return loss, logs

    train(accelerator, args, model, optimizer, schedule, dataloader, loss_function, after_step=reseeder)
    metrics = evaluate_reconstruction(accelerator, tokenizer, config, eval_dataset, args.per_device_eval_batch_size)
    accelerator.print(json.dumps({key: metrics[key] for key in ("mean_iou", "perplexity", "live_codes")}))
    finish(
        accelerator, args, tokenizer.save_pretrained, metrics,
        model_description=f"GSS maskige tokenizer (stage I posterior, tokenizer_type {config.tokenizer_type!r}): "
        f"{tokenizer.codebook_size} codes, tokens at 1/{tokenizer.token_stride}.",
    )  # fmt: skip
    return metrics


if __name__ == "__main__":
    run_script(main)
