"""GSS against its discriminative peer over seeds: mean and spread of each model's CamVid `val` scores.

    python benchmarks/camvid_seeds.py \
        --model "GSS-FF (class-weighted)" benchmarks/camvid_results.json:gss_ff outputs/seeds/gss-ff-seed1 \
        --model "DeepLabV3-MobileNetV2" benchmarks/camvid_results.json:baseline outputs/seeds/deeplabv3-seed1

Each `--model NAME RUN [RUN ...]` names one training run per seed: a run folder (its `eval_results.json`, the
scores its training script wrote), a scores JSON file, or `FILE.json:KEY` for one entry of a file that holds several
(as `benchmarks/camvid_results.py --output_json` writes). The first model's mean mIoU is divided by each other's.
"""

import argparse
import json
import statistics
from pathlib import Path


def read_scores(run: str) -> dict:
    """The scores of one run: `eval_results.json` in a folder, a JSON file, or `file.json:key`."""
    path, _, key = run.partition(".json:")
    path = Path(path + ".json") if key else Path(run)
    if path.is_dir():
        path = path / "eval_results.json"
    if not path.is_file():
        raise SystemExit(f"{run}: no such scores file ({path}).")
    scores = json.loads(path.read_text())
    if key:
        if key not in scores:
            raise SystemExit(f"{run}: {path} has no entry {key!r} (it has {sorted(scores)}).")
        scores = scores[key]
    if "mean_iou" not in scores:
        raise SystemExit(f"{run}: {path} holds no mean_iou.")
    return scores


def mean_and_spread(values: list[float]) -> str:
    """'mean ± half the range' in %, the honest spread of two seeds (and no more than the data for more)."""
    mean = statistics.fmean(values)
    return f"{100 * mean:.2f} ± {50 * (max(values) - min(values)):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", action="append", required=True, metavar=("NAME", "RUN"),
                        help="A model's name, then one run per seed.")  # fmt: skip
    args = parser.parse_args()
    models = {}
    for name, *runs in args.model:
        if not runs:
            parser.error(f"--model {name!r}: give at least one run after the name.")
        models[name] = [read_scores(run) for run in runs]

    class_names = list(next(iter(models.values()))[0]["per_category_iou_by_name"])
    print("CamVid val (101 photos, 360x480, whole image), IoU in %: mean ± half the range over seeds\n")
    print(f"| model | seeds | mIoU | each seed | mAcc | aAcc | {' | '.join(class_names)} |")
    print("|---" * (len(class_names) + 6) + "|")
    means = {}
    for name, runs in models.items():
        miou = [scores["mean_iou"] for scores in runs]
        means[name] = statistics.fmean(miou)
        per_class = [
            f"{100 * statistics.fmean(scores['per_category_iou_by_name'][label] or 0.0 for scores in runs):.1f}"
            for label in class_names
        ]
        print(f"| {name} | {len(runs)} | **{mean_and_spread(miou)}** | {', '.join(f'{100 * v:.2f}' for v in miou)} | "
              f"{mean_and_spread([s['mean_accuracy'] for s in runs])} | "
              f"{mean_and_spread([s['overall_accuracy'] for s in runs])} | {' | '.join(per_class)} |")  # fmt: skip
    first, *others = means
    for other in others:
        print(f"\nmean mIoU {first} / {other}: {means[first] / means[other]:.3f}")


if __name__ == "__main__":
    main()
