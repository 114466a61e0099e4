"""Synthetic label maps (tokenizer training on any number of classes) and the dataset that serves them."""

import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from gss_hf import IGNORE_INDEX


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

    def __init__(
        self,
        num_samples: int,
        crop_size: tuple[int, int],
        num_labels: int,
        seed: int,
        ignore_index: int = IGNORE_INDEX,
    ):
        if num_samples < 1:
            raise ValueError(f"num_samples must be at least 1, got {num_samples}.")
        self.num_samples = num_samples
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.num_labels = num_labels
        self.seed = seed
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        """{"labels": (height, width) int64} of `crop_size`, from the generator (seed, epoch, index)."""
        epoch, index = key
        if not 0 <= index < self.num_samples:
            raise IndexError(f"Index {index} is out of range for {self.num_samples} synthetic samples.")
        rng = np.random.default_rng((self.seed, epoch, index))
        labels = synthetic_label_map(rng, *self.crop_size, self.num_labels, self.ignore_index)
        return {"labels": torch.from_numpy(labels)}
