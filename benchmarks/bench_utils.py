"""Shared by the issue-7 benchmarks (`inference_speed.py`, `large_images.py`, `training_step.py`).

Every script re-invokes itself once per measured variant with `--variant NAME` (and its own options); the child
builds its model, resets the kernel's peak-RSS counter, measures, and prints one JSON line that the parent collects.
So one variant's memory never hides another's, and each peak is that variant's alone. The model builders live here
too, so that every script measures the same GSS and the same peers.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from torch import nn


GSS_PRESET = "gss-mobilenetv2-camvid"


def add_common_arguments(parser: argparse.ArgumentParser, repeats: int, rounds: int) -> None:
    """The options every script shares; `--variant` is internal (the parent passes it to its children)."""
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every measured process")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before the timed ones, per process")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed runs per process (their median counts)")
    parser.add_argument("--rounds", type=int, default=rounds, help="processes per variant, run round-robin")
    parser.add_argument("--variant", help=argparse.SUPPRESS)


def child_arguments(args: argparse.Namespace, *names: str) -> list[str]:
    """The options `names` (attribute names of `args`) as command-line flags, to hand them on to a child."""
    flags = []
    for name in names:
        value = getattr(args, name)
        if value is None:
            continue
        flags.append("--" + name.replace("_", "-"))
        flags += [str(item) for item in value] if isinstance(value, (list, tuple)) else [str(value)]
    return flags


# ------------------------------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------------------------------
def gss_model(model_path: str | None = None, inverse_type: str = "learned", **overrides) -> nn.Module:
    """GSS in eval mode: the CamVid preset with random weights, or a trained folder (`save_pretrained`) in fp32.

    `inverse_type="nearest"` swaps in the training-free X^-1 (GSS-FF) after loading, so that a trained learned-X^-1
    checkpoint also gives its nearest-colour variant. `overrides` are config fields (for example sliding-window
    settings).
    """
    from gss_hf import GSSConfig, GSSForSemanticSegmentation

    torch.manual_seed(0)
    if model_path is None:
        model = GSSForSemanticSegmentation(GSSConfig.from_preset(GSS_PRESET, **overrides))
    else:
        model = GSSForSemanticSegmentation.from_pretrained(model_path, dtype=torch.float32, **overrides)
    if inverse_type != model.config.inverse_type:
        model.set_inverse(inverse_type)
    return model.eval()


def gss_num_labels(model_path: str | None = None) -> int:
    """The classes GSS predicts, which the peers are given too."""
    from gss_hf import GSSConfig

    if model_path is None:
        return GSSConfig.from_preset(GSS_PRESET).num_labels
    return GSSConfig.from_pretrained(model_path).num_labels


def _labels(num_labels: int) -> dict:
    id2label = {index: f"class_{index}" for index in range(num_labels)}
    return {"id2label": id2label, "label2id": {name: index for index, name in id2label.items()}}


def deeplabv3_model(output_stride: int, num_labels: int) -> nn.Module:
    """The trained baseline's architecture (`training/baseline_model.py`), random weights."""
    from training.baseline_model import deeplabv3_mobilenet_v2

    torch.manual_seed(0)
    return deeplabv3_mobilenet_v2(**_labels(num_labels), output_stride=output_stride)


def segformer_b0_model(num_labels: int) -> nn.Module:
    """SegFormer-B0: nvidia/mit-b0's encoder values and the B0 decoder width, random weights (no download)."""
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(0)
    config = SegformerConfig(
        num_channels=3,
        num_encoder_blocks=4,
        depths=[2, 2, 2, 2],
        sr_ratios=[8, 4, 2, 1],
        hidden_sizes=[32, 64, 160, 256],
        patch_sizes=[7, 3, 3, 3],
        strides=[4, 2, 2, 2],
        num_attention_heads=[1, 2, 5, 8],
        mlp_ratios=[4, 4, 4, 4],
        decoder_hidden_size=256,
        **_labels(num_labels),
    )
    return SegformerForSemanticSegmentation(config)


def random_photos(batch: int, height: int, width: int) -> torch.Tensor:
    """Normalised-photo-like inputs, the same in every process (speed does not depend on the values)."""
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(0))


# ------------------------------------------------------------------------------------------------------------------
# Measuring (inside a child)
# ------------------------------------------------------------------------------------------------------------------
def current_rss_mb() -> float:
    """Resident memory of this process now (VmRSS), MB."""
    return _proc_status_mb("VmRSS")


def reset_peak_rss() -> bool:
    """Resets the kernel's peak resident memory (VmHWM) of this process to its current RSS (Linux >= 4.0, writing 5
    to /proc/self/clear_refs). Returns False where that is not possible; `peak_rss_mb` then gives the peak since
    the process started."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM, since the last `reset_peak_rss`), MB."""
    try:
        return _proc_status_mb("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _proc_status_mb(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def timings(step: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Wall times (s) of `repeats` calls of `step`, after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def measure(step: Callable[[], object], warmup: int, repeats: int) -> dict:
    """Median wall time of `step` and the peak RSS of its calls (total, and above the RSS just before them).

    The caller builds its model and inputs first, so `peak_above_baseline_mb` is what the computation itself needs
    (activations, workspaces, outputs, an optimiser's state) and `peak_total_mb` what the process needed.
    """
    exact_peak = reset_peak_rss()
    baseline = current_rss_mb()
    times = timings(step, warmup, repeats)
    peak = peak_rss_mb()
    return {
        "median_s": statistics.median(times),
        "times_s": times,
        "baseline_rss_mb": baseline,
        "peak_total_mb": peak,
        "peak_above_baseline_mb": peak - baseline,
        "peak_counter_reset": exact_peak,
    }


def gmac(function: Callable[[], object]) -> float:
    """Multiply-accumulates (billions) of one call, as torch's FLOP counter counts them (convolutions, matrix
    products, attention; not element-wise work)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        function()
    return counter.get_total_flops() / 2e9


# ------------------------------------------------------------------------------------------------------------------
# Running children and reporting (in the parent)
# ------------------------------------------------------------------------------------------------------------------
def run_variant(script: str, arguments: list[str], variant: str) -> dict:
    """Runs `script` in a fresh interpreter with `--variant variant` and returns the JSON it prints last."""
    command = [sys.executable, script, *arguments, "--variant", variant]
    environment = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    completed = subprocess.run(command, capture_output=True, text=True, env=environment)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run_rounds(script: str, arguments: list[str], variants: list[str], rounds: int, tag: str = "") -> dict[str, dict]:
    """Runs every variant `rounds` times, round-robin, each time in a fresh process, and merges the results.

    On a shared virtual machine a process's speed varies by up to 30% from one process to the next (the spread
    within one process is a few %), so a ratio of two single processes is not stable. The merged `median_s` is the
    median over processes of each process's median, `process_medians_s` lists them all; peaks are the largest over
    the processes. Progress goes to stderr, tagged with `tag`.
    """
    runs = {variant: [] for variant in variants}
    for round_index in range(rounds):
        for variant in variants:
            runs[variant].append(run_variant(script, arguments, variant))
            print(f"# round {round_index + 1}, {variant}{tag}: {runs[variant][-1]['median_s']:.3f} s", file=sys.stderr)
    merged = {}
    for variant, results in runs.items():
        medians = [result["median_s"] for result in results]
        merged[variant] = {
            **results[0],
            "median_s": statistics.median(medians),
            "process_medians_s": medians,
            "peak_total_mb": max(result["peak_total_mb"] for result in results),
            "peak_above_baseline_mb": max(result["peak_above_baseline_mb"] for result in results),
        }
    return merged


def spread(result: dict, scale: float = 1e3) -> str:
    """'min-max' of the per-process medians, in ms by default (`scale=1`: in s, two decimals)."""
    medians = result.get("process_medians_s", [result["median_s"]])
    digits = 0 if scale >= 1e3 else 2
    return f"{min(medians) * scale:.{digits}f}-{max(medians) * scale:.{digits}f}"


def machine_line(threads: int) -> str:
    """The machine, software and load the numbers were taken on (the load average counts other processes too)."""
    return (
        f"Machine: {_cpu_model()}, {os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
        f"Python {platform.python_version()}, torch {torch.__version__}, {threads} torch thread(s), fp32, CPU"
    )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
