"""Robustness under domain shift, in miniature: GSS-FF, GSS-FT-W and DeepLabV3 on corrupted CamVid `val` photos.

    python benchmarks/robustness.py --gss gss_hf/pretrained/gss-mobilenetv2-camvid \
        --baseline outputs/seeds/deeplabv3-seed1 --output_json benchmarks/robustness_results.json

No second driving data set is available offline, so the shifted domain is CamVid `val` under the corruptions of
`corruptions.py` (noise, blur, weather and digital families, three severities each, seeded per photo). Each
condition is scored by its mIoU over the photos (one confusion matrix per model and condition, whole 360x480 image);
a model's relative robustness is its mean corrupted mIoU over its clean mIoU on the same photos.

`--gss` must be a GSS-FT-W folder (learned X^-1). GSS-FF is that same model read by nearest colour: stage III trains
only X^-1, so the FT-W model's prior and tokenizer are its GSS-FF's, and one pass gives both (the maskige is read
by both X^-1s). The embedded model's prior is bit-identical to `outputs/seeds/gss-ff-seed0`'s, whose own
evaluation this reproduces on clean photos. All 101 photos by default (34 conditions of them: about an hour on one
CPU thread here); `--photo_stride N` keeps every N-th, for a quicker look.
"""

import argparse
import copy
import json
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForSemanticSegmentation

from gss_hf.modeling_gss_inverse import TrainingFreeInverse
from training.metrics import StreamingConfusionMatrix

from camvid_runs import CAMVID, camvid_val_dataset, require_camvid
from corruptions import CORRUPTIONS, SEVERITIES, corrupt


MODELS = ("GSS-FF", "GSS-FT-W", "DeepLabV3")
CLEAN = ("clean", 0)


def photo_seed(seed: int, name: str, severity: int, index: int) -> int:
    """The corruption seed of one photo: fixed by (seed, corruption, severity, photo), whatever else runs."""
    return zlib.crc32(f"{seed}/{name}/{severity}/{index}".encode())


@torch.no_grad()
def predict(gss, nearest: TrainingFreeInverse, baseline, pixel_values: torch.Tensor, size) -> dict:
    """(1, 3, H, W) photo -> {model: (1, H, W) class ids} for the three models."""
    output = gss(pixel_values)
    logits = F.interpolate(baseline(pixel_values).logits, size=size, mode="bilinear", align_corners=False)
    return {
        "GSS-FF": nearest(output.maskige).argmax(dim=1),
        "GSS-FT-W": output.logits.argmax(dim=1),
        "DeepLabV3": logits.argmax(dim=1),
    }


def summarise(miou: dict[tuple[str, int], dict[str, float]]) -> dict:
    """Means of the per-condition mIoUs by corruption, by family and by severity, each with its ratio to clean."""
    clean = miou[CLEAN]
    groups: dict[str, dict[str, list[tuple[str, int]]]] = {"corruption": {}, "family": {}, "severity": {}}
    for name, (family, _, _) in CORRUPTIONS.items():
        for severity in SEVERITIES:
            if (name, severity) not in miou:
                continue
            for group, key in (("corruption", name), ("family", family), ("severity", str(severity))):
                groups[group].setdefault(key, []).append((name, severity))
    groups["all corruptions"] = {"mean": [condition for condition in miou if condition != CLEAN]}
    summary = {}
    for group, members in groups.items():
        summary[group] = {}
        for key, conditions in members.items():
            means = {model: sum(miou[c][model] for c in conditions) / len(conditions) for model in MODELS}
            summary[group][key] = {
                model: {"mean_iou": means[model], "relative": means[model] / clean[model]} for model in MODELS
            }
    return summary


def print_table(title: str, rows: dict[str, dict]) -> None:
    print(f"\n{title}\n")
    print("| | " + " | ".join(f"{model} mIoU | {model} rel." for model in MODELS) + " |")
    print("|---|" + "---|---|" * len(MODELS))
    for key, scores in rows.items():
        cells = [f"{100 * scores[m]['mean_iou']:.2f} | {scores[m]['relative']:.3f}" for m in MODELS]
        print(f"| {key} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gss", required=True, help="A GSS-FT-W folder (learned X^-1).")
    parser.add_argument("--baseline", required=True, help="A DeepLabV3 folder from training/train_baseline.py.")
    parser.add_argument("--corruptions", nargs="+", choices=sorted(CORRUPTIONS), default=list(CORRUPTIONS))
    parser.add_argument("--photo_stride", type=int, default=1, help="Every N-th val photo (1: all 101).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the corruptions.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output_json", type=Path)
    args = parser.parse_args()
    require_camvid()
    if args.photo_stride < 1:
        parser.error(f"--photo_stride must be at least 1, got {args.photo_stride}.")
    torch.set_num_threads(args.threads)

    gss = AutoModelForSemanticSegmentation.from_pretrained(args.gss).eval()
    if gss.config.inverse_type != "learned":
        parser.error(f"--gss must have the learned X^-1 (GSS-FT-W); {args.gss} has {gss.config.inverse_type!r}.")
    nearest_config = copy.deepcopy(gss.config)
    nearest_config.inverse_type = "nearest"
    nearest = TrainingFreeInverse(nearest_config)
    baseline = AutoModelForSemanticSegmentation.from_pretrained(args.baseline).eval()
    dataset = camvid_val_dataset(CAMVID, gss.config.num_labels)
    ignore = dataset.label_spec.ignore_index
    conditions = [CLEAN] + [(name, severity) for name in args.corruptions for severity in SEVERITIES]
    matrices = {
        (condition, model): StreamingConfusionMatrix(gss.config.num_labels, ignore)
        for condition in conditions for model in MODELS
    }  # fmt: skip
    photos = range(0, len(dataset), args.photo_stride)
    for step, index in enumerate(photos):
        image, labels = dataset.read(index, with_image=True)
        for name, severity in conditions:
            seed = photo_seed(args.seed, name, severity, index)
            shifted = image if severity == 0 else corrupt(image, name, severity, seed)
            item = dataset.to_tensors(shifted, labels, resize=True)
            predictions = predict(gss, nearest, baseline, item["pixel_values"][None], item["labels"].shape)
            for model, prediction in predictions.items():
                matrices[(name, severity), model].update(prediction, item["labels"][None])
        print(f"photo {step + 1}/{len(photos)} done", flush=True)

    miou = {
        condition: {model: matrices[condition, model].compute(gss.config.id2label)["mean_iou"] for model in MODELS}
        for condition in conditions
    }  # fmt: skip
    summary = summarise(miou)
    print(f"\nCamVid val, {len(photos)} photos (stride {args.photo_stride}), 360x480 whole image; corruption seed "
          f"{args.seed}. Clean mIoU: " + ", ".join(f"{m} {100 * miou[CLEAN][m]:.2f}" for m in MODELS))  # fmt: skip
    print_table("By family (mean over its corruptions and severities)", summary["family"])
    print_table("By corruption (mean over severities 1-3)", summary["corruption"])
    print_table("By severity (mean over corruptions)", summary["severity"])
    print_table("All corruptions", summary["all corruptions"])
    if args.output_json:
        record = {
            "arguments": {key: str(value) for key, value in vars(args).items()},
            "photos": list(photos),
            "mean_iou": {f"{name}/{severity}": scores for (name, severity), scores in miou.items()},
            "summary": summary,
        }  # fmt: skip
        args.output_json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
