"""The paper's training augmentation (spec §5, mmseg's pipeline): random resize, pad, random crop with the
`cat_max_ratio` rule, horizontal flip and photometric distortion, with its HSV helpers.

The augmentation is hand-written rather than taken from a library such as albumentations because every random draw
has to come from a generator made per sample from (seed, epoch, index): that is what makes a resumed run bit-identical
to an uninterrupted one and lets any worker or process compute any sample, whereas albumentations draws from a
generator held by its `Compose` object. mmseg's `cat_max_ratio` crop is no library transform, and PIL does the
resizing, so OpenCV (which albumentations requires) stays out of the dependencies.
"""

import numpy as np
import PIL.Image

from gss_hf import IGNORE_INDEX
from gss_hf.image_processing_gss import resize_labels


CROP_TRIES = 10  # mmseg's RandomCrop tries this many crops for one that satisfies cat_max_ratio


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
        """One factor from `scale_range` relative to the input's own size, aspect kept. Labels are resized by the
        processor's own nearest-neighbour rule (`resize_labels`), so they are never interpolated."""
        scale = rng.uniform(*self.scale_range)
        height, width = label.shape
        size = (max(1, int(width * scale + 0.5)), max(1, int(height * scale + 0.5)))  # PIL's (width, height)
        label = resize_labels(label, size[::-1])
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
