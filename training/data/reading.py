"""Reading files: photos and label maps from `datasets.Image(decode=False)` values, with errors that name the file,
checked examples, and the photos of a SegNet/CamVid-layout folder as users hand them to an image processor."""

import io
from pathlib import Path

import datasets
import numpy as np
import PIL.Image

from gss_hf import IGNORE_INDEX
from gss_hf.image_processing_gss import to_rgb_uint8
from training.data.layouts import CAMVID_VOID_VALUE


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
SINGLE_CHANNEL_LABEL_MODES = ("1", "L", "P") + SIXTEEN_BIT_MODES


def describe_entry(entry: dict, name: str) -> str:
    """The file path of a `datasets.Image(decode=False)` value for error messages, or `name` when it has none."""
    return entry.get("path") or name


def open_entry(entry: dict, name: str, kind: str) -> PIL.Image.Image:
    """A fully loaded PIL image from a `datasets.Image(decode=False)` value: its bytes if present, else its path."""
    data, path = entry.get("bytes"), entry.get("path")
    if data is None and path is None:
        raise ValueError(f"The {kind} {name} has neither bytes nor a file path.")
    try:
        image = PIL.Image.open(io.BytesIO(data) if data is not None else path)
        image.load()
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


def read_label_map(
    entry: dict, void_value: int | None, reduce_labels: bool, name: str = "without a file path"
) -> np.ndarray:
    """A label map as (height, width) int64 class ids, `void_value` and (with `reduce_labels`) 0 turned into
    IGNORE_INDEX and the other ids lowered by one. Colour-coded label images are refused: a colour is no class id."""
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
    labels = np.array(image, dtype=np.int64)
    if void_value is not None:
        labels[labels == void_value] = IGNORE_INDEX
    if reduce_labels:
        labelled = labels != IGNORE_INDEX
        labels[labelled] -= 1
        labels[labels == -1] = IGNORE_INDEX
    return labels


def read_segnet_photos_and_labels(
    root: Path, split: str, names: list[str], void_value: int | None
) -> tuple[list[PIL.Image.Image], list[np.ndarray]]:
    """The named photos of a SegNet/CamVid-layout folder (`<split>/`) as RGB PIL images, the way users hand photos to
    an image processor, and their label maps (`<split>annot/`, `void_value` -> IGNORE_INDEX) as `read_label_map`
    gives them."""
    photos = [PIL.Image.open(root / split / name).convert("RGB") for name in names]
    labels = [
        read_label_map({"path": str(root / f"{split}annot" / name), "bytes": None}, void_value, False)
        for name in names
    ]
    return photos, labels


def read_camvid_val_photos(camvid_dir: Path, names: list[str]) -> tuple[list[PIL.Image.Image], list[np.ndarray]]:
    """The named CamVid `val` photos and their label maps (void, CAMVID_VOID_VALUE -> IGNORE_INDEX), as
    `read_segnet_photos_and_labels` gives them."""
    return read_segnet_photos_and_labels(camvid_dir, "val", names, CAMVID_VOID_VALUE)


def check_label_values(labels: np.ndarray, num_labels: int, where: str) -> None:
    """Every value must be a class id or IGNORE_INDEX; anything else is a remapping the user has to ask for."""
    invalid = ((labels < 0) | (labels >= num_labels)) & (labels != IGNORE_INDEX)
    if invalid.any():
        values = np.unique(labels[invalid])
        example = int(values[0])
        raise ValueError(
            f"The label map {where} holds {values[:10].tolist()}, neither class ids (0..{num_labels - 1}) nor the "
            f"ignore index {IGNORE_INDEX}. If {example} means unlabelled, pass --void_value {example}; if the class "
            "ids start at 1 with 0 for unlabelled, pass --reduce_labels."
        )


def read_example(
    split: datasets.Dataset,
    index: int,
    void_value: int | None,
    reduce_labels: bool,
    num_labels: int | None,
    with_image: bool,
) -> tuple[np.ndarray | None, np.ndarray]:
    """One example, checked: photo (height, width, 3) uint8 (None unless `with_image`), labels (height, width)."""
    if not 0 <= index < len(split):
        raise IndexError(f"Index {index} is out of range for a split of {len(split)} examples.")
    example = split[index]
    name = f"of example {index}"
    labels = read_label_map(example["label"], void_value, reduce_labels, name=name)
    label_where = describe_entry(example["label"], name)
    if num_labels is not None:
        check_label_values(labels, num_labels, label_where)
    if not with_image:
        return None, labels
    image = read_image(example["image"], name)
    if image.shape[:2] != labels.shape:
        raise ValueError(
            f"The photo {describe_entry(example['image'], name)} is {image.shape[1]}x{image.shape[0]} but its label "
            f"map {label_where} is {labels.shape[1]}x{labels.shape[0]} (width x height): they must be the same size."
        )
    return image, labels
