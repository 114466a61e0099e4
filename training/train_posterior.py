"""Stage I: train the maskige tokenizer (the latent posterior, a diffusers `VQModel`) on maskiges of label maps.

    accelerate launch training/train_posterior.py --config_name gss-mobilenetv2-camvid \
        --data_dir ../shared/data/camvid --void_value 11 --output_dir outputs/tokenizer

The training label maps (augmented: resize, crop, flip) and optionally synthetic maps of random shapes are painted
with the config's palette; the tokenizer learns to reconstruct them through its codebook. Loss:
`--reconstruction_weight` x MSE in the tokenizer's pixel space + the VQ codebook and commitment loss.

Against codebook collapse, entries that no token chose during the last `--reseed_dead_codes_every` steps are
re-seeded with encoder outputs of the current batch, the same on every process. On CamVid this kept 746 of 1024
codes alive instead of 15 and raised reconstruction mIoU from 14.4 to 22.7 after 150 steps
(`benchmarks/posterior_codebook_remedies.py`, table in benchmarks/RESULTS.md). Validation reports reconstruction mIoU (label map -> tokens -> maskige -> nearest colour) and
codebook usage. The output folder is a diffusers `VQModel` that `train_prior.py --tokenizer_path` takes.
"""

import argparse
import json

import torch
from accelerate.utils import broadcast

from gss_hf import GSSImageProcessor, MaskigeTokenizer, maskige_from_labels, maskige_to_tokenizer_pixels
from training.common import (
    add_training_arguments,
    check_training_arguments,
    finish,
    load_gss_config,
    make_accelerator,
    make_datasets,
    make_optimizer_and_schedule,
    make_train_dataloader,
    train,
)
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
    """Counts which codebook entries tokens choose and, every `interval` steps, replaces the unchosen ones with
    encoder outputs of the latest batch. Counts are summed over processes and the new entries are drawn on the main
    process and broadcast, so every replica keeps the same codebook."""

    def __init__(self, tokenizer: MaskigeTokenizer, accelerator, interval: int, seed: int):
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
        dead = (counts == 0).nonzero().flatten()
        self.counts.zero_()
        if len(dead) == 0:
            return
        candidates = self.latest_latents.permute(0, 2, 3, 1).reshape(-1, self.latest_latents.shape[1])
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        choice = torch.randint(len(candidates), (len(dead),), generator=generator).to(candidates.device)
        new_entries = broadcast(candidates[choice].contiguous(), from_process=0)
        self.tokenizer.vqmodel.quantize.embedding.weight[dead] = new_entries.to(
            self.tokenizer.vqmodel.quantize.embedding.weight.dtype
        )
        self.reseeded_total += len(dead)


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
    add_data_arguments(parser)
    add_training_arguments(parser, learning_rate=1e-3, max_train_steps=2000)
    args = parser.parse_args(argv)
    check_training_arguments(args)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    accelerator = make_accelerator(args, project_name="gss-posterior")
    config = load_gss_config(args.config_name)
    if args.tokenizer_path:
        tokenizer = MaskigeTokenizer.from_pretrained(args.tokenizer_path)
    else:
        tokenizer = MaskigeTokenizer.from_config(config.tokenizer_config)
    if any(size % tokenizer.token_stride for size in args.crop_size):
        raise ValueError(f"--crop_size {args.crop_size} must be divisible by the token stride {tokenizer.token_stride}.")
    real, eval_dataset = make_datasets(args, config.num_labels, GSSImageProcessor(), with_images=False)
    synthetic = None
    if args.num_synthetic_samples:
        synthetic = SyntheticLabelDataset(args.num_synthetic_samples, tuple(args.crop_size), config.num_labels, args.seed)
    train_dataset = RealAndSyntheticLabels(real, synthetic)
    dataloader = make_train_dataloader(train_dataset, args, collate_segmentation)
    optimizer, schedule = make_optimizer_and_schedule(tokenizer, args, accelerator.num_processes)
    model, optimizer, schedule, dataloader = accelerator.prepare(tokenizer, optimizer, schedule, dataloader)
    reseeder = DeadCodeReseeder(tokenizer, accelerator, args.reseed_dead_codes_every, args.seed)

    def loss_function(batch: dict) -> tuple:
        maskige = maskige_from_labels(batch["labels"], config.palette, config.ignore_color, config.ignore_index)
        outputs = model(maskige)
        target = maskige_to_tokenizer_pixels(maskige)
        reconstruction_loss = torch.nn.functional.mse_loss(torch.sigmoid(outputs.decoder_logits.float()), target)
        reseeder.observe(outputs.token_ids, outputs.latents)
        loss = args.reconstruction_weight * reconstruction_loss + outputs.quantization_loss
        return loss, {"reconstruction_loss": reconstruction_loss.item(), "reseeded": reseeder.reseeded_total}

    train(accelerator, args, model, optimizer, schedule, dataloader, loss_function, after_step=reseeder)
    metrics = evaluate_reconstruction(accelerator, tokenizer, config, eval_dataset, args.per_device_eval_batch_size)
    accelerator.print(json.dumps({key: metrics[key] for key in ("mean_iou", "perplexity", "live_codes")}))
    finish(
        accelerator, args, tokenizer.save_pretrained, metrics,
        model_description="GSS maskige tokenizer (stage I posterior, a diffusers VQModel): "
        f"{tokenizer.codebook_size} codes, tokens at 1/{tokenizer.token_stride}.",
    )  # fmt: skip
    return metrics


if __name__ == "__main__":
    main()
