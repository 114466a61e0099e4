"""`gss-segment`: segment photos with a GSS model and write, per photo, four files into the output folder:

  <name>_labels.png   the label map: one grey pixel per photo pixel whose value is the class id, 0..K-1 (8-bit,
                      16-bit when K > 256); the legend names each id
  <name>_overlay.png  the photo blended half and half with the colour of each pixel's class
  <name>_maskige.png  the maskige, the colour image the model generates, from which the classes are read
  <name>_legend.json  for each class present: id, name (the model's id2label), the RGB colour the overlay and the
                      maskige use for it, and the fraction of the photo's pixels it covers (the fractions sum to 1)

and with `--samples N` a fifth: <name>_uncertainty.png, a heat map (black: all N samples agree, white: most
disagreement) of how much N segmentations drawn from the prior disagree at each pixel (the entropy of their class
frequencies, `GSSForSemanticSegmentation.sample`), with a colour bar in nats. The label map stays the usual one.

    gss-segment photo.png [more.jpg ...] [--model PATH_OR_HUB_ID] [--output-dir DIR] [--sliding-window]
                [--samples N [--temperature T] [--seed S]] [--verbose]

Without `--model` the CamVid model embedded in the package is used (no download). Every input (the photos, the
output folder, the model folder) is checked before any photo is segmented, so a typo in the last of many paths fails
at once, with one line, instead of after minutes of work.

`--model` is read as a local folder when it exists, starts with `.`, `/` or `~`, or is not shaped like a Hub id
(`name` or `org/name`, letters, digits, `-`, `_` and `.`); otherwise as a Hub id.
"""

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation
from transformers.utils import logging as transformers_logging

from .image_processing_gss import to_rgb_uint8
from .modeling_gss import GSSForSemanticSegmentation
from .cli_paths import check_output_dir, hub_offline, is_local_path


EMBEDDED_MODEL = Path(__file__).parent / "pretrained" / "gss-mobilenetv2-camvid"
OVERLAY_ALPHA = 0.5
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"
)  # fmt: skip
MODEL_FOLDER_FILES = "config.json, model.safetensors and preprocessor_config.json"


class InputError(ValueError):
    """An input that cannot be used (a photo, the output folder or the model), with the reason in one sentence."""


def read_photo(path: Path, index: int = 0) -> tuple[PIL.Image.Image, np.ndarray]:
    """Opens `path` as a photo and returns it with its (height, width, 3) uint8 RGB version, converted as the image
    processor converts it (so a 16-bit grey photo is scaled, not clipped); raises `InputError` with the reason when
    it cannot be one."""
    if not path.exists():
        raise InputError(f"{path}: no such file.")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; pass image files (e.g. {path}/*.png).")
    try:
        with PIL.Image.open(path) as image:
            image.load()
            photo = image.copy()
    except (PIL.UnidentifiedImageError, OSError) as error:
        raise InputError(f"{path}: not an image PIL can read ({error}).") from error
    try:
        rgb = np.moveaxis(to_rgb_uint8(photo, index), 0, -1)
    except (ValueError, TypeError) as error:
        raise InputError(f"{path}: cannot be segmented ({error})") from error
    return photo, rgb


def check_model_folder(folder: Path, argument: str) -> Path:
    """Checks that `folder` (`--model argument`) holds a saved GSS model; returns its weights file. Raises
    `InputError` otherwise."""
    if not folder.exists():
        raise InputError(f"--model {argument}: the folder does not exist.")
    if not folder.is_dir():
        raise InputError(f"--model {folder}: is a file; expected a GSS model folder ({MODEL_FOLDER_FILES}).")
    names = sorted(path.name for path in folder.iterdir())
    if not names:
        raise InputError(f"--model {folder}: the folder is empty; expected a GSS model folder ({MODEL_FOLDER_FILES}).")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise InputError(f"--model {folder}: no config.json, so not a saved model; a GSS model folder holds "
                         f"{MODEL_FOLDER_FILES}.")  # fmt: skip
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"{config_file}: not valid JSON ({error}).") from error
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "gss":
        what = "has no model_type" if model_type is None else f"describes a {model_type!r} model"
        raise InputError(f"--model {folder}: its config.json {what}; gss-segment expects a GSS model "
                         "(model_type 'gss').")  # fmt: skip
    weights = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not weights:
        raise InputError(f"--model {folder}: no weights (model.safetensors) in the folder, which holds only "
                         f"{', '.join(names)}.")  # fmt: skip
    if not (folder / "preprocessor_config.json").is_file():
        raise InputError(f"--model {folder}: no preprocessor_config.json, the image processor the model is "
                         "meant to be used with.")  # fmt: skip
    return weights[0]


def first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def load_model(argument: str) -> tuple[GSSForSemanticSegmentation, object]:
    """The GSS model and image processor named by `--model argument`; raises `InputError` with one sentence when
    they cannot be loaded."""
    if is_local_path(argument):
        folder = Path(argument).expanduser()
        weights = check_model_folder(folder, argument)
        try:
            model = AutoModelForSemanticSegmentation.from_pretrained(folder)
        except SafetensorError as error:
            raise InputError(f"{weights}: not a complete safetensors file ({error}); it may be truncated, save or "
                             "download it again.") from error  # fmt: skip
        except (OSError, RuntimeError, ValueError) as error:
            raise InputError(f"--model {folder}: loading {weights.name} failed ({first_line(error)}).") from error
        try:
            processor = AutoImageProcessor.from_pretrained(folder)
        except (OSError, ValueError, TypeError) as error:
            problem = first_line(error)
            raise InputError(f"{folder / 'preprocessor_config.json'}: cannot be loaded ({problem}).") from error
        return model.eval(), processor

    try:
        config = AutoConfig.from_pretrained(argument)
        if config.model_type != "gss":
            raise InputError(f"--model {argument}: is a {config.model_type!r} model on the Hub; gss-segment expects a "
                             "GSS model (model_type 'gss').")  # fmt: skip
        model = AutoModelForSemanticSegmentation.from_pretrained(argument)
        processor = AutoImageProcessor.from_pretrained(argument)
    except InputError:
        raise
    except (OSError, ValueError, SafetensorError) as error:  # huggingface_hub's errors are OSErrors
        if hub_offline():
            reason = "offline mode is on (HF_HUB_OFFLINE=1) and it is not in the local cache"
        else:
            reason = first_line(error).rstrip(".")
        message = (f"--model {argument}: no such local folder, and it could not be downloaded from the Hugging Face "
                   f"Hub: {reason}; pass a local GSS model folder instead.")  # fmt: skip
        raise InputError(message) from error
    return model.eval(), processor


@contextlib.contextmanager
def quiet_loading(verbose: bool):
    """Hides transformers' `Loading weights` progress bar and load reports unless `verbose`; restores the settings."""
    if verbose:
        yield
        return
    verbosity = transformers_logging.get_verbosity()
    progress_bar = transformers_logging.is_progress_bar_enabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if progress_bar:
            transformers_logging.enable_progress_bar()


def class_colors(model: GSSForSemanticSegmentation) -> np.ndarray:
    """(num_labels + 1, 3) uint8: the maskige palette, then the ignore colour; the overlay uses the same colours."""
    config = model.config
    return np.asarray([*config.palette, config.ignore_color], dtype=np.uint8)


def overlay(rgb: np.ndarray, labels: np.ndarray, colors: np.ndarray) -> PIL.Image.Image:
    """The photo, as (height, width, 3) uint8 RGB, blended with the colour of each pixel's class."""
    painted = PIL.Image.fromarray(colors[labels])
    return PIL.Image.blend(PIL.Image.fromarray(rgb), painted, OVERLAY_ALPHA)


@torch.no_grad()
def segment(
    model: GSSForSemanticSegmentation,
    processor,
    photo: PIL.Image.Image,
    sliding_window: bool,
    samples: int = 0,
    temperature: float = 1.0,
    seed: int = 0,
    code_class_patterns: torch.LongTensor | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Returns the label map (height, width) int64, the predicted maskige (height, width, 3) uint8 and, with
    `samples`, the samples' disagreement (height, width) float32 in nats (else None), all at the photo's size.
    `code_class_patterns` (`model.code_class_patterns()`, which decodes every code) is computed once by callers that
    sample many photos.

    Without `sliding_window` the processor resizes the photo (e.g. to a 360-pixel short edge for the embedded model)
    and the model sees it whole; with it the photo keeps its own size and the model runs on overlapping crops of
    `config.sliding_window_crop_size`, so large photos are segmented at native resolution.
    """
    inputs = processor(images=photo, return_tensors="pt", do_resize=not sliding_window)
    if samples:
        generator = torch.Generator().manual_seed(seed)
        outputs = model.sample(inputs["pixel_values"], samples, temperature, generator=generator,
                               sliding_window=sliding_window, code_class_patterns=code_class_patterns)  # fmt: skip
    else:
        outputs = model(pixel_values=inputs["pixel_values"], sliding_window=sliding_window)
    size = (photo.height, photo.width)
    labels = processor.post_process_semantic_segmentation(outputs, target_sizes=[size])[0]
    maskige = torch.nn.functional.interpolate(outputs.maskige, size=size, mode="nearest")[0]
    maskige = maskige.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    uncertainty = None
    if samples:
        uncertainty = torch.nn.functional.interpolate(outputs.uncertainty[:, None], size=size, mode="bilinear")
        uncertainty = uncertainty[0, 0].clamp(min=0).numpy()
    return labels.numpy(), maskige.numpy(), uncertainty


def hot_colors(values: np.ndarray) -> np.ndarray:
    """Values in 0..1 -> uint8 RGB on the "hot" ramp: black, red, yellow, white (brighter is higher)."""
    values = np.clip(values, 0.0, 1.0)[..., None]
    ramp = np.clip(3.0 * values - np.array([0.0, 1.0, 2.0]), 0.0, 1.0)
    return (255.0 * ramp).round().astype(np.uint8)


def uncertainty_heatmap(uncertainty: np.ndarray, max_value: float, bar_width: int = 72) -> PIL.Image.Image:
    """A (height, width) map of values in 0..`max_value` as a heat map, with a colour bar (labelled in nats) to its
    right."""
    height, width = uncertainty.shape
    picture = PIL.Image.new("RGB", (width + bar_width, height), "white")
    picture.paste(PIL.Image.fromarray(hot_colors(uncertainty / max_value)), (0, 0))
    margin = min(12, height // 4)
    top, bottom = margin, max(height - margin, margin + 1)
    gradient = np.linspace(1.0, 0.0, bottom - top)[:, None].repeat(14, axis=1)
    picture.paste(PIL.Image.fromarray(hot_colors(gradient)), (width + 8, top))
    draw = PIL.ImageDraw.Draw(picture)
    draw.text((width + 26, top), f"{max_value:.2f}", fill="black")
    draw.text((width + 26, (top + bottom) // 2 - 5), "nats", fill="black")
    draw.text((width + 26, bottom - 10), "0", fill="black")
    return picture


def max_disagreement(num_samples: int, num_labels: int) -> float:
    """The largest entropy N samples over K classes can have, log(min(N, K)) nats: the colour bar's top."""
    return math.log(max(min(num_samples, num_labels), 2))


def label_image(labels: np.ndarray) -> PIL.Image.Image:
    """The label map as a grey PNG of class ids: 8-bit when they fit, else 16-bit."""
    return PIL.Image.fromarray(labels.astype(np.uint8 if labels.max() < 256 else np.uint16))


def legend(labels: np.ndarray, id2label: dict[int, str], colors: np.ndarray) -> list[dict]:
    """For each class present, largest first: its id (the label PNG's pixel value), name, overlay RGB colour and
    fraction of the pixels."""
    counts = np.bincount(labels.ravel(), minlength=len(id2label))
    entries = [
        {"id": index, "name": id2label[index], "color": colors[index].tolist(), "area_fraction": count / labels.size}
        for index, count in enumerate(counts.tolist())
        if count
    ]
    return sorted(entries, key=lambda entry: -entry["area_fraction"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gss-segment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("images", nargs="+", type=Path, help="Photos to segment (any format PIL reads).")
    parser.add_argument("--model", default=str(EMBEDDED_MODEL),
                        help="A GSS model folder or Hub id (default: the embedded CamVid model).")  # fmt: skip
    parser.add_argument("--output-dir", type=Path, default=Path("gss-segment-output"),
                        help="Where <name>_labels.png, _overlay.png, _maskige.png and _legend.json go "
                             "(see above).")  # fmt: skip
    parser.add_argument("--sliding-window", action="store_true",
                        help="Segment the photo at its own size, on overlapping crops of the model's "
                             "sliding_window_crop_size (768 pixels for the embedded model). Without it the processor "
                             "first resizes the photo (a 360-pixel short edge for the embedded model) and the model "
                             "sees it whole: faster, coarser on large photos.")  # fmt: skip
    parser.add_argument("--samples", type=positive_int, default=0, metavar="N",
                        help="Also draw N segmentations from the prior and write <name>_uncertainty.png, where they "
                             "disagree (N decodes more: about N times the decoder's cost).")  # fmt: skip
    parser.add_argument("--temperature", type=positive_float, default=None, metavar="T",
                        help="With --samples: the prior's sampling temperature (default 1; lower is closer to the "
                             "usual prediction).")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None, help="With --samples: the seed of the draws (default 0).")
    parser.add_argument("--verbose", action="store_true",
                        help="Show transformers' progress bars and load reports while the model loads.")  # fmt: skip
    args = parser.parse_args(argv)
    if not args.samples:
        for name in ("temperature", "seed"):
            if getattr(args, name) is not None:
                parser.error(f"--{name} only applies with --samples N.")
    args.temperature = 1.0 if args.temperature is None else args.temperature
    args.seed = 0 if args.seed is None else args.seed
    return args


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def error(message: str) -> int:
    print(f"gss-segment: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        photos = [read_photo(path, index) for index, path in enumerate(args.images)]
    except InputError as problem:
        return error(str(problem))
    stems = [path.stem for path in args.images]
    if len(set(stems)) != len(stems):
        return error("two inputs share a file name; their outputs would overwrite each other.")
    try:
        check_output_dir(args.output_dir, "--output-dir")
    except ValueError as problem:
        return error(str(problem))
    try:
        with quiet_loading(args.verbose):
            model, processor = load_model(args.model)
    except InputError as problem:
        return error(str(problem))
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as problem:
        return error(f"--output-dir {args.output_dir}: cannot be created ({problem.strerror or problem}).")

    colors = class_colors(model)
    id2label = model.config.id2label
    patterns = model.code_class_patterns() if args.samples else None
    for path, (photo, rgb) in zip(args.images, photos):
        labels, maskige, uncertainty = segment(
            model, processor, photo, args.sliding_window, args.samples, args.temperature, args.seed, patterns
        )
        stem = args.output_dir / path.stem
        label_image(labels).save(f"{stem}_labels.png")
        overlay(rgb, labels, colors).save(f"{stem}_overlay.png")
        PIL.Image.fromarray(maskige).save(f"{stem}_maskige.png")
        classes = legend(labels, id2label, colors)
        description = {"photo": str(path), "labels": f"{path.stem}_labels.png", "overlay_alpha": OVERLAY_ALPHA,
                       "classes": classes}  # fmt: skip
        written = "labels,overlay,maskige"
        if uncertainty is not None:
            top = max_disagreement(args.samples, len(id2label))
            uncertainty_heatmap(uncertainty, top).save(f"{stem}_uncertainty.png")
            description["uncertainty"] = {
                "heat_map": f"{path.stem}_uncertainty.png", "samples": args.samples, "temperature": args.temperature,
                "seed": args.seed, "mean_nats": float(uncertainty.mean()), "color_bar_max_nats": top,
            }  # fmt: skip
            written += ",uncertainty"
        Path(f"{stem}_legend.json").write_text(json.dumps(description, indent=2) + "\n")
        print(f"{path} ({photo.width}x{photo.height}) -> {stem}_{{{written}}}.png, {stem}_legend.json")
        for entry in classes:
            print(f"  {entry['name']:<14} {100.0 * entry['area_fraction']:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
