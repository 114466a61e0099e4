"""The paper's stage-II claims in miniature on CamVid: the unlabelled-area auxiliary and the MLA head, on GSS-FF.

    python benchmarks/camvid_prior_ablations.py --tokenizer outputs/camvid/tokenizer --steps 800 \
        [--reference_dir outputs/camvid/gss-ff]

Each setting trains the prior with `training/train_prior.py` on the same stage-I tokenizer, with the recipe's
stage-II flags (ImageNet MobileNetV2, 256x256 crops, batch 8, lr 6e-4, 50 warm-up steps, nearest-colour X^-1) and
the same steps, then reports GSS-FF mIoU on `val` from the script's own `eval_results.json`:
- the recipe: unlabelled pixels filled with the auxiliary head's argmax before tokenising, multi-level head;
- without the unlabelled-area auxiliary (`fill_unlabelled_with_auxiliary: false`): label maps are tokenised as
  painted, so the prior is also taught to predict the ignore colour;
- a plain head (`prior_head_type: "plain"`): the deepest backbone level only, no multi-level aggregation.

`--reference_dir` reuses a stage-II model already trained with the recipe's flags and these steps (the recipe's
`gss-ff`) for the first row instead of training it again.
"""

import argparse
import json
import tempfile
from pathlib import Path

from gss_hf import GSSConfig

from camvid_runs import require_camvid, run_training_script


RECIPE = "the recipe (auxiliary fill, MLA head)"
SETTINGS = {
    RECIPE: {"inverse_type": "nearest"},
    "without the unlabelled-area auxiliary": {"inverse_type": "nearest", "fill_unlabelled_with_auxiliary": False},
    "plain head (deepest level only)": {"inverse_type": "nearest", "prior_head_type": "plain"},
}


def train(overrides: dict, tokenizer: Path, steps: int, output_dir: Path) -> tuple[dict, float]:
    return run_training_script("train_prior.py", [
        "--config_name", "gss-mobilenetv2-camvid", "--config_overrides", json.dumps(overrides),
        "--tokenizer_path", str(tokenizer), "--pretrained_backbone", "imagenet-mobilenet-v2",
        "--crop_size", "256", "256", "--per_device_train_batch_size", "8", "--learning_rate", "6e-4",
        "--warmup_steps", "50", "--max_train_steps", str(steps),
    ], output_dir)  # fmt: skip


def reference_scores(reference_dir: Path) -> dict:
    """The recipe's stage-II scores, after checking that the folder really is the recipe's setting."""
    config = GSSConfig.from_pretrained(reference_dir)
    if config.prior_head_type != "mla" or not config.fill_unlabelled_with_auxiliary or config.inverse_type != "nearest":
        raise SystemExit(f"{reference_dir} is not a recipe GSS-FF model (MLA head, auxiliary fill, nearest X^-1).")
    return json.loads((reference_dir / "eval_results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", type=Path, required=True, help="The stage-I tokenizer (the recipe's).")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--reference_dir", type=Path, help="A recipe stage-II model trained for --steps steps.")
    args = parser.parse_args()
    require_camvid()
    print(f"Stage II, {args.steps} steps, batch 8, 256x256 crops, lr 6e-4; GSS-FF on CamVid val (101, 360x480)\n")
    print("| setting | mIoU | mAcc | aAcc | minutes |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for index, (name, overrides) in enumerate(SETTINGS.items()):
            if name == RECIPE and args.reference_dir is not None:
                scores, minutes = reference_scores(args.reference_dir), "(reused)"
            else:
                scores, seconds = train(overrides, args.tokenizer, args.steps, Path(scratch) / str(index))
                minutes = f"{seconds / 60:.1f}"
            print(
                f"| {name} | {100 * scores['mean_iou']:.2f} | {100 * scores['mean_accuracy']:.2f} | "
                f"{100 * scores['overall_accuracy']:.2f} | {minutes} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
