"""The official GSS code's test vectors (`../shared/data/official_gss`, see its README), shared by the parity tests:
where they are, how a test skips without them, and how a re-implementation's tensors are compared with them."""

from pathlib import Path

import pytest
import torch


OFFICIAL_GSS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "official_gss"
# The fixtures' README suggests 1e-4 of each tensor's max |value| for a float32 CPU re-implementation.
RELATIVE_TOLERANCE = 1e-4


def official_gss_file(folder_name: str, file_name: str) -> Path:
    """`OFFICIAL_GSS_DIR / folder_name / file_name`; skips the test, saying where it looked, when it is absent."""
    path = OFFICIAL_GSS_DIR / folder_name / file_name
    if not path.is_file():
        pytest.skip(f"the official GSS test vectors are not at {path.parent} (the shared data folder beside the checkout)")
    return path


def relative_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Max |actual - expected| relative to max |expected|, in float64."""
    return float((actual.double() - expected.double()).abs().max() / expected.double().abs().max())


def full_size_meta_state_dict(key_list: str) -> dict[str, torch.Tensor]:
    """A full-size official model's key list (`full_size_keys/<key_list>`, lines `key<TAB>shape<TAB>dtype`) as meta
    tensors of those shapes: enough to read a config and check a conversion, without the (absent) values."""
    state_dict = {}
    for line in official_gss_file("full_size_keys", key_list).read_text().splitlines():
        key, shape, dtype = line.split("\t")
        sizes = [int(size) for size in shape.strip("()").split(",") if size.strip()]
        state_dict[key] = torch.empty(sizes, dtype=getattr(torch, dtype.removeprefix("torch.")), device="meta")
    return state_dict
