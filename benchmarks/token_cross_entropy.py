"""Token cross-entropy at the paper's size: chunked (gss_hf) vs naive full logits, peak memory and time.

One training step of the loss alone (forward + backward) on a (1, channels, h, w) token-feature map with a
V-way 1x1 classifier, as the prior head computes it. Each variant runs in a fresh process so that its peak resident
memory (CPU) or peak allocated memory (CUDA) is its own; times are medians over `--repeats` steps after one warm-up.

    python benchmarks/token_cross_entropy.py                       # V = 8192, 128 x 128 tokens, 2048 channels
    python benchmarks/token_cross_entropy.py --device cuda
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from gss_hf.token_cross_entropy import TOKEN_IGNORE_INDEX, chunked_token_cross_entropy


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # Linux reports KiB


def measure(variant: str, args: argparse.Namespace) -> dict:
    """Runs in its own process: peak memory of one loss step above the inputs, and its median time."""
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = args.device
    features = torch.randn(1, args.channels, args.grid, args.grid, device=device, requires_grad=True)
    weight = torch.randn(args.codebook_size, args.channels, device=device, requires_grad=True)
    bias = torch.zeros(args.codebook_size, device=device, requires_grad=True)
    targets = torch.randint(0, args.codebook_size, (1, args.grid, args.grid), device=device)
    targets[:, : args.grid // 8] = TOKEN_IGNORE_INDEX

    def step() -> None:
        if variant == "naive":
            logits = torch.nn.functional.conv2d(features, weight[:, :, None, None], bias)
            loss = torch.nn.functional.cross_entropy(logits, targets, ignore_index=TOKEN_IGNORE_INDEX)
        else:
            loss = chunked_token_cross_entropy(features, weight, bias, targets, chunk_size=args.chunk_size)
        loss.backward()
        features.grad = weight.grad = bias.grad = None
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = peak_memory_mb(device)
    step()
    peak = peak_memory_mb(device) - baseline
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"variant": variant, "peak_mb": peak, "seconds": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codebook-size", type=int, default=8192)
    parser.add_argument("--grid", type=int, default=128, help="tokens per side (128: a 512x512 crop at stride 4)")
    parser.add_argument("--channels", type=int, default=2048, help="classifier input width (the paper's 2048)")
    parser.add_argument("--chunk-size", type=int, default=1024, help="gss_hf's default `token_chunk_size`")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--variant", choices=["naive", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args)))
        return

    results = {}
    for variant in ("naive", "chunked"):
        command = [sys.executable, __file__, *sys.argv[1:], "--variant", variant]
        results[variant] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    naive, chunked = results["naive"], results["chunked"]
    logits_mb = args.grid**2 * args.codebook_size * 4 / 2**20
    print(
        f"Token cross-entropy, forward + backward: V={args.codebook_size}, {args.grid}x{args.grid} tokens, "
        f"{args.channels} channels, device={args.device}, threads={args.threads} (full logits: {logits_mb:.0f} MB)"
    )
    print("| variant | peak memory above inputs (MB) | time per step (s) |")
    print("|---|---|---|")
    for variant in (naive, chunked):
        print(f"| {variant['variant']} | {variant['peak_mb']:.0f} | {variant['seconds']:.3f} |")
    print(
        f"| chunked / naive | {chunked['peak_mb'] / naive['peak_mb']:.3f} "
        f"({naive['peak_mb'] / chunked['peak_mb']:.1f}x less) | {chunked['seconds'] / naive['seconds']:.2f}x |"
    )


if __name__ == "__main__":
    main()
