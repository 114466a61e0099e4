"""Maskiges: label maps painted as RGB images, and the colour maps X and X^-1 between the two.

A maskige paints class `k` with palette row `k` and unlabelled pixels (the ignore index) with the ignore colour, so
that a generic image tokenizer can turn label maps into discrete tokens. GSS assumes the class colours are as far
apart as possible in RGB ("maximal distance assumption"): the training-free inverse X^-1 then only has to find the
nearest palette colour, and tokenizer errors of up to half the minimum distance are forgiven.

Everything here is pure tensor code that runs on any device; the palettes themselves are plain lists of RGB rows.
"""

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .official_palettes import OFFICIAL_PALETTES


IGNORE_INDEX = 255
MAX_GENERATED_CLASSES = 1024
# The DALL-E pixel map keeps tokenizer targets away from the saturated ends of its sigmoid output.
TOKENIZER_PIXEL_SCALE = 0.8
TOKENIZER_PIXEL_OFFSET = 0.1

ColorRows = list[list[int]]


# ----------------------------------------------------------------------------------------------------------------
# Palettes
# ----------------------------------------------------------------------------------------------------------------
def preset_palette(name: str) -> tuple[ColorRows, list[int]]:
    """Returns the official palette `name` ("cityscapes", "ade20k" or "mseg") as (class colours, ignore colour)."""
    if name not in OFFICIAL_PALETTES:
        raise ValueError(f"Unknown palette preset {name!r}; choose one of {sorted(OFFICIAL_PALETTES)}.")
    rows = [list(row) for row in OFFICIAL_PALETTES[name]["palette"]]
    return rows[:-1], rows[-1]


def preset_class_names(name: str) -> list[str] | None:
    """Class names that come with a palette preset (None where the preset ships none, as MSeg)."""
    preset_palette(name)
    names = OFFICIAL_PALETTES[name]["class_names"]
    return None if names is None else [n.strip() for n in names]


def check_color_rows(rows, field: str) -> None:
    """Raises `ValueError` naming `field` unless `rows` is a list of [R, G, B] rows of integers in 0..255."""
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        raise ValueError(f"`{field}` must be a list of [R, G, B] rows, got {type(rows).__name__}.")
    for index, row in enumerate(rows):
        if isinstance(row, (str, bytes)) or not isinstance(row, Sequence) or len(row) != 3:
            raise ValueError(f"`{field}` row {index} must have exactly 3 values (R, G, B), got {row!r}.")
        for value in row:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= 255:
                raise ValueError(f"`{field}` row {index} must hold integers in 0..255, got {row!r}.")


def check_palette(class_colors: ColorRows, ignore_color: Sequence[int], num_classes: int) -> None:
    """Raises `ValueError` naming the field if the palette cannot be inverted unambiguously."""
    check_color_rows(class_colors, "palette")
    check_color_rows([ignore_color], "ignore_color")
    if len(class_colors) != num_classes:
        raise ValueError(
            f"`palette` has {len(class_colors)} rows but there are {num_classes} labels in `id2label`: "
            "give one colour per class (the ignore colour goes in `ignore_color`)."
        )
    first_index: dict[tuple[int, ...], int] = {}
    for index, row in enumerate(class_colors):
        key = tuple(int(v) for v in row)
        if key in first_index:
            raise ValueError(
                f"`palette` has duplicate colour {list(key)} for classes {first_index[key]} and {index}: "
                "X^-1 could not tell them apart."
            )
        first_index[key] = index
    ignore_key = tuple(int(v) for v in ignore_color)
    if ignore_key in first_index:
        raise ValueError(
            f"`palette` colour of class {first_index[ignore_key]} equals `ignore_color` {list(ignore_key)}: "
            "labelled and unlabelled pixels would look the same."
        )


def min_pairwise_distance(colors: Sequence[Sequence[int]]) -> float:
    """Smallest Euclidean RGB distance between two rows of `colors` (inf for fewer than two rows)."""
    points = np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    if len(points) < 2:
        return float("inf")
    squared = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(squared, np.inf)
    return float(np.sqrt(squared.min()))


def generate_palette(num_classes: int, ignore_color: Sequence[int] = (0, 0, 0)) -> ColorRows:
    """A deterministic maximal-distance palette: `num_classes` RGB rows spread as far apart as possible.

    Algorithm: greedy farthest-point sampling (Gonzalez), seeded with the ignore colour so that every class colour
    is pushed away from it as well, run over several candidate sets; the set whose palette has the largest minimum
    distance (ignore colour included) wins. Farthest-point sampling alone is a 2-approximation of the max-min
    optimum, but on a fine grid it leaves irregular gaps; the candidate sets add the three cubic lattices (simple,
    body-centred, face-centred, the last being the densest sphere packing) at the widest spacing that still holds
    `num_classes` points, anchored at the ignore colour and at black. Picking from a lattice guarantees its spacing
    as the minimum distance: 59.4 at K = 150 against 47.2 for sampling on a 5-step grid, and 20.0 for the official
    ADE20K palette. Runs in well under a second for K <= 1024; results are cached.

    Args:
        num_classes: number of class colours K, 1..1024.
        ignore_color: the colour painted on unlabelled pixels, which the class colours must avoid.

    Returns:
        K rows [R, G, B] of integers in 0..255, no two equal and none equal to `ignore_color`.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"`num_classes` must be an integer, got {num_classes!r}.")
    if not 1 <= num_classes <= MAX_GENERATED_CLASSES:
        raise ValueError(f"`num_classes` must be in 1..{MAX_GENERATED_CLASSES}, got {num_classes}.")
    check_color_rows([ignore_color], "ignore_color")
    rows = _generate_palette_cached(int(num_classes), tuple(int(v) for v in ignore_color))
    return [list(row) for row in rows]


@lru_cache(maxsize=64)
def _generate_palette_cached(num_classes: int, ignore_color: tuple[int, int, int]) -> tuple[tuple[int, ...], ...]:
    ignore = np.asarray(ignore_color, dtype=np.float64)
    levels = np.arange(0.0, 256.0, 17.0)  # 16 levels per channel, both ends included
    candidate_sets = [np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)]
    for lattice in ("simple", "body_centred", "face_centred"):
        for anchor in (ignore, np.zeros(3)):
            candidate_sets.append(_widest_lattice(lattice, anchor, ignore, num_classes))

    best_rows, best_distance = None, -1.0
    for candidates in candidate_sets:
        rows = np.rint(_farthest_point_sampling(candidates, ignore, num_classes)).astype(np.int64)
        distance = min_pairwise_distance(np.vstack([rows, ignore[None]]))
        if distance > best_distance:
            best_rows, best_distance = rows, distance
    return tuple(tuple(int(v) for v in row) for row in best_rows)


def _lattice_points(lattice: str, spacing: float, anchor: np.ndarray) -> np.ndarray:
    """Points of a cubic lattice through `anchor` with the given index spacing, inside the RGB cube."""
    low = np.ceil(-anchor / spacing - 1e-9)
    high = np.floor((255.0 - anchor) / spacing + 1e-9)
    axes = [np.arange(low[c], high[c] + 1) for c in range(3)]
    indices = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3).astype(np.int64)
    if lattice == "face_centred":
        indices = indices[indices.sum(1) % 2 == 0]
    elif lattice == "body_centred":
        parity = indices % 2
        indices = indices[(parity == 0).all(1) | (parity == 1).all(1)]
    return np.clip(anchor + spacing * indices, 0.0, 255.0)


def _widest_lattice(lattice: str, anchor: np.ndarray, ignore: np.ndarray, num_points: int) -> np.ndarray:
    """The lattice points at the widest spacing that offers `num_points` points distinct from the ignore colour.

    The number of points only changes where a lattice plane crosses a face of the RGB cube, that is at spacings
    `distance_to_face / n`, so only those spacings need to be tried.
    """
    distances_to_faces = np.concatenate([anchor, 255.0 - anchor])
    steps = np.arange(1, 2 * MAX_GENERATED_CLASSES + 1, dtype=np.float64)
    spacings = np.unique((distances_to_faces[:, None] / steps[None, :]).ravel())
    for spacing in spacings[::-1]:
        if spacing <= 0:
            continue
        points = _lattice_points(lattice, spacing, anchor)
        points = points[((points - ignore) ** 2).sum(1) > 0.25]
        if len(points) >= num_points:
            return points
    raise AssertionError("unreachable: a fine enough lattice always holds enough points")


def _farthest_point_sampling(candidates: np.ndarray, seed: np.ndarray, num_points: int) -> np.ndarray:
    """Greedily picks `num_points` candidates, each the farthest from the seed and all picked before it."""
    nearest_squared = ((candidates - seed) ** 2).sum(1)
    picked = []
    for _ in range(num_points):
        index = int(np.argmax(nearest_squared))  # ties go to the first candidate: deterministic
        picked.append(index)
        nearest_squared = np.minimum(nearest_squared, ((candidates - candidates[index]) ** 2).sum(1))
    return candidates[picked]


# ----------------------------------------------------------------------------------------------------------------
# X: label map -> maskige
# ----------------------------------------------------------------------------------------------------------------
def maskige_from_labels(
    labels: torch.Tensor,
    palette: torch.Tensor | ColorRows,
    ignore_color: torch.Tensor | Sequence[int],
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """Paints label maps as maskiges (the colour map X), after checking every label.

    Args:
        labels: (batch, height, width) integer class ids in 0..K-1, or `ignore_index` for unlabelled pixels.
        palette: (K, 3) class colours in 0..255.
        ignore_color: (3,) colour painted where `labels == ignore_index`.
        ignore_index: label value of unlabelled pixels.

    Returns:
        (batch, 3, height, width) uint8 maskige on the device of `labels`.
    """
    colors = _palette_tensor(palette, labels.device)
    check_labels(labels, colors.shape[0], ignore_index)
    return _paint(labels, colors, ignore_color, ignore_index)


def paint_maskige(
    labels: torch.Tensor,
    palette: torch.Tensor | ColorRows,
    ignore_color: torch.Tensor | Sequence[int],
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """`maskige_from_labels` without the label check (a host synchronisation), for labels already checked, as
    `GSSForSemanticSegmentation.forward` checks its labels once per call."""
    return _paint(labels, _palette_tensor(palette, labels.device), ignore_color, ignore_index)


def _paint(labels: torch.Tensor, colors: torch.Tensor, ignore_color, ignore_index: int) -> torch.Tensor:
    num_classes = colors.shape[0]
    labels = labels.long()
    unlabelled = labels == ignore_index
    lookup = torch.cat([colors, _palette_tensor([ignore_color], labels.device)], dim=0)
    return lookup[labels.masked_fill(unlabelled, num_classes)].permute(0, 3, 1, 2).contiguous()


def upsample_labels_2x(labels: torch.Tensor) -> torch.Tensor:
    """Up-samples label maps 2x as the official code does before DALL-E's 8x dVAE (route "official_2x").

    The official code resizes the one-hot maps of the K classes and the ignore label bilinearly and takes the argmax.
    At exactly 2x (`align_corners=False`) every output pixel weighs its nearest input pixel 9/16 and the other three
    7/16 together (3/4 against 1/4 at the border), so the nearest input pixel always wins: the result is each label
    repeated 2x2, computed here without the (batch, K + 1, 2H, 2W) one-hot tensor (600 MB for one ADE20K 512x512
    crop). `tests/test_official_route.py` checks it against the official steps and the official code's tensors.

    Args:
        labels: (batch, H, W) class ids or the ignore index.

    Returns:
        (batch, 2H, 2W) labels.
    """
    return labels.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


# ----------------------------------------------------------------------------------------------------------------
# X^-1, training-free: maskige -> class scores
# ----------------------------------------------------------------------------------------------------------------
def class_scores_nearest_color(maskige: torch.Tensor, palette: torch.Tensor | ColorRows) -> torch.Tensor:
    """GSS-FF's X^-1: scores each class by minus the squared RGB distance to its palette colour.

    The ignore colour is not a class, so every pixel gets a class (as the official code does). Integer-valued
    maskiges give exact scores in float32, so their argmax recovers labels exactly.

    Args:
        maskige: (batch, 3, height, width) colours in 0..255, uint8 or floating.
        palette: (K, 3) class colours in 0..255.

    Returns:
        (batch, K, height, width) float scores (higher is closer); argmax over dim 1 is the nearest colour.
    """
    check_maskige(maskige)
    pixels = maskige.float() if not maskige.is_floating_point() else maskige
    colors = _palette_tensor(palette, pixels.device).to(pixels.dtype)
    cross = torch.einsum("bchw,kc->bkhw", pixels, colors)
    squared_distance = (pixels**2).sum(1, keepdim=True) - 2 * cross + (colors**2).sum(1)[None, :, None, None]
    return -squared_distance


def nearest_color_one_hot(maskige: torch.Tensor, palette: torch.Tensor | ColorRows) -> torch.Tensor:
    """GSS-FF's X^-1 as the official code computes it: the one-hot of the nearest palette colour.

    Distances are the exact `((pixel - colour) ** 2).sum()` (not the expanded form of `class_scores_nearest_color`,
    whose rounding can flip near-ties), one class at a time so that memory stays at a few (batch, H, W) maps; a tie
    goes to the lowest class, as `argmin` does.

    Args:
        maskige: (batch, 3, height, width) colours in 0..255, uint8 or floating.
        palette: (K, 3) class colours in 0..255.

    Returns:
        (batch, K, height, width) one-hot votes in the maskige's floating dtype.
    """
    check_maskige(maskige)
    pixels = maskige.float() if not maskige.is_floating_point() else maskige
    colors = _palette_tensor(palette, pixels.device).to(pixels.dtype)
    best_distance = torch.full_like(pixels[:, 0], float("inf"))
    best_class = torch.zeros(best_distance.shape, dtype=torch.long, device=pixels.device)
    for index, color in enumerate(colors):
        distance = ((pixels - color[None, :, None, None]) ** 2).sum(1)
        closer = distance < best_distance
        best_distance = torch.where(closer, distance, best_distance)
        best_class = best_class.masked_fill(closer, index)
    one_hot = nn.functional.one_hot(best_class, len(colors))
    return one_hot.permute(0, 3, 1, 2).to(pixels.dtype)


def least_squares_inverse(palette: torch.Tensor | ColorRows) -> torch.Tensor:
    """The least-squares inverse (beta^T beta)^-1 beta^T of a (K, 3) palette beta, shape (3, K).

    The paper's printed pseudo-inverse; a colour row x times this matrix gives K class scores. Unlike the nearest
    colour it is linear, so for K > 3 its argmax does not always return the class whose colour was painted: it is
    offered for fidelity to the paper, not as the default.
    """
    colors = _palette_tensor(palette, None).double()
    gram = colors.T @ colors
    if colors.shape[0] < 3 or torch.linalg.matrix_rank(gram) < 3:
        raise ValueError("The least-squares inverse needs a palette whose colours span RGB (rank 3).")
    return torch.linalg.solve(gram, colors.T)


def class_scores_least_squares(maskige: torch.Tensor, palette: torch.Tensor | ColorRows) -> torch.Tensor:
    """Class scores x (beta^T beta)^-1 beta^T for every pixel x: (batch, 3, H, W) -> (batch, K, H, W)."""
    check_maskige(maskige)
    pixels = maskige.float() if not maskige.is_floating_point() else maskige
    inverse = least_squares_inverse(palette).to(device=pixels.device, dtype=pixels.dtype)
    return torch.einsum("bchw,ck->bkhw", pixels, inverse)


# ----------------------------------------------------------------------------------------------------------------
# The tokenizer's pixel map (DALL-E's): maskige in 0..255 <-> tokenizer pixels in [0.1, 0.9]
# ----------------------------------------------------------------------------------------------------------------
def maskige_to_tokenizer_pixels(maskige: torch.Tensor) -> torch.Tensor:
    """(batch, 3, H, W) maskige in 0..255 -> float pixels `0.8 * maskige / 255 + 0.1` in [0.1, 0.9]."""
    check_maskige(maskige)
    return maskige.float() / 255.0 * TOKENIZER_PIXEL_SCALE + TOKENIZER_PIXEL_OFFSET


def tokenizer_pixels_to_maskige(pixels: torch.Tensor) -> torch.Tensor:
    """Inverse of `maskige_to_tokenizer_pixels`: clamp((pixels - 0.1) / 0.8, 0, 1) * 255, as float."""
    check_maskige(pixels)
    unit = ((pixels - TOKENIZER_PIXEL_OFFSET) / TOKENIZER_PIXEL_SCALE).clamp(0.0, 1.0)
    return unit * 255.0


# ----------------------------------------------------------------------------------------------------------------
# Checks shared by the functions above
# ----------------------------------------------------------------------------------------------------------------
def check_maskige(maskige: torch.Tensor, name: str = "maskige") -> None:
    """Raises unless `maskige` is a non-empty (batch, 3, height, width) uint8 or floating tensor."""
    if not isinstance(maskige, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(maskige).__name__}.")
    if maskige.dtype != torch.uint8 and not maskige.is_floating_point():
        raise TypeError(f"`{name}` must be uint8 (0..255) or floating point, got dtype {maskige.dtype}.")
    if maskige.ndim != 4 or maskige.shape[1] != 3:
        raise ValueError(f"`{name}` must have shape (batch, 3, height, width), got {tuple(maskige.shape)}.")
    if maskige.shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch.")


def check_index_map(indices: torch.Tensor, name: str, holds: str) -> None:
    """Raises unless `indices` is a non-empty (batch, height, width) integer tensor (labels or token ids)."""
    if not isinstance(indices, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(indices).__name__}.")
    if indices.dtype == torch.bool or indices.is_floating_point() or indices.is_complex():
        raise TypeError(f"`{name}` must hold {holds}, got dtype {indices.dtype}.")
    if indices.ndim != 3:
        raise ValueError(f"`{name}` must have shape (batch, height, width), got {tuple(indices.shape)}.")
    if indices.shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch.")


def check_labels(labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
    """Raises unless `labels` is a (batch, height, width) integer map of class ids in 0..K-1 or `ignore_index`."""
    check_index_map(labels, "labels", "integer class ids")
    bad_values = out_of_range_label_values(labels, num_classes, ignore_index)
    if bad_values:
        raise ValueError(
            f"`labels` holds values {bad_values} outside the {num_classes} classes (0..{num_classes - 1}) "
            f"and different from the ignore index {ignore_index}."
        )


def out_of_range_label_values(labels: np.ndarray | torch.Tensor, num_classes: int, ignore_index: int) -> list[int]:
    """The rule every label check applies: the distinct values (at most 10, sorted) that are neither a class id in
    0..num_classes-1 nor `ignore_index`; empty when all are valid. Works on NumPy arrays and tensors alike."""
    invalid = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_index)
    if not invalid.any():
        return []
    values = labels[invalid]
    unique = torch.unique(values).tolist() if isinstance(values, torch.Tensor) else np.unique(values).tolist()
    return [int(value) for value in unique[:10]]


def _palette_tensor(palette: torch.Tensor | ColorRows, device: torch.device | None) -> torch.Tensor:
    """A (rows, 3) uint8 tensor of colours on `device`, validated."""
    if isinstance(palette, torch.Tensor):
        if palette.ndim != 2 or palette.shape[1] != 3:
            raise ValueError(f"`palette` must have shape (K, 3), got {tuple(palette.shape)}.")
        if palette.is_floating_point() and not torch.equal(palette, palette.round()):
            raise ValueError("`palette` must hold integer colours in 0..255.")
        if palette.numel() and (palette.min() < 0 or palette.max() > 255):
            raise ValueError("`palette` must hold integer colours in 0..255.")
        colors = palette.to(device=device if device is not None else palette.device, dtype=torch.uint8)
    else:
        check_color_rows(palette, "palette")
        colors = torch.tensor([list(row) for row in palette], dtype=torch.uint8, device=device).reshape(-1, 3)
    if colors.shape[0] == 0:
        raise ValueError("`palette` has no colours.")
    return colors
