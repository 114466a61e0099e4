"""Where the splits come from: the data arguments every script shares, and the splits of a Hub dataset, a local
folder in a SegNet/CamVid or ADE20K layout, or a `datasets` save_to_disk folder, with canonical split names."""

import argparse
from collections.abc import Callable
from pathlib import Path

import datasets
import huggingface_hub

from gss_hf.hub_utils import hub_is_reachable


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
# The label value CamVid (the SegNet version) uses for unlabelled pixels; pass it as --void_value.
CAMVID_VOID_VALUE = 11


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
    group.add_argument(
        "--shortest_edge", type=int, help="Evaluate photos resized to this short side, as the processor saved with "
        "the model will resize them (default: at their own size; stage III and evaluation keep the model's setting)."
    )


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
