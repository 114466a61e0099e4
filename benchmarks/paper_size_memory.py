"""The paper's GSS-FF at full size on a Cityscapes photo: Swin-L prior + OpenAI's DALL-E dVAE (random weights), CPU.

The official code decodes each 768x768 sliding-window crop's 192x192 tokens into a 1536x1536 maskige in one pass
and runs out of memory above 10 GB of GPU memory at batch 1 on Cityscapes (its issue #12). gss_hf decodes in tiles
of `decode_tile_size` tokens whose overlap covers the decoder's receptive field (the result is the same). Measured,
each in its own process, fp32, `torch.inference_mode()`, one crop per run (`sliding_window_batch_size` 1):

- `photo, tiled`: one 1024x2048 photo by sliding window (768 crops, stride 512: 8 crops), the preset's tiles
  (`decode_tile_size`); the target is a peak RSS of at most 6 GB;
- `one crop, whole decoding`: one 768x768 crop (one window) decoded in one pass, as the official code decodes
  every crop: the peer, measured in the same run, per crop.

    python benchmarks/paper_size_memory.py --warmup 0   # about 45 minutes on 2 CPU cores
    python benchmarks/paper_size_memory.py --size 256 512 --crop 256   # a quick check of the script (stride 256)
"""

import argparse
import json
import math
from datetime import date

import torch

from bench_utils import add_common_arguments, child_arguments, machine_line, measure, random_photos, run_rounds
from gss_hf import GSSConfig, GSSForSemanticSegmentation
from gss_hf.modeling_gss import _window_starts


PRESET = "gss-ff-swin-large-cityscapes"
TARGET_MB = 6 * 1024
VARIANTS = {"photo-tiled": "photo, tiled", "crop-whole": "one crop, whole decoding (official)"}


def measure_variant(variant: str, args: argparse.Namespace) -> dict:
    """One inference's time and peak RSS (runs in its own process)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GSSConfig.from_preset(
        PRESET, sliding_window_batch_size=1, sliding_window_crop_size=args.crop,
        sliding_window_stride=min(args.crop, 512),
    )  # fmt: skip
    if variant == "crop-whole":
        config.tokenizer_config["decode_tile_size"] = 0
    model = GSSForSemanticSegmentation(config).eval()
    size = args.size if variant == "photo-tiled" else (args.crop, args.crop)
    pixel_values = random_photos(1, *size)
    with torch.inference_mode():
        result = measure(lambda: model(pixel_values, sliding_window=True).logits, args.warmup, args.repeats)
    result["size"] = f"{size[0]}x{size[1]}"
    stride = config.sliding_window_stride
    result["crops"] = math.prod(len(_window_starts(side, min(args.crop, side), stride)) for side in size)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=[1024, 2048], metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--crop", type=int, default=768, help="sliding-window crop (the preset's 768)")
    add_common_arguments(parser, repeats=1, rounds=1)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure_variant(args.variant, args)))
        return

    arguments = child_arguments(args, "size", "crop", "threads", "warmup", "repeats")
    results = run_rounds(__file__, arguments, list(VARIANTS), args.rounds)
    print(
        f"GSS-FF, {PRESET} (Swin-L, DALL-E dVAE 8192 codes, official 2x route), random weights, batch 1, fp32, "
        f"torch.inference_mode(), sliding window crop {args.crop} stride {min(args.crop, 512)}, one crop per run; "
        f"each variant in "
        f"{args.rounds} process(es), median of {args.repeats} run(s) after {args.warmup} warm-up; target: peak RSS "
        f"<= {TARGET_MB} MB for the photo; {date.today().isoformat()}\n"
    )
    print("| inference | input | crops | time (s) | time per crop (s) | peak RSS (MB) | peak RSS above baseline (MB) |")
    print("|---|---|---|---|---|---|---|")
    for variant, label in VARIANTS.items():
        result = results[variant]
        print(
            f"| {label} | {result['size']} | {result['crops']} | {result['median_s']:.1f} "
            f"| {result['median_s'] / result['crops']:.1f} | {result['peak_total_mb']:.0f} "
            f"| {result['peak_above_baseline_mb']:.0f} |"
        )
    photo, whole = results["photo-tiled"], results["crop-whole"]
    tile_size = GSSConfig.from_preset(PRESET).tokenizer_config["decode_tile_size"]
    print(
        f"\nPhoto peak RSS <= {TARGET_MB} MB: {'yes' if photo['peak_total_mb'] <= TARGET_MB else 'no'}. Tiles of "
        f"{tile_size} tokens against whole decoding, per crop: time "
        f"{photo['median_s'] / photo['crops'] / whole['median_s']:.2f}x, peak RSS above baseline "
        f"{photo['peak_above_baseline_mb'] / whole['peak_above_baseline_mb']:.2f}x."
    )
    print(f"\n{machine_line(args.threads)}")


if __name__ == "__main__":
    main()
