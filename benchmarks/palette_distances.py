"""Minimum pairwise RGB distance of the generated palettes beside the official ones. Run:

    python benchmarks/palette_distances.py

Distances include the ignore colour (a class must not be mistaken for "unlabelled" either). The official palettes
are the ones shipped in `gss_hf.official_palettes`; CamVid's is its usual colour table, read from the shared data
folder when it is there.
"""

import json
import time
from pathlib import Path

from gss_hf.maskige import generate_palette, min_pairwise_distance, preset_palette


CAMVID_CLASSES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid" / "classes.json"


def official_palettes() -> dict[int, tuple[str, list, list]]:
    """K -> (name, class colours, ignore colour) of the official palettes at hand."""
    palettes = {}
    if CAMVID_CLASSES.exists():
        palettes[11] = ("CamVid (SegNet colours)", json.loads(CAMVID_CLASSES.read_text())["palette"], [0, 0, 0])
    for name, label in (("cityscapes", "Cityscapes"), ("ade20k", "ADE20K"), ("mseg", "MSeg")):
        colors, ignore_color = preset_palette(name)
        palettes[len(colors)] = (label, colors, ignore_color)
    return palettes


def main():
    print("| K | official palette | official min distance | generated min distance | ratio | generator time (s) |")
    print("|---|---|---|---|---|---|")
    for num_classes, (name, colors, ignore_color) in sorted(official_palettes().items()):
        start = time.perf_counter()
        generated = generate_palette(num_classes, ignore_color)
        seconds = time.perf_counter() - start
        official = min_pairwise_distance(colors + [ignore_color])
        ours = min_pairwise_distance(generated + [ignore_color])
        print(f"| {num_classes} | {name} | {official:.2f} | {ours:.2f} | {ours / official:.1f}x | {seconds:.2f} |")
    start = time.perf_counter()
    largest = generate_palette(1024)
    print(f"| 1024 | - | - | {min_pairwise_distance(largest + [[0, 0, 0]]):.2f} | - | "
          f"{time.perf_counter() - start:.2f} |")


if __name__ == "__main__":
    main()
