"""How should the tokenizer reach the 1/4 token grid? Measures both routes on CamVid label maps.

- `direct-4x`: the maskige goes straight into a `VQModel` that down-samples 4x.
- `upsample-2x + 8x` (the official code's route, forced by DALL-E's 8x weights): the label map is up-sampled 2x
  (one-hot, bilinear, argmax, the ignore index as an extra class), painted, tokenised by an 8x `VQModel`; the
  2H x 2W decoded maskige is resized back to H x W.

Both use `default_tokenizer_config(..., base_channels=32, latent_channels=32)`, narrow enough to train on 2 CPU
cores in minutes (twice the width of the `gss-mobilenetv2-camvid` preset's tokenizer).
Both are trained from scratch under the same wall-clock budget on the same crops (Adam 3e-4, MSE in tokenizer
pixel space + VQ loss, dead codes re-seeded from encoder outputs every 25 steps), then evaluated on CamVid `val`:
round-trip mIoU (label map -> maskige -> tokens -> maskige -> nearest colour) and live codes, and the cost of one
encode + decode of a 360x480 image. Run:

    python benchmarks/tokenizer_grid.py --minutes 5
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gss_hf.configuration_gss import default_tokenizer_config
from gss_hf.maskige import (
    IGNORE_INDEX,
    class_scores_nearest_color,
    generate_palette,
    maskige_from_labels,
)
from gss_hf.label_spec import LabelSpec
from gss_hf.modeling_maskige_tokenizer import MaskigeTokenizer


DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"


def load_label_maps(data_dir: Path, split: str) -> torch.Tensor:
    """(N, 360, 480) CamVid label maps, void mapped to the ignore index by the package's `LabelSpec`."""
    meta = json.loads((data_dir / "classes.json").read_text())
    label_spec = LabelSpec(void_value=meta["void_value_in_files"])
    files = sorted((data_dir / f"{split}annot").glob("*.png"))
    return torch.from_numpy(np.stack([label_spec.apply(np.array(Image.open(file))) for file in files]))


def upsample_labels_2x(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The official up-sampling: one-hot (ignore as class K), bilinear 2x, argmax."""
    index = labels.long().masked_fill(labels == IGNORE_INDEX, num_classes)
    one_hot = F.one_hot(index, num_classes + 1).permute(0, 3, 1, 2).float()
    up = F.interpolate(one_hot, scale_factor=2, mode="bilinear", align_corners=False).argmax(1)
    return up.masked_fill(up == num_classes, IGNORE_INDEX)


class Route:
    def __init__(self, name: str, token_stride: int, upsample: int, codebook_size: int):
        config = default_tokenizer_config(codebook_size, token_stride, base_channels=32, latent_channels=32)
        self.name, self.upsample = name, upsample
        self.tokenizer = MaskigeTokenizer.from_config(config)

    def maskige(self, labels: torch.Tensor, palette, ignore_color, num_classes: int) -> torch.Tensor:
        if self.upsample == 2:
            labels = upsample_labels_2x(labels, num_classes)
        return maskige_from_labels(labels, palette, ignore_color)

    def reconstruct(self, labels, palette, ignore_color, num_classes) -> tuple[torch.Tensor, torch.Tensor]:
        """Round trip label map -> (token ids, labels (batch, H, W))."""
        height, width = labels.shape[-2:]
        token_ids = self.tokenizer.encode(self.maskige(labels, palette, ignore_color, num_classes))
        maskige = self.tokenizer.decode(token_ids)
        if self.upsample == 2:
            maskige = F.interpolate(maskige, size=(height, width), mode="bilinear", align_corners=False)
        return token_ids, class_scores_nearest_color(maskige, palette).argmax(1)


def train(
    route: Route, labels: torch.Tensor, palette, ignore_color, num_classes, minutes: float, crop: int, batch: int
) -> tuple[int, float]:
    tokenizer = route.tokenizer.train()
    optimizer = torch.optim.Adam(tokenizer.parameters(), lr=3e-4)
    usage = torch.zeros(tokenizer.codebook_size, dtype=torch.long)
    generator = torch.Generator().manual_seed(0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < minutes * 60:
        index = torch.randint(len(labels), (batch,), generator=generator)
        top = torch.randint(labels.shape[1] - crop + 1, (1,), generator=generator).item()
        left = torch.randint(labels.shape[2] - crop + 1, (1,), generator=generator).item()
        crops = labels[index, top : top + crop, left : left + crop]
        maskige = route.maskige(crops, palette, ignore_color, num_classes)
        outputs = tokenizer(maskige, reconstruction_weight=10.0)  # the stage-I loss of training/train_posterior.py
        optimizer.zero_grad()
        outputs.loss.backward()
        optimizer.step()
        usage += torch.bincount(outputs.token_ids.flatten(), minlength=tokenizer.codebook_size)
        steps += 1
        if steps % 25 == 0:
            tokenizer.reseed_dead_codes(usage, outputs.latents, torch.Generator().manual_seed(steps))
            usage.zero_()
    return steps, time.perf_counter() - start


@torch.no_grad()
def evaluate(route: Route, labels, palette, ignore_color, num_classes):
    tokenizer = route.tokenizer.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    codes = torch.zeros(tokenizer.codebook_size, dtype=torch.long)
    for start in range(0, len(labels), 4):
        batch = labels[start : start + 4]
        token_ids, predicted = route.reconstruct(batch, palette, ignore_color, num_classes)
        codes += torch.bincount(token_ids.flatten(), minlength=tokenizer.codebook_size)
        valid = batch != IGNORE_INDEX
        confusion += torch.bincount(
            batch[valid].long() * num_classes + predicted[valid], minlength=num_classes**2
        ).reshape(num_classes, num_classes)
    intersection = confusion.diag().float()
    union = confusion.sum(0) + confusion.sum(1) - confusion.diag()
    iou = intersection / union.clamp(min=1)
    return 100 * iou.mean().item(), 100 * iou.min().item(), int((codes > 0).sum())


@torch.no_grad()
def time_round_trip(route: Route, labels, palette, ignore_color, num_classes, repeats: int = 5) -> float:
    route.tokenizer.eval()
    route.reconstruct(labels[:1], palette, ignore_color, num_classes)  # warm-up
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        route.reconstruct(labels[i : i + 1], palette, ignore_color, num_classes)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget of each route")
    parser.add_argument("--crop", type=int, default=96, help="crop side at the original resolution")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--codebook_size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    num_classes = len(json.loads((args.data_dir / "classes.json").read_text())["id2label"])
    palette, ignore_color = generate_palette(num_classes), [0, 0, 0]
    train_labels, val_labels = load_label_maps(args.data_dir, "train"), load_label_maps(args.data_dir, "val")

    rows = []
    for name, stride, upsample in (("direct-4x", 4, 1), ("upsample-2x + 8x", 8, 2)):
        torch.manual_seed(0)
        route = Route(name, stride, upsample, args.codebook_size)
        steps, seconds = train(
            route, train_labels, palette, ignore_color, num_classes, args.minutes, args.crop, args.batch_size
        )
        miou, worst_iou, live = evaluate(route, val_labels, palette, ignore_color, num_classes)
        latency = time_round_trip(route, val_labels, palette, ignore_color, num_classes)
        params = sum(p.numel() for p in route.tokenizer.parameters()) / 1e6
        rows.append((name, params, steps, seconds / max(steps, 1), miou, worst_iou, live, latency))
        print(f"done: {name}", flush=True)

    base_latency, base_step = rows[0][7], rows[0][3]
    print(f"\nCamVid val, {len(val_labels)} label maps at 360x480, {args.minutes:g} min of training per route, "
          f"{args.batch_size} crops of {args.crop}px, {args.threads} threads\n")
    print("| route | params (M) | train steps | s/step | step ratio | recon mIoU | worst class IoU | live codes "
          "| encode+decode ms | latency ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, params, steps, step_s, miou, worst, live, latency in rows:
        print(f"| {name} | {params:.2f} | {steps} | {step_s:.2f} | {step_s / base_step:.2f} | {miou:.1f} | "
              f"{worst:.1f} | {live} | {latency:.0f} | {latency / base_latency:.2f} |")


if __name__ == "__main__":
    main()
