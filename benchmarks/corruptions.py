"""The image corruptions of `robustness.py`: CamVid photos shifted the ImageNet-C / Cityscapes-C way (noise, blur,
weather, digital), each at three severities, drawn by albumentations with a seed per (corruption, severity, photo).

`imagecorruptions` (the ImageNet-C reference package, 1.1.2) does not import here: it needs `pkg_resources`, which
current setuptools no longer ships, and it calls scikit-image's removed `multichannel` argument. So the corruptions
come from albumentations' own transforms, with strengths taken from ImageNet-C's levels 1, 3 and 5 where the two
parametrise a corruption the same way (noise standard deviation, blur sigma and radius, JPEG quality, pixelation
scale, brightness shift, contrast factor: ColorJitter blends with the grey mean as ImageNet-C does, where
RandomBrightnessContrast's contrast only darkens), and albumentations' documented ranges for the weather ones.
"""

from collections.abc import Callable

import albumentations as A
import numpy as np


SEVERITIES = (1, 2, 3)


def _fixed(value) -> tuple:
    """A range of one value: albumentations draws strengths from ranges, the benchmark wants each level exact."""
    return (value, value)


# name -> (family, strength of each severity, the transform for one strength). Each transform has p=1.
CORRUPTIONS: dict[str, tuple[str, tuple, Callable[..., A.BasicTransform]]] = {
    "gaussian_noise": ("noise", (0.08, 0.18, 0.38), lambda s: A.GaussNoise(std_range=_fixed(s), p=1)),
    "shot_noise": ("noise", (1 / 60, 1 / 12, 1 / 3), lambda s: A.ShotNoise(scale_range=_fixed(s), p=1)),
    "gaussian_blur": ("blur", (1.0, 3.0, 6.0), lambda s: A.GaussianBlur(sigma_limit=_fixed(s), blur_limit=0, p=1)),
    "defocus_blur": ("blur", (3, 6, 10), lambda s: A.Defocus(radius=_fixed(s), alias_blur=_fixed(0.3), p=1)),
    "motion_blur": ("blur", (7, 15, 25), lambda s: A.MotionBlur(blur_limit=_fixed(s), p=1)),
    "fog": ("weather", (0.3, 0.6, 0.9), lambda s: A.RandomFog(fog_coef_range=_fixed(s), p=1)),
    "snow": ("weather", (0.1, 0.3, 0.5), lambda s: A.RandomSnow(snow_point_range=_fixed(s), p=1)),
    "brightness": ("weather", (0.1, 0.3, 0.5),
                   lambda s: A.RandomBrightnessContrast(brightness_limit=_fixed(s), contrast_limit=0, p=1)),
    "contrast": ("digital", (0.4, 0.2, 0.05),
                 lambda s: A.ColorJitter(brightness=1, contrast=_fixed(s), saturation=1, hue=0, p=1)),
    "jpeg": ("digital", (25, 15, 7), lambda s: A.ImageCompression(quality_range=_fixed(s), p=1)),
    "pixelate": ("digital", (0.6, 0.4, 0.25), lambda s: A.Downscale(scale_range=_fixed(s), p=1)),
}  # fmt: skip


def corrupt(image: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 photo -> the same photo under corruption `name` at `severity` (1..3), drawn from `seed`."""
    if name not in CORRUPTIONS:
        raise ValueError(f"No corruption {name!r}; the corruptions are {sorted(CORRUPTIONS)}.")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}.")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"Expected an (H, W, 3) uint8 photo, got {image.dtype} of shape {image.shape}.")
    _, strengths, make = CORRUPTIONS[name]
    transform = A.Compose([make(strengths[severity - 1])], seed=seed)
    return transform(image=image)["image"]
