"""Reading files: photos and label maps from `datasets.Image(decode=False)` values, with errors that name the file,
checked examples, and the photos of a SegNet/CamVid-layout folder as users hand them to an image processor."""

import io
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
from tqdm.auto import tqdm

from gss_hf.image_processing_gss import HIGH_BIT_DEPTH_PIL_MODES, to_rgb_uint8
from gss_hf.label_spec import LabelSpec
from training.data.layouts import CAMVID_VOID_VALUE


SINGLE_CHANNEL_LABEL_MODES = ("1", "L", "P") + HIGH_BIT_DEPTH_PIL_MODES


def describe_entry(entry: dict, name: str) -> str:
    """The file path of a `datasets.Image(decode=False)` value for error messages, or `name` when it has none."""
    return entry.get("path") or name


def open_entry(entry: dict, name: str, kind: str, decode: bool = True) -> PIL.Image.Image:
    """A PIL image from a `datasets.Image(decode=False)` value (its bytes if present, else its path): fully loaded,
    or with `decode=False` only checked for integrity (`verify`, no pixel decoding; only its size is then usable)."""
    data, path = entry.get("bytes"), entry.get("path")
    if data is None and path is None:
        raise ValueError(f"The {kind} {name} has neither bytes nor a file path.")
    try:
        image = PIL.Image.open(io.BytesIO(data) if data is not None else path)
        if decode:
            image.load()
        else:
            image.verify()
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise ValueError(f"Cannot read the {kind} {describe_entry(entry, name)}: {error}") from error
    return image


def read_image(entry: dict, name: str) -> np.ndarray:
    """A photo as (height, width, 3) uint8 RGB, converted exactly as `GSSImageProcessor` converts photos at
    inference (grey, palette and RGBA to RGB, 16-bit rescaled), so that training sees what inference will see;
    `name` stands for the photo in error messages when the entry has no file path."""
    image = open_entry(entry, name, "photo")
    try:
        return np.moveaxis(to_rgb_uint8(image, index=0), 0, -1).copy()  # writable, (height, width, 3) contiguous
    except ValueError as error:
        raise ValueError(f"Cannot use the photo {describe_entry(entry, name)}: {error}") from error


def read_label_map(entry: dict, label_spec: LabelSpec, name: str = "without a file path") -> np.ndarray:
    """A label map as (height, width) int64 class ids or `label_spec.ignore_index`, its values converted by
    `label_spec` (void value, reduce_labels, id map). Colour-coded label images are refused: a colour is no class
    id."""
    image = open_entry(entry, name, "label map")
    where = describe_entry(entry, name)
    if image.mode not in SINGLE_CHANNEL_LABEL_MODES:
        if len(image.getbands()) >= 3:
            raise ValueError(
                f"The label map {where} is a colour image (mode {image.mode}): label maps must hold one class id "
                "per pixel. Convert its colours to class ids first and save a single-channel (8- or 16-bit) PNG."
            )
        raise ValueError(
            f"The label map {where} has mode {image.mode}: expected a single-channel integer image of class ids."
        )
    try:
        return label_spec.apply(np.array(image, dtype=np.int64))
    except ValueError as error:
        raise ValueError(f"Cannot use the label map {where}: {error}") from error


def read_segnet_photos_and_labels(
    root: Path, split: str, names: list[str], label_spec: LabelSpec
) -> tuple[list[PIL.Image.Image], list[np.ndarray]]:
    """The named photos of a SegNet/CamVid-layout folder (`<split>/`) as PIL images, the way users hand photos to an
    image processor, and their label maps (`<split>annot/`) as `read_label_map` gives them."""
    photos = []
    for name in names:
        with PIL.Image.open(root / split / name) as photo:
            photo.load()
            photos.append(photo)
    label_files = [{"path": str(root / f"{split}annot" / name), "bytes": None} for name in names]
    labels = [read_label_map(entry, label_spec) for entry in label_files]
    return photos, labels


def read_camvid_val_photos(camvid_dir: Path, names: list[str]) -> tuple[list[PIL.Image.Image], list[np.ndarray]]:
    """The named CamVid `val` photos and their label maps (void, CAMVID_VOID_VALUE, -> the ignore index 255), as
    `read_segnet_photos_and_labels` gives them."""
    return read_segnet_photos_and_labels(camvid_dir, "val", names, LabelSpec(void_value=CAMVID_VOID_VALUE))


def read_example(
    split: datasets.Dataset, index: int, label_spec: LabelSpec, num_labels: int | None, with_image: bool
) -> tuple[np.ndarray | None, np.ndarray]:
    """One example, checked: photo (height, width, 3) uint8 (None unless `with_image`), labels (height, width)."""
    if not 0 <= index < len(split):
        raise IndexError(f"Index {index} is out of range for a split of {len(split)} examples.")
    example = split[index]
    name = f"of example {index}"
    labels = read_label_map(example["label"], label_spec, name=name)
    label_where = describe_entry(example["label"], name)
    if num_labels is not None:
        label_spec.check(labels, num_labels, label_where)
    if not with_image:
        return None, labels
    image = read_image(example["image"], name)
    check_same_size(image.shape[:2], labels.shape, describe_entry(example["image"], name), label_where)
    return image, labels


def check_split_files(
    split: datasets.Dataset, label_spec: LabelSpec, num_labels: int | None, with_images: bool, description: str
) -> None:
    """Opens every label map of `split` (its values checked) and checks every photo's header, size and file
    integrity, before any training step: a truncated photo or a label of 200 is named now, not when a batch reaches
    it, possibly an hour in. Label maps are decoded, photos are only verified (no pixel decoding), so a pass over
    CamVid's 468 files takes seconds."""
    for index in tqdm(range(len(split)), desc=f"Checking {description}", unit="file", leave=False):
        _, labels = read_example(split, index, label_spec, num_labels, with_image=False)
        if with_images:
            example, name = split[index], f"of example {index}"
            photo = open_entry(example["image"], name, "photo", decode=False)
            where = (describe_entry(example["image"], name), describe_entry(example["label"], name))
            check_same_size(photo.size[::-1], labels.shape, *where)


def check_same_size(photo_shape: tuple[int, int], label_shape: tuple[int, int], photo: str, label_map: str) -> None:
    """Raises `ValueError` naming both files unless the photo and its label map have the same (height, width)."""
    if tuple(photo_shape) != tuple(label_shape):
        raise ValueError(
            f"The photo {photo} is {photo_shape[1]}x{photo_shape[0]} but its label map {label_map} is "
            f"{label_shape[1]}x{label_shape[0]} (width x height): they must be the same size."
        )
