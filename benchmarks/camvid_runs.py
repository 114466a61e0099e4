"""Shared by the CamVid benchmarks: where CamVid is, its `val` photos as the models see them, and one training run
scored by the training script itself.

The ablation scripts (`camvid_ablations.py`, `camvid_prior_ablations.py`, `posterior_codebook_remedies.py`) compare
settings by running a `training/` script once per setting and reading the `eval_results.json` it writes, so every
row is scored exactly as a user's own run would be.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from gss_hf import GSSImageProcessor
from training.data import CAMVID_VOID_VALUE, SegmentationEvalDataset, load_segmentation_splits


REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid"


def require_camvid() -> None:
    """Exits with a clear message when CamVid is not where the benchmarks read it."""
    if not CAMVID.is_dir():
        sys.exit(f"CamVid is not at {CAMVID}.")


def camvid_val_dataset(camvid_dir: Path, num_labels: int) -> SegmentationEvalDataset:
    """The 101 `val` photos at their full 360x480 size (normalised, not resized) with their label maps."""
    split = load_segmentation_splits(data_dir=str(camvid_dir))["validation"]
    processor = GSSImageProcessor(do_resize=False, void_value=CAMVID_VOID_VALUE)
    return SegmentationEvalDataset(split, processor, num_labels)


def run_training_script(script: str, arguments: list[str], output_dir: Path) -> tuple[dict, float]:
    """Runs `training/<script>` on CamVid with `arguments`, writing to `output_dir`.

    Returns the run's `eval_results.json` and its wall time in seconds; exits with the end of the run's stderr when it
    fails, so that the error is not lost behind the table.
    """
    command = [
        sys.executable, str(REPO / "training" / script), "--data_dir", str(CAMVID),
        "--void_value", str(CAMVID_VOID_VALUE), *arguments, "--output_dir", str(output_dir),
    ]  # fmt: skip
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if run.returncode:
        sys.exit(f"Training failed ({' '.join(command)}):\n{run.stderr[-4000:]}")
    return json.loads((output_dir / "eval_results.json").read_text()), time.perf_counter() - start
