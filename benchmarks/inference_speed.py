"""Inference at CamVid's 360x480, batch 1 and 8: GSS (CamVid preset) vs DeepLabV3-MobileNetV2 and SegFormer-B0, CPU.

Measures, for every model, the median latency, images/s, GMAC/image and peak resident memory (RSS), and the ratios
to DeepLabV3 (output stride 16) measured in the same run; then GSS's per-stage times (backbone, prior head,
auxiliary head, token argmax, tokenizer decode, X^-1).

Every model returns class scores at the input's resolution: DeepLabV3's logits (1/16 or 1/8) and SegFormer's (1/4)
are up-sampled bilinearly to 360x480 inside the timing, as post-processing must; GSS's X^-1 gives them at full
resolution already. fp32, `torch.inference_mode()`, random weights built from configs (speed does not depend on
them; `--model` loads a trained GSS folder instead), a fixed number of torch threads, warm-up runs, then the median
of `--repeats` runs. Each variant runs in its own process, `--rounds` times round-robin (`bench_utils.run_rounds`):
latency is the median of the processes' medians (their range in brackets); peak RSS is the largest over the
processes, total and above the process's RSS after imports, model and inputs.

Variants:
- `gss`: `GSSConfig.from_preset("gss-mobilenetv2-camvid")`, learned X^-1 (GSS-FT-W), whole-image inference;
- `gss-nearest`: the same with the training-free nearest-colour X^-1 (GSS-FF);
- `deeplabv3`: transformers' `MobileNetV2ForSemanticSegmentation` (DeepLabV3 head) on torchvision's MobileNetV2
  config, `output_stride=16`, as the trained baseline (`training/train_baseline.py`) uses: the peer of the ratios;
- `deeplabv3-os8`: the same with output stride 8 (more dilated stages, logits at 1/8);
- `segformer`: `SegformerForSemanticSegmentation` with nvidia/mit-b0's values;
- per-stage breakdown: one more process per batch size times each stage of GSS's whole-image inference on its own,
  on the previous stage's output, calling what `GSSForSemanticSegmentation._prior` and `._decode_prior` call; it
  checks that the stages chained give the model's output.

    python benchmarks/inference_speed.py                                 # batch 1 and 8, 2 threads, 3 rounds
    python benchmarks/inference_speed.py --model outputs/gss-camvid      # a trained GSS instead of random weights
"""

import argparse
import json
import statistics
from collections.abc import Callable
from datetime import date

import torch
from torch import nn

from bench_utils import (
    add_common_arguments,
    child_arguments,
    deeplabv3_model,
    gmac,
    gss_model,
    gss_num_labels,
    machine_line,
    measure,
    random_photos,
    run_rounds,
    run_variant,
    segformer_b0_model,
    spread,
    timings,
)


HEIGHT, WIDTH = 360, 480
PEER = "deeplabv3"
LABELS = {
    "gss": "GSS, learned X^-1",
    "gss-nearest": "GSS, nearest-colour X^-1",
    "deeplabv3": "DeepLabV3-MobileNetV2 (output stride 16)",
    "deeplabv3-os8": "DeepLabV3-MobileNetV2 (output stride 8)",
    "segformer": "SegFormer-B0",
}
STAGES_VARIANT = "gss-stages"
# The stages of whole-image inference with the learned X^-1, in order; their times add up to one inference.
PIPELINE = ("backbone", "prior head", "auxiliary head", "token argmax", "tokenizer decode", "X^-1 (learned)")


def build(variant: str, args: argparse.Namespace) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The model of a variant and its `step(pixel_values) -> class scores at the input's resolution`."""
    if variant.startswith("gss"):
        model = gss_model(args.model, "nearest" if variant == "gss-nearest" else "learned")
        return model, lambda pixel_values: model(pixel_values).logits
    num_labels = gss_num_labels(args.model)
    if variant.startswith("deeplabv3"):
        model = deeplabv3_model(8 if variant == "deeplabv3-os8" else 16, num_labels)
    else:
        model = segformer_b0_model(num_labels)
    model.eval()

    def step(pixel_values: torch.Tensor) -> torch.Tensor:
        logits = model(pixel_values).logits
        return nn.functional.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)

    return model, step


def measure_variant(variant: str, args: argparse.Namespace) -> dict:
    """One model's latency, peak RSS, GMAC and parameters (runs in its own process)."""
    torch.set_num_threads(args.threads)
    model, step = build(variant, args)
    pixel_values = random_photos(args.batch, HEIGHT, WIDTH)
    with torch.inference_mode():
        result = measure(lambda: step(pixel_values), args.warmup, args.repeats)
        if step(pixel_values).shape[-2:] != (HEIGHT, WIDTH):
            raise RuntimeError(f"{variant} did not give class scores at {HEIGHT}x{WIDTH}.")
        result["gmac_per_image"] = gmac(lambda: step(pixel_values)) / args.batch
    result["parameters_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    return result


def measure_stages(args: argparse.Namespace) -> dict:
    """GSS's stages, each timed on its own on the previous stage's output, as `_prior` and `_decode_prior` chain
    them (runs in its own process)."""
    from gss_hf import class_scores_nearest_color
    from gss_hf.token_cross_entropy import chunked_token_argmax

    torch.set_num_threads(args.threads)
    model = gss_model(args.model)
    config = model.config
    pixel_values = random_photos(args.batch, HEIGHT, WIDTH)
    grid = (-(-HEIGHT // config.token_stride), -(-WIDTH // config.token_stride))
    weight, bias = model.prior_head.classifier_weight_and_bias
    with torch.inference_mode():
        features = model.backbone(pixel_values)
        token_features = model.prior_head(features, grid)
        token_ids = chunked_token_argmax(token_features, weight, bias, config.token_chunk_size)
        maskige = model.tokenizer.decode(token_ids)
        logits = model.inverse(maskige)
        stages = {
            "backbone": lambda: model.backbone(pixel_values),
            "prior head": lambda: model.prior_head(features, grid),
            "auxiliary head": lambda: model.auxiliary_head(features, grid),
            "token argmax": lambda: chunked_token_argmax(token_features, weight, bias, config.token_chunk_size),
            "tokenizer decode": lambda: model.tokenizer.decode(token_ids),
            "X^-1 (learned)": lambda: model.inverse(maskige),
            "X^-1 (nearest colour)": lambda: class_scores_nearest_color(maskige, config.palette),
            "whole model": lambda: model(pixel_values),
        }
        # `_decode_prior` resizes the maskige and the class scores only when the decoded grid overshoots the input.
        resize = logits.shape[-2:] != (HEIGHT, WIDTH)
        if resize:
            stages["final resize"] = lambda: (
                nn.functional.interpolate(maskige, size=(HEIGHT, WIDTH), mode="bilinear"),
                nn.functional.interpolate(logits, size=(HEIGHT, WIDTH), mode="bilinear"),
            )
            logits = nn.functional.interpolate(logits, size=(HEIGHT, WIDTH), mode="bilinear")
        output = model(pixel_values)
        if not (torch.equal(output.token_ids, token_ids) and torch.allclose(output.logits, logits)):
            raise RuntimeError("The stages chained no longer give the model's output: update `measure_stages`.")
        timed = {
            name: {
                "median_s": statistics.median(timings(function, args.warmup, args.repeats)),
                "gmac_per_image": gmac(function) / args.batch,
            }
            for name, function in stages.items()
        }
    return {"stages": timed, "final_resize": resize}


def print_tables(args: argparse.Namespace, results: dict, stage_results: dict) -> None:
    """The markdown tables: every model with its ratios to DeepLabV3 (os16), the ratio summary, GSS's stages."""
    model_source = f"trained GSS from {args.model}" if args.model else "random weights"
    print(
        f"Inference at {HEIGHT}x{WIDTH}, fp32, torch.inference_mode(), {model_source}; each variant in {args.rounds} "
        f"process(es) (round-robin), each the median of {args.repeats} runs after {args.warmup} warm-up; latency = "
        f"median over the processes (their range in brackets); ratios against {LABELS[PEER]} of the same run; "
        f"{date.today().isoformat()}\n"
    )
    print(
        "| batch | model | median latency (ms) | images/s | GMAC/image | parameters (M) | peak RSS (MB) "
        "| peak RSS above baseline (MB) | latency / DeepLabV3 os16 | peak RSS / DeepLabV3 os16 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for batch in args.batch_sizes:
        peer = results[batch, PEER]
        for variant in LABELS:
            result = results[batch, variant]
            print(
                f"| {batch} | {LABELS[variant]} | {result['median_s'] * 1e3:.0f} ({spread(result)}) "
                f"| {batch / result['median_s']:.2f} | {result['gmac_per_image']:.1f} "
                f"| {result['parameters_m']:.2f} | {result['peak_total_mb']:.0f} "
                f"| {result['peak_above_baseline_mb']:.0f} | {result['median_s'] / peer['median_s']:.2f} "
                f"| {result['peak_total_mb'] / peer['peak_total_mb']:.2f} |"
            )
    print()
    print("| latency ratio | " + " | ".join(f"batch {batch}" for batch in args.batch_sizes) + " |")
    print("|---|" + "---|" * len(args.batch_sizes))
    for numerator in ("gss", "gss-nearest"):
        for denominator in ("deeplabv3", "deeplabv3-os8", "segformer"):
            cells = [
                f"{results[b, numerator]['median_s'] / results[b, denominator]['median_s']:.2f}"
                for b in args.batch_sizes
            ]
            print(f"| {LABELS[numerator]} / {LABELS[denominator]} | " + " | ".join(cells) + " |")
    print()
    header = " | ".join(f"batch {batch}: ms | batch {batch}: share" for batch in args.batch_sizes)
    print(f"| GSS stage (timed on its own, one process per batch) | GMAC/image | {header} |")
    print("|---|---|" + "---|---|" * len(args.batch_sizes))
    resize = ("final resize",) if stage_results[args.batch_sizes[0]]["final_resize"] else ()
    stages = {batch: stage_results[batch]["stages"] for batch in args.batch_sizes}
    summed = (*PIPELINE, *resize)
    totals = {batch: sum(stages[batch][name]["median_s"] for name in summed) for batch in args.batch_sizes}
    for name in (*summed, "X^-1 (nearest colour)", "whole model"):
        cells = []
        for batch in args.batch_sizes:
            seconds = stages[batch][name]["median_s"]
            cells += [f"{seconds * 1e3:.0f}", f"{seconds / totals[batch]:.0%}" if name in summed else ""]
        print(f"| {name} | {stages[args.batch_sizes[0]][name]['gmac_per_image']:.1f} | " + " | ".join(cells) + " |")
    sums = " | ".join(f"{totals[batch] * 1e3:.0f} | 100%" for batch in args.batch_sizes)
    print(f"| sum of the learned-X^-1 pipeline | | {sums} |")
    if not resize:
        print(f"\nNo final resize: the decoded maskige is already {HEIGHT}x{WIDTH}.")
    print(f"\n{machine_line(args.threads)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--model", help="a trained GSS folder (save_pretrained) instead of random weights")
    add_common_arguments(parser, repeats=3, rounds=3)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        result = measure_stages(args) if args.variant == STAGES_VARIANT else measure_variant(args.variant, args)
        print(json.dumps(result))
        return

    results, stages = {}, {}
    for batch in args.batch_sizes:
        arguments = child_arguments(args, "threads", "warmup", "repeats", "model") + ["--batch", str(batch)]
        merged = run_rounds(__file__, arguments, list(LABELS), args.rounds, tag=f" (batch {batch})")
        results.update({(batch, variant): result for variant, result in merged.items()})
        stages[batch] = run_variant(__file__, arguments, STAGES_VARIANT)
    print_tables(args, results, stages)


if __name__ == "__main__":
    main()
