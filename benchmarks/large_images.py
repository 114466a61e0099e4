"""GSS (CamVid preset) on a Cityscapes-sized 1024x2048 photo, batch 1: whole-image vs sliding-window inference, CPU.

Measures each inference's median time and peak resident memory (RSS: total, and above the process's RSS after
imports, model and input) against the target of at most 3 GB total, and its time relative to whole-image inference
in the same run. Sliding window is `model(pixel_values, sliding_window=True)` with the config's settings: 768x768
crops every 512 pixels (8 crops at 1024x2048), `sliding_window_batch_size` (4) crops per run; the `sliding-1-crop`
variant runs one crop at a time (`sliding_window_batch_size=1`), the least memory sliding window can use. Each
variant runs in its own process, `--rounds` times round-robin (time: median of the processes' medians, their range in
brackets; peak: the largest). fp32, `torch.inference_mode()`, random weights (`--model` loads a trained GSS
folder instead); `--size` measures another photo size (a smaller one for a quick check).

    python benchmarks/large_images.py                     # 1024x2048, 2 threads, 1 warm-up + 2 runs, 1 round
"""

import argparse
import json
from datetime import date

import torch

from bench_utils import (
    add_common_arguments,
    child_arguments,
    gss_model,
    machine_line,
    measure,
    random_photos,
    run_rounds,
    spread,
)


TARGET_MB = 3 * 1024
LABELS = {
    "whole": "whole image",
    "sliding": "sliding window (config)",
    "sliding-1-crop": "sliding window, 1 crop per run",
}


def measure_variant(variant: str, args: argparse.Namespace) -> dict:
    """One inference's time and peak RSS (runs in its own process)."""
    torch.set_num_threads(args.threads)
    overrides = {"sliding_window_batch_size": 1} if variant == "sliding-1-crop" else {}
    model = gss_model(args.model, **overrides)
    pixel_values = random_photos(1, *args.size)
    sliding = variant != "whole"
    with torch.inference_mode():
        result = measure(lambda: model(pixel_values, sliding_window=sliding).logits, args.warmup, args.repeats)
    config = model.config
    result["settings"] = (
        f"crop {config.sliding_window_crop_size}, stride {config.sliding_window_stride}, "
        f"{config.sliding_window_batch_size} per run"
        if sliding
        else "-"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=[1024, 2048], metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--model", help="a trained GSS folder (save_pretrained) instead of random weights")
    add_common_arguments(parser, repeats=2, rounds=1)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure_variant(args.variant, args)))
        return

    arguments = child_arguments(args, "size", "threads", "warmup", "repeats", "model")
    results = run_rounds(__file__, arguments, list(LABELS), args.rounds)
    model_source = f"trained GSS from {args.model}" if args.model else "random weights"
    height, width = args.size
    print(
        f"GSS (gss-mobilenetv2-camvid) at {height}x{width}, batch 1, fp32, torch.inference_mode(), {model_source}; "
        f"each variant in {args.rounds} process(es), each the median of {args.repeats} runs after {args.warmup} "
        f"warm-up (range over the processes in brackets); target: peak RSS <= {TARGET_MB} MB; "
        f"{date.today().isoformat()}\n"
    )
    print(
        "| inference | sliding-window settings | median time (s) | peak RSS (MB) | peak RSS above baseline (MB) "
        "| peak RSS <= 3 GB | time / whole image | peak RSS / whole image |"
    )
    print("|---|---|---|---|---|---|---|---|")
    whole = results["whole"]
    for variant, label in LABELS.items():
        result = results[variant]
        print(
            f"| {label} | {result['settings']} | {result['median_s']:.2f} ({spread(result, 1)}) "
            f"| {result['peak_total_mb']:.0f} | {result['peak_above_baseline_mb']:.0f} "
            f"| {'yes' if result['peak_total_mb'] <= TARGET_MB else 'no'} "
            f"| {result['median_s'] / whole['median_s']:.2f} "
            f"| {result['peak_total_mb'] / whole['peak_total_mb']:.2f} |"
        )
    print(f"\n{machine_line(args.threads)}")


if __name__ == "__main__":
    main()
