"""CamVid `val` results of every GSS stage and of the DeepLabV3 baseline, in one table.

    python benchmarks/camvid_results.py --tokenizer outputs/camvid/tokenizer --gss_ff outputs/camvid/gss-ff \
        --gss_ft_w outputs/camvid/gss-ft-w --baseline outputs/camvid/deeplabv3 \
        --embedded gss_hf/pretrained/gss-mobilenetv2-camvid --output_json benchmarks/camvid_results.json

Rows (all on the 101 `val` photos at their full 360x480 size, whole-image inference):
- posterior reconstruction: label map -> maskige -> tokens -> maskige -> nearest colour (the ceiling of GSS);
- GSS-FF (nearest-colour X^-1) and GSS-FT-W (learned X^-1);
- DeepLabV3-MobileNetV2, trained by `training/train_baseline.py` with the same pipeline;
- the embedded model as shipped, through its image processor (the path `gss-segment` and the pipeline take).

`--output_json` keeps every score and the regression reference of the embedded model: its mIoU on the example
photo and on `REGRESSION_PHOTOS` (10 fixed `val` photos), which `tests/test_embedded_model.py` recomputes.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

from gss_hf import GSSConfig, MaskigeTokenizer
from training.data import SegmentationEvalDataset, read_camvid_val_photos
from training.evaluation import evaluate_photos, evaluate_reconstruction, evaluate_segmentation

from camvid_runs import CAMVID, camvid_val_dataset


EXAMPLE_PHOTO = "0016E5_08115.png"
# Every tenth `val` photo: the four CamVid sequences, not ten neighbouring frames.
REGRESSION_PHOTOS = [
    "0016E5_07959.png", "0016E5_07979.png", "0016E5_07999.png", "0016E5_08019.png", "0016E5_08039.png",
    "0016E5_08059.png", "0016E5_08079.png", "0016E5_08099.png", "0016E5_08119.png", "0016E5_08139.png",
]  # fmt: skip


def row(name: str, scores: dict, seconds: float) -> str:
    per_class = " | ".join("-" if iou is None else f"{100 * iou:.1f}" for iou in scores["per_category_iou"])
    return (
        f"| {name} | **{100 * scores['mean_iou']:.2f}** | {100 * scores['mean_accuracy']:.2f} | "
        f"{100 * scores['overall_accuracy']:.2f} | {per_class} | {seconds:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", help="Stage-I tokenizer folder.")
    parser.add_argument("--gss_ff", help="GSS model with the nearest-colour X^-1.")
    parser.add_argument("--gss_ft_w", help="GSS model with the learned X^-1.")
    parser.add_argument("--baseline", help="DeepLabV3 folder from training/train_baseline.py.")
    parser.add_argument("--embedded", help="The shipped model folder (scored through its processor).")
    parser.add_argument("--config_name", default="gss-mobilenetv2-camvid", help="Palette and classes of --tokenizer.")
    parser.add_argument("--camvid_dir", type=Path, default=CAMVID)
    parser.add_argument("--output_json", type=Path, help="Write the scores here (merged into an existing file).")
    args = parser.parse_args()
    if not (args.camvid_dir / "valannot").is_dir():
        sys.exit(f"CamVid is not at {args.camvid_dir}.")

    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    results, lines = {}, []

    def dataset_for(config) -> SegmentationEvalDataset:
        return camvid_val_dataset(args.camvid_dir, config.num_labels)

    if args.tokenizer:
        config = GSSConfig.from_preset(args.config_name)
        start = time.perf_counter()
        tokenizer = MaskigeTokenizer.from_pretrained(args.tokenizer)
        results["reconstruction"] = evaluate_reconstruction(accelerator, tokenizer, config, dataset_for(config), 4)
        lines.append(row("posterior reconstruction (upper bound)", results["reconstruction"],
                         time.perf_counter() - start))  # fmt: skip
    for key, name in (("gss_ff", "GSS-FF (nearest colour)"), ("gss_ft_w", "GSS-FT-W (learned X^-1)"),
                      ("baseline", "DeepLabV3-MobileNetV2 baseline")):  # fmt: skip
        path = getattr(args, key)
        if not path:
            continue
        start = time.perf_counter()
        model = AutoModelForSemanticSegmentation.from_pretrained(path)
        results[key] = evaluate_segmentation(accelerator, model, dataset_for(model.config), 4)
        lines.append(row(name, results[key], time.perf_counter() - start))
    if args.embedded:
        model = AutoModelForSemanticSegmentation.from_pretrained(args.embedded)
        processor = AutoImageProcessor.from_pretrained(args.embedded)
        start = time.perf_counter()
        names = sorted(path.name for path in (args.camvid_dir / "val").iterdir())
        results["embedded"] = evaluate_photos(model, processor, *read_camvid_val_photos(args.camvid_dir, names))
        lines.append(row("embedded model, through its processor", results["embedded"], time.perf_counter() - start))
        results["regression_reference"] = {
            "example_photo": EXAMPLE_PHOTO,
            "example_photo_mean_iou": evaluate_photos(
                model, processor, *read_camvid_val_photos(args.camvid_dir, [EXAMPLE_PHOTO])
            )["mean_iou"],
            "photos": REGRESSION_PHOTOS,
            "photos_mean_iou": evaluate_photos(
                model, processor, *read_camvid_val_photos(args.camvid_dir, REGRESSION_PHOTOS)
            )["mean_iou"],
        }

    class_names = list(next(iter(results.values()))["per_category_iou_by_name"])
    print("CamVid val (101 photos, 360x480, whole image), IoU in %\n")
    print(f"| model | mIoU | mAcc | aAcc | {' | '.join(class_names)} | eval s |")
    print("|---" * (len(class_names) + 5) + "|")
    print("\n".join(lines))
    if "reconstruction" in results:
        usage = results["reconstruction"]
        print(f"\nTokenizer codebook: {usage['live_codes']} live codes, perplexity {usage['perplexity']:.1f}")
    if "regression_reference" in results:
        reference = results["regression_reference"]
        print(f"Embedded model: example photo mIoU {100 * reference['example_photo_mean_iou']:.2f}, "
              f"10 regression photos mIoU {100 * reference['photos_mean_iou']:.2f}")  # fmt: skip
    if args.output_json:
        # Merged into what the file holds, so that re-scoring one model keeps the others' entries.
        saved = json.loads(args.output_json.read_text()) if args.output_json.is_file() else {}
        args.output_json.write_text(json.dumps({**saved, **results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
