"""Segmentation data for the GSS training scripts: splits from a Hub id or a local folder, photos and label maps read
with errors that name the file, the paper's training augmentation (spec §5) and a deterministic sampling order.

The augmentation is hand-written rather than taken from a library such as albumentations because every random draw
has to come from a generator made per sample from (seed, epoch, index): that is what makes a resumed run bit-identical
to an uninterrupted one and lets any worker or process compute any sample, whereas albumentations draws from a
generator held by its `Compose` object. mmseg's `cat_max_ratio` crop is no library transform, and PIL does the
resizing, so OpenCV (which albumentations requires) stays out of the dependencies.
"""

import argparse
import io
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from gss_hf import IGNORE_INDEX
from gss_hf.image_processing_gss import to_rgb_uint8
from hub_utils import hub_is_reachable


__all__ = [
    "IGNORE_INDEX",
    "EpochSampler",
    "SegmentationAugmentation",
    "SegmentationEvalDataset",
    "SegmentationTrainDataset",
    "SyntheticLabelDataset",
    "add_data_arguments",
    "collate_segmentation",
    "load_segmentation_splits",
    "load_splits_from_args",
    "read_image",
    "read_label_map",
    "read_segnet_photos_and_labels",
    "synthetic_label_map",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Local folders name their splits their own way; the scripts always see "train", "validation" and "test".
SPLIT_ALIASES = {"training": "train", "val": "validation"}
CAMVID_SPLITS = ("train", "val", "test")
ACCEPTED_LAYOUTS = (
    "SegNet/CamVid: <split>/ + <split>annot/ (splits train, val, test), a label map has its photo's file name; "
    "ADE20K: images/<split>/ + annotations/<split>/, a label map is the photo's name with .png; "
    "a `datasets` save_to_disk folder (a DatasetDict, or a Dataset used as the train split)"
)
# Decoding is left to `read_image` / `read_label_map`, so that a broken file is named when it is read.
IMAGE_FILE = datasets.Image(decode=False)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
SINGLE_CHANNEL_LABEL_MODES = ("1", "L", "P") + SIXTEEN_BIT_MODES
CROP_TRIES = 10  # mmseg's RandomCrop tries this many crops for one that satisfies cat_max_ratio


# ----------------------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------------------
def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the data arguments shared by every training and evaluation script."""
    group = parser.add_argument_group("data")
    group.add_argument("--dataset_name", help="A Hub dataset id (the Hub, or a cached copy with HF_HUB_OFFLINE=1).")
    group.add_argument("--dataset_config_name", help="The configuration of --dataset_name, if it has several.")
    group.add_argument("--data_dir", help=f"A local folder in one of these layouts: {ACCEPTED_LAYOUTS}.")
    group.add_argument("--image_column", default="image", help="The photo column of a Hub or save_to_disk dataset.")
    group.add_argument("--label_column", default="label", help="The label column of a Hub or save_to_disk dataset.")
    group.add_argument("--train_split", default="train", help="The split to train on, served as 'train'.")
    group.add_argument(
        "--validation_split", default="validation", help="The split to evaluate on, served as 'validation' ('val' too)."
    )
    group.add_argument("--void_value", type=int, help="A label value meaning unlabelled (CamVid: 11); it is ignored.")
    group.add_argument(
        "--reduce_labels", action="store_true", help="Class ids start at 1 and 0 means unlabelled (ADE20K's files)."
    )
    group.add_argument(
        "--crop_size", type=int, nargs=2, default=(360, 480), metavar=("HEIGHT", "WIDTH"), help="Training crops."
    )
    group.add_argument("--max_train_samples", type=int, help="Use only the first N training samples.")
    group.add_argument("--max_eval_samples", type=int, help="Use only the first N samples of each evaluation split.")


def load_splits_from_args(args: argparse.Namespace) -> datasets.DatasetDict:
    """`load_segmentation_splits` from the parsed data arguments. `--train_split` / `--validation_split` are served
    as "train" / "validation", and `--max_*_samples` keep the first samples of the train / every other split."""
    splits = load_segmentation_splits(
        dataset_name=args.dataset_name,
        data_dir=args.data_dir,
        dataset_config_name=args.dataset_config_name,
        image_column=args.image_column,
        label_column=args.label_column,
    )
    for flag, requested, served_as in (
        ("--train_split", args.train_split, "train"),
        ("--validation_split", args.validation_split, "validation"),
    ):
        requested = SPLIT_ALIASES.get(requested, requested)
        if requested == served_as:
            continue
        if requested not in splits:
            raise ValueError(f"{flag} {requested!r}: the data has no such split; its splits are {sorted(splits)}.")
        splits[served_as] = splits[requested]
    for name in splits:
        max_samples = args.max_train_samples if name == "train" else args.max_eval_samples
        if max_samples is None:
            continue
        if max_samples < 1:
            flag = "--max_train_samples" if name == "train" else "--max_eval_samples"
            raise ValueError(f"{flag} must be at least 1, got {max_samples}.")
        splits[name] = splits[name].select(range(min(max_samples, len(splits[name]))))
    return splits


def load_segmentation_splits(
    dataset_name: str | None = None,
    data_dir: str | None = None,
    dataset_config_name: str | None = None,
    image_column: str = "image",
    label_column: str = "label",
) -> datasets.DatasetDict:
    """The splits of a Hub dataset or a local folder, each with exactly the columns "image" and "label" as
    `datasets.Image(decode=False)`, so that nothing is decoded before use and a broken file can be named then.
    Split names are "train", "validation" and "test" ("training" and "val" are renamed)."""
    if (dataset_name is None) == (data_dir is None):
        raise ValueError(
            "Pass exactly one of --dataset_name (a Hub dataset id) and --data_dir (a local folder), "
            f"got dataset_name={dataset_name!r}, data_dir={data_dir!r}."
        )
    if dataset_name is not None:
        splits = load_hub_dataset(dataset_name, dataset_config_name)
        return standardize_splits(splits, image_column, label_column, source=f"the Hub dataset {dataset_name!r}")
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--data_dir {root} is not a folder.")
    saved_markers = (datasets.config.DATASETDICT_JSON_FILENAME, datasets.config.DATASET_STATE_JSON_FILENAME)
    if any((root / marker).is_file() for marker in saved_markers):
        saved = datasets.load_from_disk(str(root))
        if isinstance(saved, datasets.Dataset):
            saved = datasets.DatasetDict({"train": saved})
        return standardize_splits(saved, image_column, label_column, source=f"the saved dataset {root}")
    return load_image_folder_splits(root)


def load_hub_dataset(dataset_name: str, dataset_config_name: str | None) -> datasets.DatasetDict:
    """`datasets.load_dataset`, failing at once when the Hub cannot be used: offline it raises immediately by itself,
    but with the Hub unreachable it would retry for about 20 s, so one quick request without retries comes first."""
    offline = datasets.config.HF_HUB_OFFLINE or huggingface_hub.constants.HF_HUB_OFFLINE
    if not offline and not hub_is_reachable():
        raise ConnectionError(
            f"Cannot load the dataset {dataset_name!r}: the Hugging Face Hub ({huggingface_hub.constants.ENDPOINT}) "
            "is unreachable. For a local folder pass --data_dir instead of --dataset_name; to use a copy already in "
            "the datasets cache, set HF_HUB_OFFLINE=1."
        )
    try:
        return datasets.load_dataset(dataset_name, dataset_config_name)
    except ConnectionError as error:
        reason = "offline mode is on (HF_HUB_OFFLINE=1) and it is not in the datasets cache" if offline else error
        raise ConnectionError(
            f"Cannot load the dataset {dataset_name!r}: {reason}. For a local folder pass --data_dir instead of "
            "--dataset_name."
        ) from error


def standardize_splits(
    splits: datasets.DatasetDict, image_column: str, label_column: str, source: str
) -> datasets.DatasetDict:
    """Canonical split names, and only the photo and label columns, renamed "image" and "label", as image files."""
    standardized = {}
    for split_name, split in splits.items():
        name = SPLIT_ALIASES.get(split_name, split_name)
        if name in standardized:
            raise ValueError(f"{source} has both a {name!r} split and a split named {split_name!r} meaning the same.")
        standardized[name] = standardize_columns(split, image_column, label_column, f"{source} (split {split_name!r})")
    return datasets.DatasetDict(standardized)


def standardize_columns(
    split: datasets.Dataset, image_column: str, label_column: str, source: str
) -> datasets.Dataset:
    """The photo and label columns only, named "image" and "label", as undecoded `datasets.Image` values."""
    if image_column == label_column:
        raise ValueError(f"--image_column and --label_column are both {image_column!r}.")
    for flag, column in (("--image_column", image_column), ("--label_column", label_column)):
        if column not in split.column_names:
            raise ValueError(
                f"{source} has no column {column!r} (given by {flag}); its columns are {split.column_names}."
            )
        feature = split.features[column]
        if not (isinstance(feature, datasets.Image) or feature == datasets.Value("string")):
            raise ValueError(
                f"The column {column!r} of {source} holds {feature}, not images or image file paths: "
                f"name the right one with {flag}."
            )
    split = split.select_columns([image_column, label_column])
    split = split.rename_columns({image_column: "image", label_column: "label"})
    return split.cast_column("image", IMAGE_FILE).cast_column("label", IMAGE_FILE)


def load_image_folder_splits(root: Path) -> datasets.DatasetDict:
    """Photos and label maps from a CamVid or ADE20K style folder, as file paths (nothing is decoded here)."""
    splits = {}
    if (root / "images").is_dir() and (root / "annotations").is_dir():
        for image_dir in sorted(path for path in (root / "images").iterdir() if path.is_dir()):
            label_dir = root / "annotations" / image_dir.name
            if label_dir.is_dir():
                splits[SPLIT_ALIASES.get(image_dir.name, image_dir.name)] = split_from_folders(
                    image_dir, label_dir, label_name=lambda image: image.stem + ".png"
                )
    else:
        for split_name in CAMVID_SPLITS:
            image_dir, label_dir = root / split_name, root / f"{split_name}annot"
            if image_dir.is_dir() and label_dir.is_dir():
                splits[SPLIT_ALIASES.get(split_name, split_name)] = split_from_folders(
                    image_dir, label_dir, label_name=lambda image: image.name
                )
    if not splits:
        raise ValueError(f"{root} is in no layout this script reads. Accepted layouts: {ACCEPTED_LAYOUTS}.")
    return datasets.DatasetDict(splits)


def split_from_folders(image_dir: Path, label_dir: Path, label_name: Callable[[Path], str]) -> datasets.Dataset:
    """One split: each photo of `image_dir` (sorted by name) with the label map `label_dir / label_name(photo)`;
    a photo without its label map, or a label map without its photo, is an error naming that file."""
    images = image_files(image_dir)
    if not images:
        raise ValueError(f"{image_dir} holds no photos (files ending in {', '.join(IMAGE_EXTENSIONS)}).")
    label_names = {path.name for path in image_files(label_dir)}
    labels = [label_dir / label_name(image) for image in images]
    for image, label in zip(images, labels):
        if label.name not in label_names:
            raise FileNotFoundError(f"The photo {image} has no label map: {label} does not exist.")
    orphans = sorted(label_names - {label.name for label in labels})
    if orphans:
        raise FileNotFoundError(f"The label map {label_dir / orphans[0]} has no photo in {image_dir}.")
    return datasets.Dataset.from_dict(
        {"image": [str(path) for path in images], "label": [str(path) for path in labels]},
        features=datasets.Features({"image": IMAGE_FILE, "label": IMAGE_FILE}),
    )


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name so that the order is the same on every machine."""
    return sorted(
        path.resolve()
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS
    )


# ----------------------------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------------------------
class SegmentationAugmentation:
    """The paper's training augmentation (mmseg's pipeline), on NumPy arrays with PIL resizing: random resize, pad,
    random crop with the `cat_max_ratio` rule, horizontal flip, photometric distortion. Every random number comes
    from the generator passed in, so a sample depends on nothing but that generator's seed."""

    def __init__(
        self,
        crop_size: tuple[int, int],
        scale_range: tuple[float, float] = (0.5, 2.0),
        cat_max_ratio: float = 0.75,
        flip_probability: float = 0.5,
        photometric: bool = True,
        ignore_index: int = IGNORE_INDEX,
    ):
        if len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(f"crop_size must be two positive ints (height, width), got {crop_size}.")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be (low, high) with 0 < low <= high, got {scale_range}.")
        if not 0 < cat_max_ratio <= 1:
            raise ValueError(f"cat_max_ratio must be in (0, 1], got {cat_max_ratio}.")
        if not 0 <= flip_probability <= 1:
            raise ValueError(f"flip_probability must be in [0, 1], got {flip_probability}.")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.cat_max_ratio = cat_max_ratio
        self.flip_probability = flip_probability
        self.photometric = photometric
        self.ignore_index = ignore_index

    def __call__(
        self, image: np.ndarray | None, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """image (height, width, 3) uint8, or None to train on label maps alone (then nothing photometric is drawn),
        and label (height, width) int64 -> both of exactly `crop_size`. The photometric draws come last, so a label
        map gets the same crop with or without its photo."""
        self.check_inputs(image, label)
        image, label = self.random_resize(image, label, rng)
        image, label = self.pad(image, label)
        image, label = self.random_crop(image, label, rng)
        if rng.random() < self.flip_probability:
            label = label[:, ::-1]
            image = None if image is None else image[:, ::-1]
        if image is not None and self.photometric:
            image = photometric_distortion(image, rng)
        return (None if image is None else np.ascontiguousarray(image)), np.ascontiguousarray(label)

    @staticmethod
    def check_inputs(image: np.ndarray | None, label: np.ndarray) -> None:
        """Arrays of the documented shapes and types; labels non-negative (the crop rule counts them by value)."""
        if label.ndim != 2 or not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"label must be a (height, width) integer array, got {label.dtype} {label.shape}.")
        if label.size and label.min() < 0:
            raise ValueError(f"label holds negative values ({label.min()}); class ids and the ignore index are >= 0.")
        if image is not None and (image.dtype != np.uint8 or image.shape != (*label.shape, 3)):
            raise ValueError(
                f"image must be (height, width, 3) uint8 of the label's size {label.shape}, got "
                f"{image.dtype} {image.shape}."
            )

    def random_resize(
        self, image: np.ndarray | None, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """One factor from `scale_range` relative to the input's own size, aspect kept. Labels use nearest
        neighbour in 32-bit mode "I", so they are never interpolated and ids above 255 survive."""
        scale = rng.uniform(*self.scale_range)
        height, width = label.shape
        size = (max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5)))  # PIL's (width, height)
        label_image = PIL.Image.fromarray(label.astype(np.int32))  # mode "I"
        label = np.asarray(label_image.resize(size, PIL.Image.Resampling.NEAREST), dtype=np.int64)
        if image is not None:
            image = np.asarray(PIL.Image.fromarray(image).resize(size, PIL.Image.Resampling.BILINEAR))
        return image, label

    def pad(self, image: np.ndarray | None, label: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Bottom and right padding up to the crop size: photo with 0, label with the ignore index."""
        pad_height = max(self.crop_size[0] - label.shape[0], 0)
        pad_width = max(self.crop_size[1] - label.shape[1], 0)
        if pad_height == 0 and pad_width == 0:
            return image, label
        label = np.pad(label, ((0, pad_height), (0, pad_width)), constant_values=self.ignore_index)
        if image is not None:
            image = np.pad(image, ((0, pad_height), (0, pad_width), (0, 0)))
        return image, label

    def random_crop(
        self, image: np.ndarray | None, label: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray | None, np.ndarray]:
        """mmseg's RandomCrop: up to CROP_TRIES crops, keeping the first in which the most frequent class covers less
        than `cat_max_ratio` of the labelled pixels and more than one class appears, else the last one tried."""
        crop_height, crop_width = self.crop_size
        tries = CROP_TRIES if self.cat_max_ratio < 1 else 1
        for _ in range(tries):
            top = int(rng.integers(0, label.shape[0] - crop_height + 1))
            left = int(rng.integers(0, label.shape[1] - crop_width + 1))
            cropped_label = label[top : top + crop_height, left : left + crop_width]
            if tries == 1 or self.is_balanced(cropped_label):
                break
        if image is not None:
            image = image[top : top + crop_height, left : left + crop_width]
        return image, cropped_label

    def is_balanced(self, label: np.ndarray) -> bool:
        """mmseg's test: more than one class, and none above `cat_max_ratio` of the labelled pixels."""
        counts = np.bincount(label[label != self.ignore_index])
        counts = counts[counts > 0]
        return len(counts) > 1 and counts.max() < self.cat_max_ratio * counts.sum()


def photometric_distortion(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mmseg's PhotoMetricDistortion on (height, width, 3) uint8 RGB: brightness +-32, contrast x0.5-1.5 (before or
    after the HSV part), saturation x0.5-1.5, hue +-18 OpenCV units (2 degrees each), each with probability 0.5.
    Like mmseg, every step clips back to uint8."""
    if rng.integers(2):
        image = scale_and_shift(image, 1.0, rng.uniform(-32, 32))
    contrast_first = rng.integers(2)
    if contrast_first and rng.integers(2):
        image = scale_and_shift(image, rng.uniform(0.5, 1.5), 0.0)
    saturation = rng.uniform(0.5, 1.5) if rng.integers(2) else None
    hue_shift_degrees = 2 * int(rng.integers(-18, 18)) if rng.integers(2) else None
    if saturation is not None or hue_shift_degrees is not None:
        hue, chroma_ratio, value = rgb_to_hsv(image)
        if saturation is not None:
            chroma_ratio = np.clip(chroma_ratio * saturation, 0.0, 1.0)
        if hue_shift_degrees is not None:
            hue = (hue + hue_shift_degrees) % 360.0
        image = hsv_to_rgb(hue, chroma_ratio, value)
    if not contrast_first and rng.integers(2):
        image = scale_and_shift(image, rng.uniform(0.5, 1.5), 0.0)
    return image


def scale_and_shift(image: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """image * alpha + beta, clipped and truncated to uint8 as mmseg's `convert`."""
    return np.clip(image.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def rgb_to_hsv(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 RGB (height, width, 3) -> hue in degrees [0, 360), saturation, value in [0, 1], each (height, width)."""
    rgb = image.astype(np.float64) / 255.0
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    value = rgb.max(axis=-1)
    chroma = value - rgb.min(axis=-1)
    safe_chroma = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(
        value == red,
        ((green - blue) / safe_chroma) % 6.0,
        np.where(value == green, (blue - red) / safe_chroma + 2.0, (red - green) / safe_chroma + 4.0),
    )
    hue = np.where(chroma > 0, hue * 60.0, 0.0)
    saturation = np.where(value > 0, chroma / np.where(value > 0, value, 1.0), 0.0)
    return hue, saturation, value


def hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """The inverse of `rgb_to_hsv`, rounded to uint8 RGB (height, width, 3)."""
    channels = []
    for offset in (5.0, 3.0, 1.0):  # red, green, blue
        k = (offset + hue / 60.0) % 6.0
        channels.append(value - value * saturation * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return np.clip(np.rint(np.stack(channels, axis=-1) * 255.0), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# Sampling and datasets
# ----------------------------------------------------------------------------------------------------------------
class EpochSampler(torch.utils.data.Sampler):
    """Yields (epoch, index) keys in the permutation `np.random.default_rng((seed, epoch)).permutation(num_samples)`.
    Order and augmentation are functions of the key alone, so a resumed run replays exactly what it skipped."""

    def __init__(self, num_samples: int, seed: int):
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}.")
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = np.random.default_rng((self.seed, self.epoch)).permutation(self.num_samples)
        return ((self.epoch, int(index)) for index in order)

    def __len__(self) -> int:
        return self.num_samples


class NormalizedSplit(torch.utils.data.Dataset):
    """What the train and eval datasets share: the split, the label remapping and the photo normalisation."""

    def __init__(
        self,
        split: datasets.Dataset,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        void_value: int | None,
        reduce_labels: bool,
        num_labels: int | None,
    ):
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError(f"image_mean and image_std need 3 values (RGB), got {image_mean} and {image_std}.")
        self.split = split
        self.image_mean = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1)
        self.image_std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)
        self.void_value = void_value
        self.reduce_labels = reduce_labels
        self.num_labels = num_labels

    def __len__(self) -> int:
        return len(self.split)

    def read(self, index: int, with_image: bool) -> tuple[np.ndarray | None, np.ndarray]:
        return read_example(self.split, index, self.void_value, self.reduce_labels, self.num_labels, with_image)

    def to_tensors(self, image: np.ndarray | None, labels: np.ndarray) -> dict[str, torch.Tensor]:
        """{"pixel_values": (3, height, width) float32 = (image / 255 - mean) / std, "labels": (height, width)}."""
        item = {"labels": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))}
        if image is not None:
            pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
            item["pixel_values"] = ((pixels - self.image_mean) / self.image_std).contiguous()
        return item


class SegmentationTrainDataset(NormalizedSplit):
    """Augmented training samples keyed by (epoch, index) from `EpochSampler`; the augmentation's generator is
    `np.random.default_rng((seed, epoch, index))`, so a sample is the same whichever worker or process makes it."""

    def __init__(
        self,
        split: datasets.Dataset,
        augmentation: SegmentationAugmentation,
        seed: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        void_value: int | None = None,
        reduce_labels: bool = False,
        with_images: bool = True,
        num_labels: int | None = None,
    ):
        super().__init__(split, image_mean, image_std, void_value, reduce_labels, num_labels)
        self.augmentation = augmentation
        self.seed = seed
        self.with_images = with_images

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        """{"pixel_values": (3, H, W) float32, "labels": (H, W) int64} at the crop size; no "pixel_values" when
        `with_images` is False (tokenizer training reads no photos)."""
        epoch, index = key
        image, labels = self.read(index, self.with_images)
        image, labels = self.augmentation(image, labels, np.random.default_rng((self.seed, epoch, index)))
        return self.to_tensors(image, labels)


class SegmentationEvalDataset(NormalizedSplit):
    """Evaluation samples at full size, without augmentation."""

    def __init__(
        self,
        split: datasets.Dataset,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        void_value: int | None = None,
        reduce_labels: bool = False,
        num_labels: int | None = None,
    ):
        super().__init__(split, image_mean, image_std, void_value, reduce_labels, num_labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """{"pixel_values": (3, height, width) float32, "labels": (height, width) int64}."""
        return self.to_tensors(*self.read(index, with_image=True))


def collate_segmentation(batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stacks each key of the samples into a batch; samples of different sizes cannot share one."""
    if not batch:
        raise ValueError("Cannot collate an empty batch.")
    keys = set(batch[0])
    if any(set(item) != keys for item in batch):
        raise ValueError(f"The samples of a batch have different keys: {[sorted(item) for item in batch]}.")
    collated = {}
    for key in batch[0]:
        shapes = sorted({tuple(item[key].shape) for item in batch})
        if len(shapes) > 1:
            raise ValueError(
                f"Cannot stack {key!r} of different sizes {shapes} into one batch: the photos differ in size. "
                "Evaluate with a batch size of 1 (--per_device_eval_batch_size 1), or train on crops of one "
                "--crop_size."
            )
        collated[key] = torch.stack([item[key] for item in batch])
    return collated


# ----------------------------------------------------------------------------------------------------------------
# Synthetic label maps (tokenizer training on any number of classes)
# ----------------------------------------------------------------------------------------------------------------
def synthetic_label_map(
    rng: np.random.Generator, height: int, width: int, num_labels: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """A (height, width) int64 map of random shapes in random classes: a background class, filled ellipses,
    rectangles and polygons, thin lines and poles, and a few unlabelled blobs. Scenes of any dataset are made of
    such regions, so one tokenizer trained on these can learn the maskiges of any set of classes. Deterministic
    given `rng`."""
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1, got {num_labels}.")
    if 0 <= ignore_index < num_labels:
        raise ValueError(f"ignore_index {ignore_index} is a class id (num_labels is {num_labels}).")
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height}x{width}.")
    canvas = PIL.Image.new("I", (width, height), int(rng.integers(num_labels)))
    draw = PIL.ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(3, 16))):
        draw_random_shape(draw, rng, height, width, int(rng.integers(num_labels)))
    for _ in range(int(rng.integers(0, 3))):
        draw_ellipse(draw, rng, height, width, ignore_index, max_radius_fraction=0.1)
    return np.array(canvas, dtype=np.int64)


def draw_random_shape(
    draw: PIL.ImageDraw.ImageDraw, rng: np.random.Generator, height: int, width: int, fill: int
) -> None:
    """One ellipse, rectangle, polygon or line (often an upright pole), filled with `fill`."""
    shape = int(rng.integers(4))
    if shape == 0:
        draw_ellipse(draw, rng, height, width, fill, max_radius_fraction=0.35)
    elif shape == 1:
        top, bottom = sorted(int(value) for value in rng.integers(0, height, size=2))
        left, right = sorted(int(value) for value in rng.integers(0, width, size=2))
        draw.rectangle((left, top, right, bottom), fill=fill)
    elif shape == 2:
        center_x, center_y = rng.uniform(0, width), rng.uniform(0, height)
        num_vertices = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=num_vertices))
        radii = rng.uniform(0.05, 0.4, size=num_vertices) * max(height, width)
        vertices = [
            (float(center_x + radius * np.cos(angle)), float(center_y + radius * np.sin(angle)))
            for angle, radius in zip(angles, radii)
        ]
        draw.polygon(vertices, fill=fill)
    else:
        line_width = int(rng.integers(1, max(2, min(height, width) // 30) + 1))
        x0, y0 = float(rng.uniform(0, width)), float(rng.uniform(0, height))
        if rng.random() < 0.5:  # an upright pole
            end = (x0, float(rng.uniform(0, height)))
        else:
            end = (float(rng.uniform(0, width)), float(rng.uniform(0, height)))
        draw.line((x0, y0, *end), fill=fill, width=line_width)


def draw_ellipse(
    draw: PIL.ImageDraw.ImageDraw,
    rng: np.random.Generator,
    height: int,
    width: int,
    fill: int,
    max_radius_fraction: float,
) -> None:
    """A filled ellipse with radii up to `max_radius_fraction` of the longer side."""
    center_x, center_y = rng.uniform(0, width), rng.uniform(0, height)
    size = max(height, width)
    radius_x, radius_y = rng.uniform(0.02 * size, max_radius_fraction * size, size=2)
    box = (center_x - radius_x, center_y - radius_y, center_x + radius_x, center_y + radius_y)
    draw.ellipse(tuple(float(value) for value in box), fill=fill)


class SyntheticLabelDataset(torch.utils.data.Dataset):
    """`num_samples` synthetic label maps per epoch, keyed by (epoch, index) like `SegmentationTrainDataset`."""

    def __init__(self, num_samples: int, crop_size: tuple[int, int], num_labels: int, seed: int):
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}.")
        self.num_samples = num_samples
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.num_labels = num_labels
        self.seed = seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        """{"labels": (height, width) int64} of `crop_size`, from the generator (seed, epoch, index)."""
        epoch, index = key
        if not 0 <= index < self.num_samples:
            raise IndexError(f"Index {index} is out of range for {self.num_samples} synthetic samples.")
        rng = np.random.default_rng((self.seed, epoch, index))
        return {"labels": torch.from_numpy(synthetic_label_map(rng, *self.crop_size, self.num_labels))}
