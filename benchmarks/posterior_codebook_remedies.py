"""Stage I on CamVid: does re-seeding dead codebook entries prevent codebook collapse?

Trains the `gss-mobilenetv2-camvid` tokenizer with `training/train_posterior.py` under each setting for the same
number of steps, then reports reconstruction mIoU on `val` (label map -> tokens -> maskige -> nearest colour), live
codes and codebook perplexity, all from the script's own `eval_results.json`:

    python benchmarks/posterior_codebook_remedies.py --steps 150

Settings: the naive recipe that collapsed in an earlier experiment (lr 1e-3, no re-seeding), the same learning rate
with re-seeding, and lr 3e-4 with and without re-seeding.
"""

import argparse
import tempfile
from pathlib import Path

from camvid_runs import require_camvid, run_training_script


SETTINGS = {
    "lr 1e-3, no re-seeding": ["--learning_rate", "1e-3", "--reseed_dead_codes_every", "0"],
    "lr 1e-3, re-seed every 25 steps": ["--learning_rate", "1e-3", "--reseed_dead_codes_every", "25"],
    "lr 3e-4, no re-seeding": ["--learning_rate", "3e-4", "--reseed_dead_codes_every", "0"],
    "lr 3e-4, re-seed every 25 steps": ["--learning_rate", "3e-4", "--reseed_dead_codes_every", "25"],
}


def train(setting: list[str], steps: int, crop: list[str], output_dir: Path) -> tuple[dict, float]:
    return run_training_script("train_posterior.py", [
        "--config_name", "gss-mobilenetv2-camvid", "--crop_size", *crop, "--max_train_steps", str(steps),
        "--per_device_train_batch_size", "8", *setting,
    ], output_dir)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--crop_size", nargs=2, default=["96", "128"], metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--only", nargs="*", help="Run only these settings (by their table name).")
    args = parser.parse_args()
    require_camvid()
    print(f"{args.steps} steps, batch 8, {args.crop_size[0]}x{args.crop_size[1]} crops, CamVid train -> val\n")
    print("| setting | reconstruction mIoU | live codes (of 1024) | perplexity | minutes |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for index, (name, setting) in enumerate(SETTINGS.items()):
            if args.only and name not in args.only:
                continue
            scores, seconds = train(setting, args.steps, args.crop_size, Path(scratch) / str(index))
            print(
                f"| {name} | {100 * scores['mean_iou']:.1f} | {scores['live_codes']} | {scores['perplexity']:.1f} "
                f"| {seconds / 60:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
