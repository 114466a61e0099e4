"""The corruptions of benchmarks/robustness.py (`benchmarks/corruptions.py`): seeded, stronger with severity."""

import importlib.util
from pathlib import Path

import numpy as np
import PIL.Image
import pytest


pytest.importorskip("albumentations", reason="albumentations is in the `dev` extra")

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("corruptions", REPO / "benchmarks" / "corruptions.py")
corruptions = importlib.util.module_from_spec(spec)
spec.loader.exec_module(corruptions)

PHOTO = np.asarray(PIL.Image.open(REPO / "examples" / "camvid_0016E5_08115.png").convert("RGB"))[::2, ::2].copy()


def distortion(image: np.ndarray) -> float:
    return float(np.abs(image.astype(np.float64) - PHOTO).mean())


def test_there_are_at_least_eight_corruptions_in_four_families():
    families = {family for family, _, _ in corruptions.CORRUPTIONS.values()}
    assert len(corruptions.CORRUPTIONS) >= 8 and families == {"noise", "blur", "weather", "digital"}


@pytest.mark.parametrize("name", sorted(corruptions.CORRUPTIONS))
def test_each_corruption_is_seeded_and_grows_with_severity(name):
    outputs = [corruptions.corrupt(PHOTO, name, severity, seed=7) for severity in corruptions.SEVERITIES]
    assert all(output.shape == PHOTO.shape and output.dtype == np.uint8 for output in outputs)
    assert np.array_equal(outputs[0], corruptions.corrupt(PHOTO, name, 1, seed=7))
    distortions = [distortion(output) for output in outputs]
    assert distortions[0] > 0.5
    assert distortions == sorted(distortions), distortions


def test_a_random_corruption_differs_between_seeds():
    assert not np.array_equal(*(corruptions.corrupt(PHOTO, "gaussian_noise", 2, seed) for seed in (0, 1)))


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((PHOTO, "rain", 1), "No corruption 'rain'"),
        ((PHOTO, "fog", 4), r"severity must be one of \(1, 2, 3\)"),
        ((PHOTO.astype(np.float32), "fog", 1), "Expected an \\(H, W, 3\\) uint8 photo"),
        ((PHOTO[..., 0], "fog", 1), "Expected an \\(H, W, 3\\) uint8 photo"),
    ],
)
def test_bad_arguments_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        corruptions.corrupt(*arguments, seed=0)
