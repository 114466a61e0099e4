"""Tests for training/data/: split loading for every layout, file errors that name the file, the
augmentation's rules and determinism, the sampler, the datasets, collation and synthetic label maps."""

import argparse
import io
import time
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import pytest
import torch
from PIL import Image

from training.data import (
    IGNORE_INDEX,
    EpochSampler,
    SegmentationAugmentation,
    SegmentationEvalDataset,
    SegmentationTrainDataset,
    SyntheticLabelDataset,
    add_data_arguments,
    collate_segmentation,
    load_segmentation_splits,
    load_splits_from_args,
    read_image,
    read_label_map,
    synthetic_label_map,
)
from gss_hf import GSSImageProcessor
from gss_hf.label_spec import LabelSpec
from training.data import layouts


HEIGHT, WIDTH = 24, 32
NUM_LABELS = 11
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def random_photo(rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def random_labels(rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH, high: int = 12) -> np.ndarray:
    """Blocks of 4x4 pixels in classes 0..high-1, so that crops and resizes keep several classes."""
    blocks = rng.integers(0, high, size=(height // 4 + 1, width // 4 + 1))
    return np.kron(blocks, np.ones((4, 4), dtype=np.int64))[:height, :width].astype(np.uint8)


def write_pair(image_path: Path, label_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    label_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_photo(rng)).save(image_path)
    Image.fromarray(random_labels(rng)).save(label_path)


def make_camvid(root: Path, sizes: dict[str, int] | None = None) -> Path:
    for split, size in (sizes or {"train": 3, "val": 2}).items():
        for index in range(size):
            name = f"frame_{index:03d}.png"
            write_pair(root / split / name, root / f"{split}annot" / name, seed=index)
    return root


def make_ade(root: Path) -> Path:
    for split, size in (("training", 3), ("validation", 2)):
        for index in range(size):
            image_path = root / "images" / split / f"ADE_{index}.jpg"
            write_pair(image_path, root / "annotations" / split / f"ADE_{index}.png", seed=index)
    return root


def encoded_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def saved_dataset(num_rows: int) -> datasets.Dataset:
    """Photos and label maps as a Hub dataset stores them (encoded bytes), with other names and an extra column."""
    rng = np.random.default_rng(0)
    return datasets.Dataset.from_dict(
        {
            "pixel_values": [{"bytes": encoded_png(random_photo(rng)), "path": None} for _ in range(num_rows)],
            "annotation": [{"bytes": encoded_png(random_labels(rng)), "path": None} for _ in range(num_rows)],
            "scene": ["street"] * num_rows,
        },
        features=datasets.Features(
            {"pixel_values": datasets.Image(), "annotation": datasets.Image(), "scene": datasets.Value("string")}
        ),
    )


def parse_data_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    return parser.parse_args(argv)


def processor(**label_settings) -> GSSImageProcessor:
    """What the scripts evaluate with: photos at their own size, the given label conventions."""
    return GSSImageProcessor(do_resize=False, **label_settings)


def eval_dataset(split: datasets.Dataset, num_labels: int | None = None, **label_settings) -> SegmentationEvalDataset:
    return SegmentationEvalDataset(split, processor(**label_settings), num_labels)


# ----------------------------------------------------------------------------------------------------------------
# Split loading
# ----------------------------------------------------------------------------------------------------------------
def test_camvid_layout_pairs_photos_with_same_name_labels(tmp_path):
    root = make_camvid(tmp_path / "camvid", {"train": 3, "val": 2, "test": 1})
    splits = load_segmentation_splits(data_dir=str(root))
    assert sorted(splits) == ["test", "train", "validation"]
    assert {name: len(split) for name, split in splits.items()} == {"train": 3, "validation": 2, "test": 1}
    for split_name, split in splits.items():
        assert split.column_names == ["image", "label"]
        assert split.features["image"] == datasets.Image(decode=False) == split.features["label"]
    train = splits["train"]
    image_paths = [Path(entry["path"]) for entry in train["image"]]
    label_paths = [Path(entry["path"]) for entry in train["label"]]
    assert image_paths == sorted(image_paths)
    assert [path.name for path in image_paths] == [path.name for path in label_paths]
    assert {path.parent.name for path in label_paths} == {"trainannot"}
    np.testing.assert_array_equal(
        read_label_map(train[1]["label"], LabelSpec()),
        np.array(Image.open(root / "trainannot" / "frame_001.png")),
    )


def test_ade_layout_pairs_jpg_photos_with_png_labels_and_renames_training(tmp_path):
    root = make_ade(tmp_path / "ade")
    splits = load_segmentation_splits(data_dir=str(root))
    assert sorted(splits) == ["train", "validation"]
    assert (len(splits["train"]), len(splits["validation"])) == (3, 2)
    example = splits["validation"][1]
    assert Path(example["image"]["path"]).name == "ADE_1.jpg"
    assert Path(example["label"]["path"]) == (root / "annotations" / "validation" / "ADE_1.png").resolve()
    assert read_image(example["image"], "photo").shape == (HEIGHT, WIDTH, 3)


def test_save_to_disk_dataset_dict_is_renamed_to_image_and_label(tmp_path):
    original = saved_dataset(3)
    datasets.DatasetDict({"train": original, "val": original.select([0])}).save_to_disk(tmp_path / "saved")
    splits = load_segmentation_splits(
        data_dir=str(tmp_path / "saved"), image_column="pixel_values", label_column="annotation"
    )
    assert sorted(splits) == ["train", "validation"]
    assert splits["train"].column_names == ["image", "label"]
    assert splits["train"].features["label"] == datasets.Image(decode=False)
    example = splits["train"][2]
    np.testing.assert_array_equal(read_image(example["image"], "photo"), np.array(original[2]["pixel_values"]))
    np.testing.assert_array_equal(
        read_label_map(example["label"], LabelSpec()), np.array(original[2]["annotation"])
    )


def test_save_to_disk_single_dataset_is_the_train_split(tmp_path):
    saved_dataset(2).rename_columns({"pixel_values": "image", "annotation": "label"}).save_to_disk(tmp_path / "saved")
    splits = load_segmentation_splits(data_dir=str(tmp_path / "saved"))
    assert list(splits) == ["train"]
    assert len(splits["train"]) == 2
    assert splits["train"].column_names == ["image", "label"]


def test_missing_column_is_named_with_the_available_ones(tmp_path):
    saved_dataset(1).save_to_disk(tmp_path / "saved")
    with pytest.raises(ValueError, match=r"no column 'label'.*'pixel_values', 'annotation', 'scene'"):
        load_segmentation_splits(data_dir=str(tmp_path / "saved"), image_column="pixel_values")


def test_unknown_layout_lists_the_accepted_ones(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(ValueError, match="Accepted layouts") as error:
        load_segmentation_splits(data_dir=str(tmp_path))
    for layout in ("CamVid", "ADE20K", "save_to_disk"):
        assert layout in str(error.value)


def test_exactly_one_of_dataset_name_and_data_dir(tmp_path):
    with pytest.raises(ValueError, match="exactly one of --dataset_name"):
        load_splits_from_args(parse_data_args([]))
    with pytest.raises(ValueError, match="exactly one of --dataset_name"):
        load_splits_from_args(parse_data_args(["--dataset_name", "someone/data", "--data_dir", str(tmp_path)]))


def test_hub_id_offline_fails_fast_naming_the_id():
    assert datasets.config.HF_HUB_OFFLINE  # conftest sets HF_HUB_OFFLINE=1
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"'someone/street-scenes'.*--data_dir"):
        load_segmentation_splits(dataset_name="someone/street-scenes")
    assert time.perf_counter() - start < 5


def test_unreachable_hub_fails_fast_without_load_dataset_retries(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(layouts, "hub_is_reachable", lambda: False)

    def load_dataset_must_not_run(*args, **kwargs):
        raise AssertionError("load_dataset would retry an unreachable Hub for ~20 s")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset_must_not_run)
    with pytest.raises(ConnectionError, match=r"'someone/street-scenes'.*unreachable.*--data_dir"):
        load_segmentation_splits(dataset_name="someone/street-scenes")


def test_photo_without_label_file_is_named(tmp_path):
    root = make_camvid(tmp_path / "camvid")
    (root / "trainannot" / "frame_001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"train/frame_001\.png has no label map.*trainannot/frame_001\.png"):
        load_segmentation_splits(data_dir=str(root))


def test_label_file_without_photo_is_named(tmp_path):
    root = make_ade(tmp_path / "ade")
    (root / "images" / "training" / "ADE_2.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"annotations/training/ADE_2\.png has no photo"):
        load_segmentation_splits(data_dir=str(root))


def test_load_splits_from_args_serves_requested_splits_and_truncates(tmp_path):
    root = make_camvid(tmp_path / "camvid", {"train": 3, "val": 3, "test": 2})
    args = parse_data_args(["--data_dir", str(root), "--validation_split", "test", "--max_eval_samples", "1"])
    splits = load_splits_from_args(args)
    assert len(splits["train"]) == 3
    assert len(splits["validation"]) == len(splits["test"]) == 1
    assert splits["validation"][0]["image"]["path"].endswith("test/frame_000.png")

    args = parse_data_args(["--data_dir", str(root), "--validation_split", "val", "--max_train_samples", "2"])
    splits = load_splits_from_args(args)
    assert (len(splits["train"]), len(splits["validation"])) == (2, 3)
    assert splits["validation"][0]["image"]["path"].endswith("val/frame_000.png")

    with pytest.raises(ValueError, match=r"--train_split 'trainval'.*\['test', 'train', 'validation'\]"):
        load_splits_from_args(parse_data_args(["--data_dir", str(root), "--train_split", "trainval"]))


def test_data_argument_defaults_and_crop_size():
    args = parse_data_args(["--data_dir", "somewhere"])
    assert (args.image_column, args.label_column, args.train_split, args.validation_split) == (
        "image", "label", "train", "validation",
    )  # fmt: skip
    assert tuple(args.crop_size) == (360, 480)
    assert (args.void_value, args.reduce_labels, args.max_train_samples, args.max_eval_samples) == (
        None, False, None, None,
    )  # fmt: skip
    args = parse_data_args(["--data_dir", "x", "--crop_size", "64", "96", "--void_value", "11", "--reduce_labels"])
    assert (tuple(args.crop_size), args.void_value, args.reduce_labels) == ((64, 96), 11, True)


# ----------------------------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------------------------
def test_read_image_converts_grey_palette_rgba_and_16_bit(tmp_path):
    grey = np.arange(HEIGHT * WIDTH, dtype=np.uint8).reshape(HEIGHT, WIDTH)
    rgba = np.dstack([random_photo(np.random.default_rng(1)), np.full((HEIGHT, WIDTH), 7, np.uint8)])
    sixteen_bit = (grey.astype(np.uint16) * 257 + 100).astype(np.uint16)
    palette = Image.fromarray(grey).convert("P")
    for array_or_image, expected in (
        (grey, np.repeat(grey[:, :, None], 3, axis=2)),
        (rgba, rgba[:, :, :3]),
        (sixteen_bit, np.repeat(np.rint(sixteen_bit / 257).astype(np.uint8)[:, :, None], 3, axis=2)),
        (palette, np.array(palette.convert("RGB"))),
    ):
        image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        result = read_image({"bytes": buffer.getvalue(), "path": None}, "photo")
        assert result.dtype == np.uint8 and result.shape == (HEIGHT, WIDTH, 3)
        np.testing.assert_array_equal(result, expected)


def test_read_label_map_void_and_reduce_labels():
    raw = np.array([[0, 1, 2], [11, 255, 5]], dtype=np.uint8)
    entry = {"bytes": encoded_png(raw), "path": None}
    np.testing.assert_array_equal(read_label_map(entry, LabelSpec()), raw)
    np.testing.assert_array_equal(
        read_label_map(entry, LabelSpec(void_value=11)), [[0, 1, 2], [255, 255, 5]]
    )
    np.testing.assert_array_equal(
        read_label_map(entry, LabelSpec(reduce_labels=True)), [[255, 0, 1], [10, 255, 4]]
    )
    assert read_label_map(entry, LabelSpec(void_value=11, reduce_labels=True)).dtype == np.int64


def test_entry_without_bytes_or_path_is_refused():
    with pytest.raises(ValueError, match="neither bytes nor a file path"):
        read_image({"bytes": None, "path": None}, "validation example 4")


def test_corrupt_photo_is_named_when_read(tmp_path):
    root = make_camvid(tmp_path / "camvid")
    (root / "val" / "frame_001.png").write_bytes(b"this is not a png at all")
    splits = load_segmentation_splits(data_dir=str(root))  # nothing is decoded at load time
    dataset = eval_dataset(splits["validation"])
    assert dataset[0]["pixel_values"].shape == (3, HEIGHT, WIDTH)
    with pytest.raises(ValueError, match=r"Cannot read the photo .*val/frame_001\.png"):
        dataset[1]


def test_corrupt_label_map_is_named_when_read(tmp_path):
    root = make_camvid(tmp_path / "camvid")
    (root / "valannot" / "frame_000.png").write_bytes(encoded_png(random_labels(np.random.default_rng(0)))[:60])
    dataset = eval_dataset(load_segmentation_splits(data_dir=str(root))["validation"])
    with pytest.raises(ValueError, match=r"Cannot read the label map .*valannot/frame_000\.png"):
        dataset[0]


def test_missing_photo_file_is_named_when_read(tmp_path):
    root = make_camvid(tmp_path / "camvid")
    splits = load_segmentation_splits(data_dir=str(root))
    (root / "train" / "frame_002.png").unlink()
    dataset = SegmentationTrainDataset(splits["train"], SegmentationAugmentation((16, 16)), 0, processor())
    with pytest.raises(ValueError, match=r"Cannot read the photo .*train/frame_002\.png"):
        dataset[(0, 2)]


def test_colour_label_image_is_refused(tmp_path):
    root = make_camvid(tmp_path / "camvid")
    Image.fromarray(random_photo(np.random.default_rng(3))).save(root / "valannot" / "frame_000.png")
    dataset = eval_dataset(load_segmentation_splits(data_dir=str(root))["validation"])
    with pytest.raises(ValueError, match=r"valannot/frame_000\.png is a colour image.*Convert its colours to class"):
        dataset[0]


def test_label_value_out_of_range_is_named_with_the_remedies(tmp_path):
    root = make_camvid(tmp_path / "camvid")
    validation = load_segmentation_splits(data_dir=str(root))["validation"]
    # random_labels uses 0..11: 11 is neither a class (0..10) nor 255 until --void_value 11 says what it is.
    with pytest.raises(ValueError, match=r"valannot/frame_000\.png holds \[11\].*--void_value 11.*--reduce_labels"):
        eval_dataset(validation, num_labels=NUM_LABELS)[0]
    labels = eval_dataset(validation, num_labels=NUM_LABELS, void_value=11)[0]["labels"]
    assert set(labels.unique().tolist()) <= set(range(NUM_LABELS)) | {IGNORE_INDEX}
    assert IGNORE_INDEX in labels


def test_photo_and_label_of_different_sizes_are_both_named(tmp_path):
    root = make_camvid(tmp_path / "camvid")
    narrower_labels = random_labels(np.random.default_rng(0), HEIGHT, WIDTH - 4)
    Image.fromarray(narrower_labels).save(root / "valannot" / "frame_001.png")
    dataset = eval_dataset(load_segmentation_splits(data_dir=str(root))["validation"])
    with pytest.raises(ValueError, match=r"photo .*val/frame_001\.png is 32x24 .*valannot/frame_001\.png is 28x24"):
        dataset[1]


# ----------------------------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------------------------
def sample_pair(seed: int = 0, height: int = 60, width: int = 80) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = random_labels(rng, height, width, high=5).astype(np.int64) * 100  # values 0..400: above 255 too
    return random_photo(rng, height, width), labels


@pytest.mark.parametrize("crop_size", [(32, 48), (100, 120)])
def test_augmentation_output_shapes_and_labels_never_interpolated(crop_size):
    image, labels = sample_pair()
    augmentation = SegmentationAugmentation(crop_size)
    for seed in range(8):
        out_image, out_labels = augmentation(image, labels, np.random.default_rng(seed))
        assert out_image.shape == (*crop_size, 3) and out_image.dtype == np.uint8
        assert out_labels.shape == crop_size and out_labels.dtype == np.int64
        assert set(np.unique(out_labels)) <= set(np.unique(labels)) | {IGNORE_INDEX}
    # A crop larger than the resized input is padded with the ignore index; one inside it never is.
    for crop_size, padded in (((100, 120), True), ((32, 48), False)):
        unscaled = SegmentationAugmentation(crop_size, scale_range=(1, 1))
        assert (IGNORE_INDEX in unscaled(image, labels, np.random.default_rng(0))[1]) == padded


def test_augmentation_depends_only_on_the_generator():
    image, labels = sample_pair()
    augmentation = SegmentationAugmentation((40, 56))
    np.random.seed(1)
    first = augmentation(image, labels, np.random.default_rng(123))
    np.random.seed(2)
    torch.manual_seed(2)
    second = augmentation(image, labels, np.random.default_rng(123))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    others = [augmentation(image, labels, np.random.default_rng(seed)) for seed in range(5)]
    assert any(not np.array_equal(first[0], other[0]) for other in others)
    assert any(not np.array_equal(first[1], other[1]) for other in others)


def test_cat_max_ratio_rejects_crops_dominated_by_one_class():
    """Class 0 everywhere except a 30x30 corner of class 1: few 40x40 crops are balanced, and the rule finds them."""
    labels = np.zeros((100, 100), dtype=np.int64)
    labels[70:, 70:] = 1

    def balanced_fraction(cat_max_ratio: float) -> float:
        augmentation = SegmentationAugmentation(
            (40, 40), scale_range=(1, 1), cat_max_ratio=cat_max_ratio, flip_probability=0, photometric=False
        )
        crops = [augmentation(None, labels, np.random.default_rng(seed))[1] for seed in range(300)]
        return np.mean([0 < (crop == 1).mean() and (crop == 0).mean() < 0.75 for crop in crops])

    without_rule, with_rule = balanced_fraction(1.0), balanced_fraction(0.75)
    assert without_rule < 0.1  # about 4% of crop positions are balanced
    assert with_rule > 0.25  # about 1 - 0.96**10 = 34% with ten tries
    assert with_rule > 3 * without_rule


def test_cat_max_ratio_keeps_the_last_try_when_no_crop_is_balanced():
    labels = np.zeros((50, 50), dtype=np.int64)
    augmentation = SegmentationAugmentation((20, 20), scale_range=(1, 1), flip_probability=0, photometric=False)
    assert np.array_equal(augmentation(None, labels, np.random.default_rng(0))[1], np.zeros((20, 20)))


def test_flip_mirrors_photo_and_labels_together():
    image, labels = sample_pair()
    options = {"crop_size": (40, 56), "photometric": False}
    unflipped = SegmentationAugmentation(flip_probability=0.0, **options)(image, labels, np.random.default_rng(5))
    flipped = SegmentationAugmentation(flip_probability=1.0, **options)(image, labels, np.random.default_rng(5))
    np.testing.assert_array_equal(flipped[0], unflipped[0][:, ::-1])
    np.testing.assert_array_equal(flipped[1], unflipped[1][:, ::-1])
    assert not np.array_equal(flipped[1], unflipped[1])


def test_photometric_distortion_changes_photos_not_labels():
    image, labels = sample_pair()
    changed = 0
    for seed in range(6):
        plain = SegmentationAugmentation((40, 56), photometric=False)(image, labels, np.random.default_rng(seed))
        distorted = SegmentationAugmentation((40, 56))(image, labels, np.random.default_rng(seed))
        np.testing.assert_array_equal(distorted[1], plain[1])
        changed += not np.array_equal(distorted[0], plain[0])
    assert changed >= 3  # each of the four distortions applies with probability 1/2


def test_label_only_mode_gives_the_labels_of_the_photo_mode():
    image, labels = sample_pair()
    augmentation = SegmentationAugmentation((40, 56))
    for seed in range(4):
        no_image, label_only = augmentation(None, labels, np.random.default_rng(seed))
        assert no_image is None
        np.testing.assert_array_equal(label_only, augmentation(image, labels, np.random.default_rng(seed))[1])


def test_augmentation_refuses_mismatched_inputs():
    image, labels = sample_pair()
    augmentation = SegmentationAugmentation((16, 16))
    with pytest.raises(ValueError, match="of the label's size"):
        augmentation(image[:-1], labels, np.random.default_rng(0))
    with pytest.raises(ValueError, match="crop_size"):
        SegmentationAugmentation((0, 16))


# ----------------------------------------------------------------------------------------------------------------
# Sampler, datasets, collation
# ----------------------------------------------------------------------------------------------------------------
def test_epoch_sampler_permutes_per_epoch_deterministically():
    sampler = EpochSampler(50, seed=3)
    assert len(sampler) == 50
    first = list(sampler)
    assert {epoch for epoch, _ in first} == {0}
    assert sorted(index for _, index in first) == list(range(50))
    assert list(EpochSampler(50, seed=3)) == first
    assert list(EpochSampler(50, seed=4)) != first
    sampler.set_epoch(1)
    second = list(sampler)
    assert {epoch for epoch, _ in second} == {1}
    assert [index for _, index in second] != [index for _, index in first]
    assert [index for _, index in second] == np.random.default_rng((3, 1)).permutation(50).tolist()


def test_train_items_depend_only_on_their_key(tmp_path):
    train = load_segmentation_splits(data_dir=str(make_camvid(tmp_path / "camvid")))["train"]
    augmentation = SegmentationAugmentation((16, 20))

    def dataset(**kwargs) -> SegmentationTrainDataset:
        return SegmentationTrainDataset(train, augmentation, seed=7, image_processor=processor(), **kwargs)

    keys = [(0, 0), (0, 1), (0, 2), (1, 0)]
    forward = {key: dataset()[key] for key in keys}
    backward = {key: dataset()[key] for key in reversed(keys)}
    for key in keys:
        assert forward[key]["pixel_values"].shape == (3, 16, 20)
        assert forward[key]["pixel_values"].dtype == torch.float32
        assert forward[key]["labels"].shape == (16, 20) and forward[key]["labels"].dtype == torch.int64
        for name in ("pixel_values", "labels"):
            assert torch.equal(forward[key][name], backward[key][name])
    assert not torch.equal(forward[(0, 0)]["pixel_values"], forward[(1, 0)]["pixel_values"])
    assert not torch.equal(
        forward[(0, 0)]["pixel_values"],
        SegmentationTrainDataset(train, augmentation, 8, processor())[(0, 0)]["pixel_values"],
    )
    labels_only = dataset(with_images=False)[(0, 1)]
    assert list(labels_only) == ["labels"]
    assert torch.equal(labels_only["labels"], forward[(0, 1)]["labels"])


def test_eval_items_are_full_size_and_normalized(tmp_path):
    root = make_camvid(tmp_path / "camvid")
    item = eval_dataset(load_segmentation_splits(data_dir=str(root))["validation"])[1]
    photo = np.array(Image.open(root / "val" / "frame_001.png"), dtype=np.float32)
    expected = (photo / 255 - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    torch.testing.assert_close(item["pixel_values"], torch.from_numpy(expected).permute(2, 0, 1))
    np.testing.assert_array_equal(item["labels"].numpy(), np.array(Image.open(root / "valannot" / "frame_001.png")))


def test_collate_stacks_and_refuses_different_sizes():
    items = [{"pixel_values": torch.rand(3, 4, 5), "labels": torch.zeros(4, 5, dtype=torch.int64)} for _ in range(2)]
    batch = collate_segmentation(items)
    assert batch["pixel_values"].shape == (2, 3, 4, 5) and batch["labels"].shape == (2, 4, 5)
    assert torch.equal(batch["pixel_values"][1], items[1]["pixel_values"])
    other = {"pixel_values": torch.rand(3, 6, 5), "labels": torch.zeros(6, 5, dtype=torch.int64)}
    with pytest.raises(ValueError, match="different sizes.*batch size of 1.*crop"):
        collate_segmentation([items[0], other])
    with pytest.raises(ValueError, match="empty batch"):
        collate_segmentation([])


def test_dataloader_with_epoch_sampler(tmp_path):
    train = load_segmentation_splits(data_dir=str(make_camvid(tmp_path / "camvid")))["train"]
    dataset = SegmentationTrainDataset(train, SegmentationAugmentation((16, 16)), 0, processor())
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=3, sampler=EpochSampler(len(dataset), seed=0), collate_fn=collate_segmentation
    )
    (batch,) = list(loader)
    assert batch["pixel_values"].shape == (3, 3, 16, 16) and batch["labels"].shape == (3, 16, 16)


# ----------------------------------------------------------------------------------------------------------------
# Synthetic label maps
# ----------------------------------------------------------------------------------------------------------------
def test_synthetic_label_maps_are_deterministic_varied_and_valid():
    maps = [synthetic_label_map(np.random.default_rng(seed), 48, 64, NUM_LABELS) for seed in range(10)]
    for label_map in maps:
        assert label_map.shape == (48, 64) and label_map.dtype == np.int64
        assert set(np.unique(label_map)) <= set(range(NUM_LABELS)) | {IGNORE_INDEX}
    np.testing.assert_array_equal(maps[0], synthetic_label_map(np.random.default_rng(0), 48, 64, NUM_LABELS))
    assert np.mean([len(np.unique(label_map)) for label_map in maps]) >= 3
    assert any(IGNORE_INDEX in label_map for label_map in maps)
    assert len({label_map.tobytes() for label_map in maps}) == len(maps)
    with pytest.raises(ValueError, match="ignore_index 5 is a class id"):
        synthetic_label_map(np.random.default_rng(0), 8, 8, NUM_LABELS, ignore_index=5)


def test_synthetic_label_dataset_is_keyed_by_epoch_and_index():
    dataset = SyntheticLabelDataset(4, crop_size=(32, 40), num_labels=NUM_LABELS, seed=1)
    assert len(dataset) == 4
    item = dataset[(2, 3)]
    assert list(item) == ["labels"] and item["labels"].shape == (32, 40) and item["labels"].dtype == torch.int64
    assert torch.equal(item["labels"], dataset[(2, 3)]["labels"])
    assert not torch.equal(item["labels"], dataset[(3, 3)]["labels"])
    assert not torch.equal(item["labels"], dataset[(2, 2)]["labels"])


# ----------------------------------------------------------------------------------------------------------------
# The real CamVid folder
# ----------------------------------------------------------------------------------------------------------------
def test_camvid_splits_and_void(camvid_dir):
    splits = load_splits_from_args(parse_data_args(["--data_dir", str(camvid_dir), "--void_value", "11"]))
    assert (len(splits["train"]), len(splits["validation"])) == (367, 101)
    dataset = eval_dataset(splits["validation"], void_value=11, num_labels=NUM_LABELS)
    raw_values, values = set(), set()
    for index in (0, 50, 100):
        raw_values |= set(np.unique(read_label_map(splits["validation"][index]["label"], LabelSpec())).tolist())
        item = dataset[index]
        assert item["pixel_values"].shape == (3, 360, 480)
        values |= set(item["labels"].unique().tolist())
    assert 11 in raw_values and 11 not in values and IGNORE_INDEX in values
    assert values <= set(range(NUM_LABELS)) | {IGNORE_INDEX}


@pytest.mark.slow
def test_camvid_every_validation_label_is_a_class_or_ignored(camvid_dir):
    validation = load_segmentation_splits(data_dir=str(camvid_dir))["validation"]
    for index in range(len(validation)):
        labels = read_label_map(validation[index]["label"], LabelSpec(void_value=11))
        assert labels.shape == (360, 480)
        assert set(np.unique(labels).tolist()) <= set(range(NUM_LABELS)) | {IGNORE_INDEX}
