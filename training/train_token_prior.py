"""Train a learned token prior p(z) (`GSSTokenPriorModel`, MaskGIT) on the token grids of a frozen stage-I tokenizer.

    accelerate launch training/train_token_prior.py --data_dir ../shared/data/camvid --void_value 11 \
        --output_dir gss_hf/pretrained/gss-mobilenetv2-camvid/token_prior

The training label maps are resized (nearest neighbour) to `--resolution` (default 96x128), flipped horizontally at
random, painted with the GSS model's palette and tokenised by its frozen tokenizer (`--gss_model_path`, default the
embedded CamVid model; `--tokenizer_path` replaces its tokenizer). Per grid a cosine-scheduled fraction of the tokens
is masked and the prior learns them back (MaskGIT's objective). Unlabelled pixels are tokenised as painted (the ignore
colour), so the prior also models where maps are unlabelled. Validation reports the same masked-token loss on the
validation maps (unflipped, masks from a generator seeded with `--seed`). The output folder is the prior's
`save_pretrained` (config.json + model.safetensors); saved as a `token_prior` subfolder of a GSS model folder it is
what `gss-generate --model` uses.
"""

import argparse
import json
from pathlib import Path

import datasets
import numpy as np
import torch

from gss_hf import GSSConfig, GSSForSemanticSegmentation, GSSImageProcessor, maskige_from_labels
from gss_hf.configuration_token_prior import GSSTokenPriorConfig
from gss_hf.image_processing_gss import resize_labels
from gss_hf.modeling_gss_tokenizer import GSSTokenizer, tokenizer_class
from gss_hf.modeling_token_prior import GSSTokenPriorModel, mask_random_tokens
from gss_hf.segment_cli import EMBEDDED_MODEL
from training.cli import UsageError, check_pretrained_paths, parse_json_object, run_script, usage_errors
from training.common import (
    add_training_arguments,
    check_training_arguments,
    finish,
    make_accelerator,
    make_image_processor,
    make_optimizer_and_schedule,
    make_train_dataloader,
    train,
)
from training.data import add_data_arguments, check_split_files, collate_segmentation, load_splits_from_args
from training.data.samples import ProcessedSplit


# Set from the tokenizer and `--resolution`, never by `--config_overrides`.
DERIVED_FIELDS = ("codebook_size", "grid_height", "grid_width")


class ResizedLabelMaps(ProcessedSplit):
    """Label maps resized with nearest neighbour to one (height, width), flipped horizontally with
    `flip_probability` by a generator made from (seed, epoch, index), so that a resumed run replays them exactly."""

    def __init__(self, split: datasets.Dataset, image_processor: GSSImageProcessor, num_labels: int,
                 size: tuple[int, int], seed: int, flip_probability: float):  # fmt: skip
        super().__init__(split, image_processor, num_labels)
        self.size, self.seed, self.flip_probability = size, seed, flip_probability

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        """{"labels": (height, width) int64 class ids or the ignore index}."""
        epoch, index = key
        _, labels = self.read(index, with_image=False)
        labels = resize_labels(labels, self.size)
        if np.random.default_rng((self.seed, epoch, index)).random() < self.flip_probability:
            labels = labels[:, ::-1]
        return self.to_tensors(None, labels, resize=False)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("token prior")
    model.add_argument("--gss_model_path", default=str(EMBEDDED_MODEL),
                       help="The GSS model whose palette, classes and frozen tokenizer the prior learns "
                            "(default: the embedded CamVid model).")  # fmt: skip
    model.add_argument("--tokenizer_path", help="A stage-I tokenizer folder to use instead of the GSS model's own.")
    model.add_argument("--resolution", type=int, nargs=2, default=(96, 128), metavar=("HEIGHT", "WIDTH"),
                       help="Label maps are resized to this size (nearest neighbour) before tokenisation.")  # fmt: skip
    model.add_argument("--flip_probability", type=float, default=0.5, help="Horizontal flips in training.")
    model.add_argument("--config_overrides", default=None,
                       help='JSON of GSSTokenPriorConfig fields, e.g. \'{"num_hidden_layers": 2}\'.')  # fmt: skip
    add_data_arguments(parser)
    add_training_arguments(parser, "train_token_prior.py", learning_rate=4e-4, max_train_steps=5000)
    args = parser.parse_args(argv)
    check_training_arguments(args)
    check_pretrained_paths(args, "gss_model_path", "tokenizer_path")
    if min(args.resolution) < 1:
        raise UsageError(f"--resolution must be two positive sizes, got {list(args.resolution)}.")
    if not 0.0 <= args.flip_probability <= 1.0:
        raise UsageError(f"--flip_probability must be in [0, 1], got {args.flip_probability}.")
    args.config_overrides = parse_json_object(args.config_overrides, "--config_overrides")
    known = sorted(set(GSSTokenPriorConfig.__annotations__) - set(DERIVED_FIELDS))
    unknown = sorted(set(args.config_overrides) - set(known) - set(DERIVED_FIELDS))
    if unknown:
        raise UsageError(f"--config_overrides: no GSSTokenPriorConfig field {unknown}; the fields are {known}.")
    derived = sorted(set(args.config_overrides) & set(DERIVED_FIELDS))
    if derived:
        raise UsageError(f"--config_overrides may not set {derived}: they come from the tokenizer and --resolution.")
    return args


def load_tokenizer(args: argparse.Namespace) -> tuple[GSSTokenizer, GSSConfig]:
    """The frozen tokenizer (eval mode) and the GSS config that says how label maps are painted."""
    gss_config = GSSConfig.from_pretrained(args.gss_model_path)
    if args.tokenizer_path:
        tokenizer = tokenizer_class(gss_config).from_pretrained(args.tokenizer_path)
        tokenizer.check_compatible(gss_config)
    else:
        tokenizer = GSSForSemanticSegmentation.from_pretrained(args.gss_model_path).tokenizer
    tokenizer.requires_grad_(False)
    return tokenizer.eval(), gss_config


def build_token_prior(args: argparse.Namespace, tokenizer: GSSTokenizer) -> GSSTokenPriorModel:
    stride = tokenizer.token_stride
    if any(size % stride for size in args.resolution):
        raise UsageError(f"--resolution {list(args.resolution)} must be divisible by the token stride {stride}.")
    config = GSSTokenPriorConfig(
        codebook_size=tokenizer.codebook_size,
        grid_height=args.resolution[0] // stride,
        grid_width=args.resolution[1] // stride,
        **args.config_overrides,
    )
    return GSSTokenPriorModel(config)


@torch.no_grad()
def evaluate_masked_loss(prior: GSSTokenPriorModel, tokenise, dataset: ResizedLabelMaps, args, device) -> dict:
    """The mean masked-token cross-entropy over the validation maps, masks drawn from a generator seeded with
    `--seed`, so that two evaluations of one model agree."""
    prior.eval()
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.per_device_eval_batch_size, sampler=[(0, index) for index in range(len(dataset))],
        collate_fn=collate_segmentation,
    )  # fmt: skip
    generator = torch.Generator(device).manual_seed(args.seed)
    total, count = 0.0, 0
    for batch in loader:
        token_ids = tokenise(batch["labels"].to(device))
        masked = mask_random_tokens(token_ids, prior.config.mask_token_id, generator)
        total += prior(masked, labels=token_ids).loss.item() * len(token_ids)
        count += len(token_ids)
    return {"eval_loss": total / count, "eval_samples": count}


def main(argv: list[str] | None = None) -> dict:
    with usage_errors():
        args = parse_args(argv)
        accelerator = make_accelerator(args, project_name="gss-token-prior")
        tokenizer, gss_config = load_tokenizer(args)
        prior = build_token_prior(args, tokenizer)
        processor = make_image_processor(args, gss_config.ignore_index)
        splits = load_splits_from_args(args)
        for name in ("train", "validation"):
            check_split_files(splits[name], processor.label_spec, gss_config.num_labels, False, f"the {name} split")
        size = tuple(args.resolution)
        train_dataset = ResizedLabelMaps(
            splits["train"], processor, gss_config.num_labels, size, args.seed, args.flip_probability
        )
        eval_dataset = ResizedLabelMaps(splits["validation"], processor, gss_config.num_labels, size, args.seed, 0.0)
    tokenizer.to(accelerator.device)

    def tokenise(labels: torch.Tensor) -> torch.LongTensor:
        """(batch, H, W) label maps -> (batch, H / stride, W / stride) tokens of the frozen tokenizer."""
        palette, ignore = gss_config.palette, gss_config.ignore_color
        return tokenizer.encode(maskige_from_labels(labels, palette, ignore, gss_config.ignore_index))

    dataloader = make_train_dataloader(train_dataset, args, collate_segmentation)
    optimizer, schedule = make_optimizer_and_schedule(prior, args, accelerator.num_processes)
    model, optimizer, schedule, dataloader = accelerator.prepare(prior, optimizer, schedule, dataloader)

    def loss_function(batch: dict) -> tuple:
        token_ids = tokenise(batch["labels"])
        outputs = model(mask_random_tokens(token_ids, prior.config.mask_token_id), labels=token_ids)
        return outputs.loss, {}

    train(accelerator, args, model, optimizer, schedule, dataloader, loss_function)
    trained = accelerator.unwrap_model(model)
    metrics = evaluate_masked_loss(trained, tokenise, eval_dataset, args, accelerator.device)
    accelerator.print(json.dumps(metrics))
    finish(
        accelerator, args, trained.save_pretrained, metrics,
        model_description=f"A GSS token prior (MaskGIT) over the {tokenizer.codebook_size}-code token grids of "
        f"{args.tokenizer_path or args.gss_model_path}, for label maps of {size[0]}x{size[1]}: not a segmentation "
        "model but a generator of label maps. Save it as the `token_prior` subfolder of its GSS model to use it "
        "with `gss-generate --model <that folder>`.",
        usage=(
            "import torch\nfrom transformers import AutoModel\n"
            "from gss_hf import GSSForSemanticSegmentation, sample_label_maps\n\n"
            f'prior = AutoModel.from_pretrained("{args.hub_model_id or Path(args.output_dir).name}", '
            "trust_remote_code=True)\n"
            f'gss = GSSForSemanticSegmentation.from_pretrained("{args.gss_model_path}")  # whose tokenizer it learned\n'
            "label_maps, maskiges = sample_label_maps(prior, gss.tokenizer, gss.config.palette, num_samples=4,\n"
            "                                         generator=torch.Generator().manual_seed(0))"
        ),
    )  # fmt: skip
    return metrics


if __name__ == "__main__":
    run_script(main)
