"""Test settings: nothing may reach the Hugging Face Hub (it is unreachable here, and tests must not depend on it)."""

import os
from pathlib import Path

import pytest


# Before transformers or diffusers are imported: Hub ids fail at once instead of retrying for 20 s.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


CAMVID_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"
OFFICIAL_PALETTES_JSON = CAMVID_DIR.parent / "official_palettes.json"


@pytest.fixture
def camvid_dir() -> Path:
    """The shared CamVid folder; tests that need it skip when it is absent."""
    if not (CAMVID_DIR / "valannot").is_dir():
        pytest.skip(f"CamVid is not at {CAMVID_DIR} (the shared data folder beside the checkout)")
    return CAMVID_DIR
