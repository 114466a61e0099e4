"""`gss-generate`: draw label maps from a GSS model's learned token prior (no photo) and write into the output folder

  sample_000_labels.png   the label map: one grey pixel per pixel whose value is the class id (8-bit, mode L;
                          16-bit beyond 256 classes)
  sample_000_maskige.png  its maskige, the colour image the tokenizer decoded, from which the classes are read
  grid.png                every sample's maskige, side by side in sample order

    gss-generate --num N --output-dir DIR [--seed S] [--model PATH] [--steps K] [--temperature T] [--verbose]

`--model` is a GSS model folder (default: the embedded CamVid model) holding the token prior in a `token_prior`
subfolder, which `training/train_token_prior.py` writes. Every argument and the model folder are checked before any
sample is drawn; a mistake is answered with one line, `gss-generate: error: ...`, and exit status 2.
"""

import argparse
import sys
from pathlib import Path

import PIL.Image
import torch

from .cli_paths import check_output_dir
from .modeling_gss import GSSForSemanticSegmentation
from .modeling_token_prior import GSSTokenPriorModel, sample_label_maps
from .segment_cli import (
    EMBEDDED_MODEL,
    InputError,
    first_line,
    label_image,
    positive_float,
    positive_int,
    quiet_loading,
)


TOKEN_PRIOR_FOLDER = "token_prior"


def training_command(folder: Path) -> str:
    """The command that trains a token prior for the GSS model in `folder`, into its `token_prior` subfolder."""
    return (
        f"python training/train_token_prior.py --gss_model_path {folder} --data_dir DATA --void_value 11 "
        f"--output_dir {folder / TOKEN_PRIOR_FOLDER}"
    )


def check_model_folder(folder: Path) -> None:
    """Raises `InputError` unless `folder` holds a GSS model (config.json) and a token prior beside it."""
    if not folder.exists():
        raise InputError(f"--model {folder}: the folder does not exist.")
    if not folder.is_dir():
        raise InputError(f"--model {folder}: is a file; expected a GSS model folder.")
    if not (folder / "config.json").is_file():
        raise InputError(f"--model {folder}: no config.json, so not a saved GSS model.")
    check_token_prior_folder(folder)


def check_token_prior_folder(folder: Path) -> None:
    """Raises `InputError`, naming the training command, unless the GSS model folder `folder` has a token prior."""
    prior = folder / TOKEN_PRIOR_FOLDER
    if not (prior / "config.json").is_file() or not (prior / "model.safetensors").is_file():
        raise InputError(
            f"--model {folder}: no token prior in {prior} (config.json and model.safetensors); train one with "
            f"`{training_command(folder)}`."
        )


def load_token_prior(folder: Path, tokenizer) -> GSSTokenPriorModel:
    """The token prior of the GSS model folder `folder` in eval mode, checked against that model's `tokenizer`."""
    check_token_prior_folder(folder)
    try:
        prior = GSSTokenPriorModel.from_pretrained(folder / TOKEN_PRIOR_FOLDER)
    except (OSError, RuntimeError, ValueError) as error:
        raise InputError(f"--model {folder}: loading failed ({first_line(error)}).") from error
    if prior.config.codebook_size != tokenizer.codebook_size:
        raise InputError(
            f"--model {folder}: the token prior models {prior.config.codebook_size} codes but the model's tokenizer "
            f"has {tokenizer.codebook_size}; retrain it with `{training_command(folder)}`."
        )
    return prior.eval()


def load_models(folder: Path) -> tuple[GSSForSemanticSegmentation, GSSTokenPriorModel]:
    """The GSS model (for its tokenizer and palette) and its token prior, in eval mode."""
    check_model_folder(folder)
    try:
        model = GSSForSemanticSegmentation.from_pretrained(folder)
    except (OSError, RuntimeError, ValueError) as error:
        raise InputError(f"--model {folder}: loading failed ({first_line(error)}).") from error
    return model.eval(), load_token_prior(folder, model.tokenizer)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gss-generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--num", type=positive_int, required=True, metavar="N", help="Label maps to draw.")
    parser.add_argument("--output-dir", type=Path, required=True, help="Where the PNGs go (created if missing).")
    parser.add_argument("--seed", type=int, default=0, help="The seed of the draws (default 0).")
    parser.add_argument("--model", type=Path, default=EMBEDDED_MODEL,
                        help="A GSS model folder with a token_prior subfolder (default: the embedded CamVid "
                             "model).")  # fmt: skip
    parser.add_argument("--steps", type=positive_int, default=8, metavar="K",
                        help="MaskGIT decoding steps (default 8).")  # fmt: skip
    parser.add_argument("--temperature", type=positive_float, default=1.0, metavar="T",
                        help="Sampling temperature (default 1; lower gives more typical maps).")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="Show transformers' load reports.")
    return parser.parse_args(argv)


def error(message: str) -> int:
    print(f"gss-generate: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_output_dir(args.output_dir, "--output-dir")
        with quiet_loading(args.verbose):
            model, prior = load_models(args.model.expanduser())
    except (InputError, ValueError) as problem:
        return error(str(problem))
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as problem:
        return error(f"--output-dir {args.output_dir}: cannot be created ({problem.strerror or problem}).")

    generator = torch.Generator().manual_seed(args.seed)
    labels, maskiges = sample_label_maps(
        prior, model.tokenizer, model.config.palette, args.num, args.steps, args.temperature, generator
    )
    maskiges = maskiges.permute(0, 2, 3, 1).numpy()
    for index, (label_map, maskige) in enumerate(zip(labels.numpy(), maskiges)):
        label_image(label_map).save(args.output_dir / f"sample_{index:03d}_labels.png")
        PIL.Image.fromarray(maskige).save(args.output_dir / f"sample_{index:03d}_maskige.png")
    PIL.Image.fromarray(maskiges.transpose(1, 0, 2, 3).reshape(maskiges.shape[1], -1, 3)).save(
        args.output_dir / "grid.png"
    )
    height, width = labels.shape[1:]
    print(f"{args.num} label maps of {width}x{height} -> {args.output_dir}/sample_*_{{labels,maskige}}.png, grid.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
