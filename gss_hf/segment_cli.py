"""`gss-segment`: segment photos with a GSS model and write, per photo, a colour overlay, the predicted maskige and
the label map as PNGs.

    gss-segment photo.png [more.jpg ...] [--model PATH_OR_HUB_ID] [--output-dir DIR] [--sliding-window]

Without `--model` the CamVid model embedded in the package is used (no download). Every input is checked before any
is segmented, so a typo in the last of many paths fails at once instead of after minutes of work.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

from .modeling_gss import GSSForSemanticSegmentation


EMBEDDED_MODEL = Path(__file__).parent / "pretrained" / "gss-mobilenetv2-camvid"
OVERLAY_ALPHA = 0.5


class InputError(ValueError):
    """An input path that cannot be segmented: missing, a directory, or not an image."""


def read_photo(path: Path) -> PIL.Image.Image:
    """Opens `path` as a photo, raising `InputError` with the reason when it cannot be one."""
    if not path.exists():
        raise InputError(f"{path}: no such file.")
    if path.is_dir():
        raise InputError(f"{path}: is a directory; pass image files (e.g. {path}/*.png).")
    try:
        with PIL.Image.open(path) as image:
            image.load()
            return image.copy()
    except (PIL.UnidentifiedImageError, OSError) as error:
        raise InputError(f"{path}: not an image PIL can read ({error}).") from error


def class_colors(model: GSSForSemanticSegmentation) -> np.ndarray:
    """(num_labels + 1, 3) uint8: the maskige palette, then the ignore colour; the overlay uses the same colours."""
    config = model.config
    return np.asarray([*config.palette, config.ignore_color], dtype=np.uint8)


def overlay(photo: PIL.Image.Image, labels: np.ndarray, colors: np.ndarray) -> PIL.Image.Image:
    """The photo blended with the colour of each pixel's class."""
    painted = PIL.Image.fromarray(colors[labels])
    return PIL.Image.blend(photo.convert("RGB"), painted, OVERLAY_ALPHA)


@torch.no_grad()
def segment(
    model: GSSForSemanticSegmentation, processor, photo: PIL.Image.Image, sliding_window: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Returns the label map (height, width) int64 and the predicted maskige (height, width, 3) uint8, both at the
    photo's size."""
    inputs = processor(images=photo, return_tensors="pt")
    outputs = model(pixel_values=inputs["pixel_values"], sliding_window=sliding_window)
    size = (photo.height, photo.width)
    labels = processor.post_process_semantic_segmentation(outputs, target_sizes=[size])[0]
    maskige = torch.nn.functional.interpolate(outputs.maskige, size=size, mode="nearest")[0]
    maskige = maskige.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
    return labels.numpy(), maskige.numpy()


def label_image(labels: np.ndarray) -> PIL.Image.Image:
    """The label map as a grey PNG of class ids: 8-bit when they fit, else 16-bit."""
    return PIL.Image.fromarray(labels.astype(np.uint8 if labels.max() < 256 else np.uint16))


def class_areas(labels: np.ndarray, id2label: dict[int, str]) -> list[tuple[str, float]]:
    """(class name, % of the pixels) for every class present, largest first."""
    counts = np.bincount(labels.ravel(), minlength=len(id2label))
    present = [(id2label[index], 100.0 * count / labels.size) for index, count in enumerate(counts) if count]
    return sorted(present, key=lambda item: -item[1])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gss-segment", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("images", nargs="+", type=Path, help="Photos to segment (any format PIL reads).")
    parser.add_argument("--model", default=str(EMBEDDED_MODEL),
                        help="A GSS model folder or Hub id (default: the embedded CamVid model).")  # fmt: skip
    parser.add_argument("--output-dir", type=Path, default=Path("gss-segment-output"),
                        help="Where <name>_overlay.png, <name>_maskige.png and <name>_labels.png go.")  # fmt: skip
    parser.add_argument("--sliding-window", action="store_true", help="Overlapping crops instead of the whole image.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        photos = [read_photo(path) for path in args.images]
    except InputError as error:
        print(f"gss-segment: error: {error}", file=sys.stderr)
        return 2
    stems = [path.stem for path in args.images]
    if len(set(stems)) != len(stems):
        print("gss-segment: error: two inputs share a file name; their outputs would overwrite each other.",
              file=sys.stderr)  # fmt: skip
        return 2

    model = AutoModelForSemanticSegmentation.from_pretrained(args.model).eval()
    if model.config.model_type != "gss":
        print(f"gss-segment: error: {args.model} is a {model.config.model_type!r} model, not a GSS one.",
              file=sys.stderr)  # fmt: skip
        return 2
    processor = AutoImageProcessor.from_pretrained(args.model)
    colors = class_colors(model)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for path, photo in zip(args.images, photos):
        labels, maskige = segment(model, processor, photo, args.sliding_window)
        stem = args.output_dir / path.stem
        overlay(photo, labels, colors).save(f"{stem}_overlay.png")
        PIL.Image.fromarray(maskige).save(f"{stem}_maskige.png")
        label_image(labels).save(f"{stem}_labels.png")
        print(f"{path} ({photo.width}x{photo.height}) -> {stem}_{{overlay,maskige,labels}}.png")
        for name, percent in class_areas(labels, model.config.id2label):
            print(f"  {name:<14} {percent:5.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
