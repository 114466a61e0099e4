"""The paper's stage-I claims in miniature on CamVid: palette and token grid, measured on reconstruction.

    python benchmarks/camvid_ablations.py --steps 1000

Each setting trains the `gss-mobilenetv2-camvid` tokenizer with `training/train_posterior.py` for the same steps
(the recipe's crops, batch and learning rate), then reports reconstruction mIoU on `val` from the script's own
`eval_results.json`:
- maximum-distance palette vs a random palette (the paper's GSS-FF-R): does colour spacing matter?
- tokens at 1/4 vs 1/8 of the image: how much of the label detail survives a coarser grid?
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

from gss_hf import GSSConfig, default_tokenizer_config
from gss_hf.maskige import min_pairwise_distance

from camvid_runs import require_camvid, run_training_script


def random_palette(num_classes: int, seed: int) -> list[list[int]]:
    """Uniform random colours, distinct and different from the ignore colour (black)."""
    rng = np.random.default_rng(seed)
    while True:
        colors = rng.integers(0, 256, size=(num_classes, 3)).tolist()
        if len({tuple(color) for color in colors + [[0, 0, 0]]}) == num_classes + 1:
            return colors


def settings() -> dict[str, GSSConfig]:
    base = GSSConfig.from_preset("gss-mobilenetv2-camvid")
    random_colors = GSSConfig.from_preset("gss-mobilenetv2-camvid", palette=random_palette(base.num_labels, seed=0))
    coarse = GSSConfig.from_preset(
        "gss-mobilenetv2-camvid",
        token_stride=8,
        tokenizer_config=default_tokenizer_config(1024, 8, base_channels=16, latent_channels=16, norm_num_groups=8),
    )
    return {
        "max-distance palette, tokens at 1/4 (the recipe)": base,
        "random palette (GSS-FF-R), tokens at 1/4": random_colors,
        "max-distance palette, tokens at 1/8": coarse,
    }


def train(config: GSSConfig, steps: int, scratch: Path) -> tuple[dict, float]:
    config.save_pretrained(scratch / "config")
    return run_training_script("train_posterior.py", [
        "--config_name", str(scratch / "config"), "--crop_size", "64", "64", "--per_device_train_batch_size", "32",
        "--learning_rate", "1e-3", "--max_train_steps", str(steps),
    ], scratch / "tokenizer")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    require_camvid()
    print(f"Stage I, {args.steps} steps, batch 32, 64x64 crops, lr 1e-3; reconstruction on CamVid val (101, 360x480)\n")
    print("| setting | palette min distance | reconstruction mIoU | worst class IoU | live codes | minutes |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for index, (name, config) in enumerate(settings().items()):
            scores, seconds = train(config, args.steps, Path(scratch) / str(index))
            distance = min_pairwise_distance([*config.palette, config.ignore_color])
            worst = min(iou for iou in scores["per_category_iou"] if iou is not None)
            print(
                f"| {name} | {distance:.1f} | {100 * scores['mean_iou']:.2f} | {100 * worst:.1f} | "
                f"{scores['live_codes']} | {seconds / 60:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
