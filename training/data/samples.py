"""Sampling and datasets: a deterministic (seed, epoch) sampling order, the train and eval datasets (label conversion,
checks, augmentation, the processor's normalisation) and batch collation."""

from collections.abc import Iterator

import datasets
import numpy as np
import torch

from gss_hf import GSSImageProcessor
from training.data.augmentation import SegmentationAugmentation
from training.data.reading import read_example


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


class ProcessedSplit(torch.utils.data.Dataset):
    """What the train and eval datasets share: the split, read and converted by one `GSSImageProcessor` (its label
    spec for the label maps, its photo conversion and normalisation for the photos), so that training and evaluation
    see exactly what the processor saved with the model gives users."""

    def __init__(self, split: datasets.Dataset, image_processor: GSSImageProcessor, num_labels: int | None):
        self.split = split
        self.image_processor = image_processor
        self.label_spec = image_processor.label_spec
        self.num_labels = num_labels

    def __len__(self) -> int:
        return len(self.split)

    def read(self, index: int, with_image: bool) -> tuple[np.ndarray | None, np.ndarray]:
        return read_example(self.split, index, self.label_spec, self.num_labels, with_image)

    def to_tensors(self, image: np.ndarray | None, labels: np.ndarray, resize: bool) -> dict[str, torch.Tensor]:
        """{"pixel_values": (3, h, w) float32 from the image processor (resized as it resizes only with `resize`),
        "labels": (height, width) int64 as given}."""
        item = {"labels": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))}
        if image is not None:
            processed = self.image_processor(
                images=image, input_data_format="channels_last", return_tensors="pt",
                **({} if resize else {"do_resize": False}),
            )  # fmt: skip
            item["pixel_values"] = processed["pixel_values"][0]
        return item


class SegmentationTrainDataset(ProcessedSplit):
    """Augmented training samples keyed by (epoch, index) from `EpochSampler`; the augmentation's generator is
    `np.random.default_rng((seed, epoch, index))`, so a sample is the same whichever worker or process makes it."""

    def __init__(
        self,
        split: datasets.Dataset,
        augmentation: SegmentationAugmentation,
        seed: int,
        image_processor: GSSImageProcessor,
        with_images: bool = True,
        num_labels: int | None = None,
    ):
        super().__init__(split, image_processor, num_labels)
        self.augmentation = augmentation
        self.seed = seed
        self.with_images = with_images

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        """{"pixel_values": (3, H, W) float32, "labels": (H, W) int64} at the crop size (the crop is normalised,
        never resized); no "pixel_values" when `with_images` is False (tokenizer training reads no photos)."""
        epoch, index = key
        image, labels = self.read(index, self.with_images)
        image, labels = self.augmentation(image, labels, np.random.default_rng((self.seed, epoch, index)))
        return self.to_tensors(image, labels, resize=False)


class SegmentationEvalDataset(ProcessedSplit):
    """Evaluation samples without augmentation: photos exactly as the image processor prepares them for users, label
    maps at their full size (scores resize the predictions to the labels)."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """{"pixel_values": (3, h, w) float32, "labels": (height, width) int64}."""
        return self.to_tensors(*self.read(index, with_image=True), resize=True)


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
