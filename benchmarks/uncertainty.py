"""How well GSS's sampled uncertainty marks its wrong pixels on CamVid `val`, against DeepLabV3's softmax entropy.

    python benchmarks/uncertainty.py --gss gss_hf/pretrained/gss-mobilenetv2-camvid \
        --baseline outputs/seeds/deeplabv3-seed1 --num_samples 8 --output_json benchmarks/uncertainty_results.json

For every labelled pixel of the 101 `val` photos (360x480, whole image), each model's own prediction is right or
wrong; an uncertainty is scored by the AUROC and the average precision of "this pixel is misclassified"
(`training.metrics.error_detection_scores`). Uncertainties:
- GSS, samples: `GSSForSemanticSegmentation.sample`'s disagreement of `--num_samples` segmentations drawn from the
  prior (the entropy of their class frequencies), for the usual argmax prediction;
- GSS, token entropy: a single-pass alternative, the entropy of the prior's token distributions;
- GSS, class uncertainty: the other single-pass one, 1 - the probability of the predicted class under the prior's
  token distributions, each code read as the classes its decoded patch paints (`code_class_patterns`);
- DeepLabV3: the entropy of its per-pixel softmax, and 1 - its largest probability (for its own prediction).
Also printed: the mIoU of the samples' majority vote against the argmax, and the seconds per photo of the usual
prediction and of sampling (2 CPU threads unless `--threads`).
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForSemanticSegmentation

from training.metrics import StreamingConfusionMatrix, error_detection_scores

from camvid_runs import CAMVID, camvid_val_dataset, require_camvid


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(batch, K, H, W) logits -> (batch, H, W) entropy of the per-pixel softmax, in nats."""
    log_probs = logits.float().log_softmax(dim=1)
    return -(log_probs.exp() * log_probs).sum(dim=1)


class ErrorDetection:
    """Collects, over photos, each uncertainty at the labelled pixels and whether the prediction there is wrong."""

    def __init__(self):
        self.scores, self.errors = {}, {}

    def add(self, name: str, uncertainty: torch.Tensor, prediction: torch.Tensor, labels: torch.Tensor, ignore: int):
        labelled = labels != ignore
        self.scores.setdefault(name, []).append(uncertainty[labelled].float())
        self.errors.setdefault(name, []).append((prediction != labels)[labelled])

    def results(self) -> dict[str, dict]:
        return {
            name: error_detection_scores(torch.cat(self.scores[name]), torch.cat(self.errors[name]))
            for name in self.scores
        }


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gss", required=True, help="A GSS model folder.")
    parser.add_argument("--baseline", help="A DeepLabV3 folder from training/train_baseline.py.")
    parser.add_argument("--num_samples", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_photos", type=int, default=None, help="Only the first photos (a quick look).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output_json", type=Path)
    args = parser.parse_args()
    require_camvid()
    torch.set_num_threads(args.threads)

    gss = AutoModelForSemanticSegmentation.from_pretrained(args.gss).eval()
    baseline = AutoModelForSemanticSegmentation.from_pretrained(args.baseline).eval() if args.baseline else None
    dataset = camvid_val_dataset(CAMVID, gss.config.num_labels)
    ignore = dataset.label_spec.ignore_index
    count = len(dataset) if args.max_photos is None else min(args.max_photos, len(dataset))
    generator = torch.Generator().manual_seed(args.seed)
    patterns = gss.code_class_patterns()
    detection = ErrorDetection()
    matrices = {name: StreamingConfusionMatrix(gss.config.num_labels, ignore) for name in ("argmax", "vote")}
    seconds = {"argmax": 0.0, "sample": 0.0, "baseline": 0.0}
    for index in range(count):
        item = dataset[index]
        pixel_values, labels = item["pixel_values"][None], item["labels"][None]
        start = time.perf_counter()
        gss(pixel_values)
        seconds["argmax"] += time.perf_counter() - start
        start = time.perf_counter()
        sampled = gss.sample(pixel_values, args.num_samples, args.temperature, generator=generator,
                             code_class_patterns=patterns)  # fmt: skip
        seconds["sample"] += time.perf_counter() - start
        prediction = sampled.prediction
        detection.add("GSS, sample disagreement", sampled.uncertainty, prediction, labels, ignore)
        detection.add("GSS, token entropy (single pass)", sampled.token_entropy, prediction, labels, ignore)
        detection.add("GSS, class uncertainty (single pass)", sampled.class_uncertainty, prediction, labels, ignore)
        matrices["argmax"].update(prediction, labels)
        matrices["vote"].update(sampled.majority_vote, labels)
        if baseline is not None:
            start = time.perf_counter()
            logits = baseline(pixel_values).logits
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
            seconds["baseline"] += time.perf_counter() - start
            probabilities = logits.softmax(dim=1)
            prediction = logits.argmax(dim=1)
            detection.add("DeepLabV3, softmax entropy", softmax_entropy(logits), prediction, labels, ignore)
            detection.add("DeepLabV3, 1 - max softmax", 1 - probabilities.amax(dim=1), prediction, labels, ignore)

    scores = detection.results()
    miou = {name: matrix.compute(gss.config.id2label)["mean_iou"] for name, matrix in matrices.items()}
    per_photo = {name: total / count for name, total in seconds.items()}
    print(f"CamVid val ({count} photos, 360x480, whole image), {args.num_samples} samples at temperature "
          f"{args.temperature:g}, seed {args.seed}, {args.threads} threads\n")  # fmt: skip
    print("| uncertainty | AUROC | average precision | error rate of its prediction |")
    print("|---|---|---|---|")
    for name, result in scores.items():
        print(f"| {name} | **{result['auroc']:.4f}** | {result['average_precision']:.4f} | "
              f"{100 * result['error_rate']:.2f} % |")  # fmt: skip
    print(f"\n| GSS prediction | mIoU |\n|---|---|\n| argmax tokens (the usual) | {100 * miou['argmax']:.2f} |\n"
          f"| majority vote of the {args.num_samples} samples | {100 * miou['vote']:.2f} |")  # fmt: skip
    extra = (per_photo["sample"] - per_photo["argmax"]) / args.num_samples
    print(f"\n| seconds per photo | |\n|---|---|\n| GSS, usual prediction | {per_photo['argmax']:.3f} |\n"
          f"| GSS, `sample` ({args.num_samples} samples, with the usual prediction) | {per_photo['sample']:.3f} |\n"
          f"| GSS, each extra sample | {extra:.3f} |")  # fmt: skip
    if baseline is not None:
        print(f"| DeepLabV3 | {per_photo['baseline']:.3f} |")
    if args.output_json:
        record = {"arguments": {key: str(value) for key, value in vars(args).items()}, "error_detection": scores,
                  "mean_iou": miou, "seconds_per_photo": per_photo}  # fmt: skip
        args.output_json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
