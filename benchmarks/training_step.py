"""One training step of GSS stage II (CamVid preset) vs DeepLabV3-MobileNetV2 (output stride 16), same batch and
resolution, CPU.

Measures each model's median step time, images/s and peak resident memory (RSS), and the ratios GSS / DeepLabV3 of
the same run. A step is forward with labels, backward and an AdamW step over the trainable parameters, in train
mode. GSS trains as in stage II: tokenizer and X^-1 frozen (`freeze_untrained_parts`), loss = 0.8 token
cross-entropy against the frozen tokenizer's tokens of the painted label map (the tokenizer encodes the labels inside
the step) + 0.2 auxiliary pixel cross-entropy. DeepLabV3 (as `training/train_baseline.py` builds it) uses
transformers' pixel cross-entropy on its logits up-sampled to the labels. Labels are class ids with an unlabelled
(255) top band and 5% scattered unlabelled pixels. Each variant runs in its own process, `--rounds` times
round-robin (step time: median of the processes' medians, their range in brackets); peak RSS is the largest over
the processes, total and above the process's RSS after imports, model, optimiser and inputs (so the optimiser state,
created at the first step, counts). fp32, random weights.

    python benchmarks/training_step.py                 # batch 8, 256x256, 2 threads, 3 rounds
"""

import argparse
import json
from datetime import date

import torch

from bench_utils import (
    add_common_arguments,
    child_arguments,
    deeplabv3_model,
    gss_model,
    gss_num_labels,
    machine_line,
    measure,
    random_photos,
    run_rounds,
    spread,
)


LABELS = {
    "gss": "GSS stage II (CamVid preset)",
    "deeplabv3": "DeepLabV3-MobileNetV2 (output stride 16)",
}


def measure_variant(variant: str, args: argparse.Namespace) -> dict:
    """One model's training-step time and peak RSS (runs in its own process)."""
    torch.set_num_threads(args.threads)
    num_labels = gss_num_labels()
    model = gss_model() if variant == "gss" else deeplabv3_model(16, num_labels)
    model.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.01)
    height, width = args.size
    pixel_values = random_photos(args.batch, height, width)
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, num_labels, (args.batch, height, width), generator=generator)
    labels[:, : height // 16] = 255
    labels[torch.rand(labels.shape, generator=generator) < 0.05] = 255

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(pixel_values, labels=labels).loss.backward()
        optimizer.step()

    result = measure(step, args.warmup, args.repeats)
    result["trainable_parameters_m"] = sum(p.numel() for p in parameters) / 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("HEIGHT", "WIDTH"),
                        help="multiples of the token stride (4)")  # fmt: skip
    add_common_arguments(parser, repeats=3, rounds=3)
    args = parser.parse_args()
    if args.batch < 2:
        parser.error("--batch must be at least 2: DeepLabV3's image pooling trains BatchNorm on 1x1 maps.")
    if args.variant:
        print(json.dumps(measure_variant(args.variant, args)))
        return

    arguments = child_arguments(args, "batch", "size", "threads", "warmup", "repeats")
    results = run_rounds(__file__, arguments, list(LABELS), args.rounds)
    height, width = args.size
    print(
        f"One training step (forward with labels + backward + AdamW), batch {args.batch}, {height}x{width}, fp32, "
        f"random weights; each variant in {args.rounds} process(es) (round-robin), each the median of "
        f"{args.repeats} steps after {args.warmup} warm-up; step time = median over the processes (their range in "
        f"brackets); {date.today().isoformat()}\n"
    )
    print(
        "| model | trainable parameters (M) | median step (s) | images/s | peak RSS (MB) "
        "| peak RSS above baseline (MB) |"
    )
    print("|---|---|---|---|---|---|")
    for variant, label in LABELS.items():
        result = results[variant]
        print(
            f"| {label} | {result['trainable_parameters_m']:.2f} | {result['median_s']:.2f} ({spread(result, 1)}) "
            f"| {args.batch / result['median_s']:.2f} | {result['peak_total_mb']:.0f} "
            f"| {result['peak_above_baseline_mb']:.0f} |"
        )
    gss, peer = results["gss"], results["deeplabv3"]
    print("\n| GSS / DeepLabV3 | ratio |\n|---|---|")
    print(f"| step time | {gss['median_s'] / peer['median_s']:.2f} |")
    print(f"| peak RSS | {gss['peak_total_mb'] / peer['peak_total_mb']:.2f} |")
    print(f"| peak RSS above baseline | {gss['peak_above_baseline_mb'] / peer['peak_above_baseline_mb']:.2f} |")
    print(f"\n{machine_line(args.threads)}")


if __name__ == "__main__":
    main()
