"""How CamVid-like the label maps of the learned token prior are, and how well it completes erased maps.

    python benchmarks/generation.py --model gss_hf/pretrained/gss-mobilenetv2-camvid \
        --output_json benchmarks/generation_results.json --pictures_dir examples

Unconditional generation: `--num_maps` (256) maps drawn from the model's `token_prior` subfolder
(`sample_label_maps`), compared with the CamVid `val` label maps resized to the prior's size (96x128, nearest
neighbour; unlabelled pixels left out) by
- the total-variation distance of the class frequencies,
- the mean over rows of the total-variation distance of each row's class distribution (layout: sky on top, road
  below),
- connected components (4-neighbour) per map, and the mean over classes of the relative difference of each class's
  components per map from val's,
each also for the paper's uniform prior (uniformly random tokens, decoded) and for the `train` maps, which are the
floor: two samples of the same distribution still differ by that much.
Completion: every val map with a region erased (the centre box, half the height and width; the right half) is filled
by `complete_label_map` and, as the reference, by copying each erased pixel's nearest kept pixel; scored by the
mIoU over the erased labelled pixels.
With `--pictures_dir`, writes `generated_label_maps.png` (the first 8 maps) and `completed_label_maps.png` (val maps,
erased, completed by the prior, filled from the nearest pixel).
"""

import argparse
import json
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from scipy import ndimage

from gss_hf import GSSImageProcessor, complete_label_map, sample_label_maps
from gss_hf.generate_cli import load_models
from gss_hf.segment_cli import class_colors
from gss_hf.modeling_token_prior import known_outside_region, labels_from_maskige
from training.data import CAMVID_VOID_VALUE, load_segmentation_splits
from training.metrics import StreamingConfusionMatrix
from training.train_token_prior import ResizedLabelMaps

from camvid_runs import CAMVID, require_camvid


REGIONS = ("centre box", "right half")  # two of ERASABLE_REGIONS


def camvid_label_maps(split: str, size: tuple[int, int], num_labels: int, ignore_index: int) -> np.ndarray:
    """(N, H, W) int64 label maps of a CamVid split resized to `size`, unlabelled pixels at `ignore_index`."""
    processor = GSSImageProcessor(do_resize=False, void_value=CAMVID_VOID_VALUE)
    if processor.label_spec.ignore_index != ignore_index:
        raise ValueError(f"The processor's ignore index {processor.label_spec.ignore_index} is not {ignore_index}.")
    maps = ResizedLabelMaps(load_segmentation_splits(data_dir=str(CAMVID))[split], processor, num_labels, size, 0, 0.0)
    return np.stack([maps[0, index]["labels"].numpy() for index in range(len(maps))])


def class_frequencies(maps: np.ndarray, num_labels: int) -> np.ndarray:
    """(num_labels,) fraction of the labelled pixels of each class (values outside 0..K-1 are left out)."""
    counts = np.bincount(maps[(maps >= 0) & (maps < num_labels)], minlength=num_labels).astype(float)
    return counts / counts.sum()


def row_distributions(maps: np.ndarray, num_labels: int) -> np.ndarray:
    """(H, num_labels): per image row, the class distribution of its labelled pixels over all maps."""
    return np.stack([class_frequencies(maps[:, row], num_labels) for row in range(maps.shape[1])])


def components_per_map(maps: np.ndarray, num_labels: int) -> np.ndarray:
    """(num_labels,) mean number of 4-connected components of each class per map."""
    counts = np.zeros(num_labels)
    for label_map in maps:
        for label in range(num_labels):
            counts[label] += ndimage.label(label_map == label)[1]
    return counts / len(maps)


def distribution_scores(maps: np.ndarray, reference: dict, num_labels: int) -> dict:
    """The three distances of `maps` from the reference statistics (`reference_statistics` of val)."""
    frequencies = class_frequencies(maps, num_labels)
    rows = row_distributions(maps, num_labels)
    components = components_per_map(maps, num_labels)
    present = reference["components"] > 0
    return {
        "class_frequency_tv": 0.5 * np.abs(frequencies - reference["frequencies"]).sum(),
        "row_layout_tv": (0.5 * np.abs(rows - reference["rows"]).sum(axis=1)).mean(),
        "components_per_map": components.sum(),
        "components_relative_difference": (
            np.abs(components - reference["components"])[present] / reference["components"][present]
        ).mean(),
    }


def reference_statistics(maps: np.ndarray, num_labels: int) -> dict:
    return {
        "frequencies": class_frequencies(maps, num_labels),
        "rows": row_distributions(maps, num_labels),
        "components": components_per_map(maps, num_labels),
    }


def nearest_pixel_fill(label_map: np.ndarray, known: np.ndarray, ignore_index: int) -> np.ndarray:
    """Every pixel outside `known`, or unlabelled, takes the label of the nearest known labelled pixel."""
    source = known & (label_map != ignore_index)
    _, (rows, columns) = ndimage.distance_transform_edt(~source, return_indices=True)
    return label_map[rows, columns]


def painted(maps: np.ndarray, colors: np.ndarray, scale: int = 2) -> PIL.Image.Image:
    """A row of label maps in their class colours (unlabelled: the ignore colour), `scale` times enlarged, 4 px
    apart."""
    height, width = maps.shape[1:]
    strip = np.full((height, (width + 4) * len(maps) - 4, 3), 255, dtype=np.uint8)
    for index, label_map in enumerate(maps):
        strip[:, index * (width + 4) : index * (width + 4) + width] = colors[np.clip(label_map, 0, len(colors) - 1)]
    image = PIL.Image.fromarray(strip)
    return image.resize((image.width * scale, image.height * scale), PIL.Image.NEAREST)


def in_chunks(count: int, draw, chunk: int = 32) -> np.ndarray:
    """`count` label maps from `draw(n)` ((n, H, W) tensors), `chunk` at a time to bound the memory."""
    return torch.cat([draw(min(chunk, count - start)) for start in range(0, count, chunk)]).numpy()


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="A GSS model folder with a token_prior subfolder.")
    parser.add_argument("--num_maps", type=int, default=256)
    parser.add_argument("--num_steps", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output_json", type=Path)
    parser.add_argument("--pictures_dir", type=Path)
    args = parser.parse_args()
    require_camvid()
    torch.set_num_threads(args.threads)

    model, prior = load_models(args.model)
    config, tokenizer = model.config, model.tokenizer
    stride = tokenizer.token_stride
    size = (prior.config.grid_height * stride, prior.config.grid_width * stride)
    num_labels, ignore = config.num_labels, config.ignore_index
    val = camvid_label_maps("validation", size, num_labels, ignore)
    reference = reference_statistics(val, num_labels)

    generator = torch.Generator().manual_seed(args.seed)
    generated = in_chunks(args.num_maps, lambda count: sample_label_maps(
        prior, tokenizer, config.palette, count, args.num_steps, args.temperature, generator)[0])  # fmt: skip
    grid = (prior.config.grid_height, prior.config.grid_width)
    uniform = in_chunks(args.num_maps, lambda count: labels_from_maskige(
        tokenizer.decode(torch.randint(0, tokenizer.codebook_size, (count, *grid), generator=generator)),
        config.palette))  # fmt: skip
    train = camvid_label_maps("train", size, num_labels, ignore)
    sources = {"learned token prior": generated, "uniform prior (the paper's)": uniform, "train maps (floor)": train}
    generation = {name: distribution_scores(maps, reference, num_labels) for name, maps in sources.items()}

    completion, pictures = {}, []
    for region in REGIONS:
        known = known_outside_region(size, region).numpy()
        matrices = {name: StreamingConfusionMatrix(num_labels, ignore) for name in ("token prior", "nearest pixel")}
        for index, label_map in enumerate(val):
            filled = complete_label_map(
                prior, tokenizer, config.palette, config.ignore_color, torch.from_numpy(label_map),
                torch.from_numpy(known), num_steps=args.num_steps, temperature=args.temperature,
                generator=generator, ignore_index=ignore,
            ).numpy()  # fmt: skip
            nearest = nearest_pixel_fill(label_map, known, ignore)
            truth = torch.from_numpy(np.where(known, ignore, label_map))[None]
            matrices["token prior"].update(torch.from_numpy(filled)[None], truth)
            matrices["nearest pixel"].update(torch.from_numpy(nearest)[None], truth)
            if index < 2:
                pictures.append(np.stack([label_map, np.where(known, label_map, ignore), filled, nearest]))
        completion[region] = {name: m.compute(config.id2label)["mean_iou"] for name, m in matrices.items()}

    print(f"CamVid val label maps at {size[0]}x{size[1]}; {args.num_maps} generated maps, {args.num_steps} steps, "
          f"temperature {args.temperature:g}, seed {args.seed}. Lower is closer to val; val has "
          f"{components_per_map(val, num_labels).sum():.1f} components per map.\n")  # fmt: skip
    print("| maps | class frequency TV | row layout TV | components per map | components, rel. difference |")
    print("|---|---|---|---|---|")
    for name, scores in generation.items():
        print(f"| {name} | {scores['class_frequency_tv']:.3f} | {scores['row_layout_tv']:.3f} | "
              f"{scores['components_per_map']:.1f} | {scores['components_relative_difference']:.2f} |")  # fmt: skip
    print("\n| erased region (val maps) | token prior mIoU | nearest kept pixel mIoU |\n|---|---|---|")
    for region, scores in completion.items():
        print(f"| {region} | {100 * scores['token prior']:.2f} | {100 * scores['nearest pixel']:.2f} |")
    if args.pictures_dir:
        colors = class_colors(model)
        painted(generated[:8], colors).save(args.pictures_dir / "generated_label_maps.png")
        rows = [np.asarray(painted(maps, colors)) for maps in pictures]
        PIL.Image.fromarray(np.concatenate(rows, axis=0)).save(args.pictures_dir / "completed_label_maps.png")
    if args.output_json:
        record = {"arguments": {key: str(value) for key, value in vars(args).items()},
                  "generation": generation, "completion": completion}  # fmt: skip
        args.output_json.write_text(json.dumps(record, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
