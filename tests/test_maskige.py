import json

import numpy as np
import pytest
import torch

from conftest import OFFICIAL_PALETTES_JSON
from gss_hf import maskige
from gss_hf.maskige import (
    class_scores_least_squares,
    class_scores_nearest_color,
    generate_palette,
    least_squares_inverse,
    maskige_from_labels,
    maskige_to_tokenizer_pixels,
    min_pairwise_distance,
    preset_class_names,
    preset_palette,
    tokenizer_pixels_to_maskige,
)


PRESETS = ["cityscapes", "ade20k", "mseg"]


def random_labels(num_classes: int, seed: int, shape=(2, 17, 23), ignore_index: int = 255) -> torch.Tensor:
    """Every class at least once, plus unlabelled pixels."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, shape, generator=generator)
    labels.view(-1)[:num_classes] = torch.arange(num_classes)
    labels[:, 0, :3] = ignore_index
    return labels


def round_trip(labels, palette, ignore_color, ignore_index=255):
    maskige = maskige_from_labels(labels, palette, ignore_color, ignore_index)
    return maskige, class_scores_nearest_color(maskige, palette).argmax(1)


@pytest.mark.parametrize("name", PRESETS)
def test_round_trip_is_exact_for_every_preset(name):
    colors, ignore_color = preset_palette(name)
    labels = random_labels(len(colors), seed=1)
    maskige, recovered = round_trip(labels, colors, ignore_color)
    labelled = labels != 255
    assert torch.equal(recovered[labelled], labels[labelled])
    # Unlabelled pixels carry the ignore colour, which is not a class colour.
    assert (maskige.permute(0, 2, 3, 1)[~labelled] == torch.tensor(ignore_color, dtype=torch.uint8)).all()


@pytest.mark.slow
def test_round_trip_is_exact_for_generated_palettes_up_to_256_classes():
    for num_classes in range(1, 257):
        palette = generate_palette(num_classes)
        # With 256 classes every uint8 value is a class id, so the ignore index moves out of the way.
        ignore_index = 255 if num_classes <= 255 else 1000
        labels = random_labels(num_classes, seed=num_classes, ignore_index=ignore_index)
        _, recovered = round_trip(labels, palette, [0, 0, 0], ignore_index)
        labelled = labels != ignore_index
        assert torch.equal(recovered[labelled], labels[labelled]), num_classes


def test_maskige_paints_palette_colours_channel_first():
    palette = [[10, 20, 30], [200, 100, 50]]
    labels = torch.tensor([[[0, 1], [255, 1]]])
    maskige = maskige_from_labels(labels, palette, [1, 2, 3])
    assert maskige.shape == (1, 3, 2, 2) and maskige.dtype == torch.uint8
    assert maskige[0, :, 0, 0].tolist() == [10, 20, 30]
    assert maskige[0, :, 0, 1].tolist() == [200, 100, 50]
    assert maskige[0, :, 1, 0].tolist() == [1, 2, 3]


@pytest.mark.skipif(not OFFICIAL_PALETTES_JSON.exists(), reason="the shared official_palettes.json is absent")
@pytest.mark.parametrize("name", PRESETS)
def test_preset_palettes_equal_the_official_json(name):
    official = json.loads(OFFICIAL_PALETTES_JSON.read_text())[name]
    colors, ignore_color = preset_palette(name)
    assert colors + [ignore_color] == official["palette"]
    assert len(colors) == official["num_classes"]
    expected_names = official["class_names"]
    assert preset_class_names(name) == (None if expected_names is None else [n.strip() for n in expected_names])


@pytest.mark.slow
def test_generator_is_deterministic_and_valid():
    for num_classes, ignore_color in [(11, (0, 0, 0)), (150, (215, 216, 196)), (1024, (0, 0, 0))]:
        first = generate_palette(num_classes, ignore_color)
        maskige._generate_palette_cached.cache_clear()  # recompute rather than read the cache
        second = generate_palette(num_classes, ignore_color)
        assert first == second
        assert len(first) == num_classes
        assert len({tuple(row) for row in first}) == num_classes
        assert list(ignore_color) not in first
        assert all(0 <= v <= 255 and isinstance(v, int) for row in first for v in row)


@pytest.mark.parametrize("name", ["cityscapes", "ade20k", "mseg"])
def test_generated_palette_beats_the_official_one_by_a_wide_margin(name):
    colors, ignore_color = preset_palette(name)
    generated = generate_palette(len(colors), ignore_color)
    official_distance = min_pairwise_distance(colors + [ignore_color])
    generated_distance = min_pairwise_distance(generated + [ignore_color])
    assert generated_distance >= 2 * official_distance
    if len(colors) == 150:
        assert generated_distance > 40  # "a good packing gets well above 40 at K = 150"


def test_generated_palette_stays_away_from_the_ignore_colour():
    for ignore_color in ([0, 0, 0], [215, 216, 196], [128, 128, 128]):
        palette = generate_palette(19, ignore_color)
        distance_to_ignore = min(np.linalg.norm(np.subtract(row, ignore_color)) for row in palette)
        assert distance_to_ignore >= min_pairwise_distance(palette) * 0.99


def test_minimum_distances_of_the_official_palettes_match_the_spec():
    assert min_pairwise_distance(preset_palette("cityscapes")[0]) == pytest.approx(20.0, abs=0.01)
    assert min_pairwise_distance(preset_palette("ade20k")[0]) == pytest.approx(20.02, abs=0.01)
    assert min_pairwise_distance(preset_palette("mseg")[0]) == pytest.approx(18.68, abs=0.01)


def test_least_squares_matches_the_pseudo_inverse_formula():
    palette = torch.tensor(preset_palette("cityscapes")[0], dtype=torch.float64)
    inverse = least_squares_inverse(palette)
    assert inverse.shape == (3, 19)
    expected = torch.linalg.inv(palette.T @ palette) @ palette.T
    assert torch.allclose(inverse, expected)
    # It is a left inverse of the palette: beta^+ beta = I.
    assert torch.allclose(inverse @ palette, torch.eye(3, dtype=torch.float64), atol=1e-10)
    maskige = torch.rand(2, 3, 4, 5) * 255
    scores = class_scores_least_squares(maskige, palette.long())
    assert scores.shape == (2, 19, 4, 5)
    assert torch.allclose(scores, torch.einsum("bchw,ck->bkhw", maskige.double(), expected).float(), atol=1e-3)


def test_least_squares_decodes_an_orthogonal_palette_exactly():
    palette = [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    labels = random_labels(3, seed=3)
    labels[labels == 255] = 0
    scores = class_scores_least_squares(maskige_from_labels(labels, palette, [0, 0, 0]), palette)
    assert torch.equal(scores.argmax(1), labels)


def test_least_squares_refuses_a_rank_deficient_palette():
    with pytest.raises(ValueError, match="rank 3"):
        least_squares_inverse([[10, 10, 10], [20, 20, 20], [30, 30, 30]])


def test_tokenizer_pixel_map_and_inverse():
    maskige = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 3, 1, 1)
    pixels = maskige_to_tokenizer_pixels(maskige)
    assert torch.allclose(pixels.flatten(), torch.tensor([0.1, 0.26, 0.9]))
    assert torch.allclose(tokenizer_pixels_to_maskige(pixels), maskige.float(), atol=1e-4)
    # Outside [0.1, 0.9] the inverse clamps to valid colours.
    assert tokenizer_pixels_to_maskige(torch.tensor([0.0, 0.5, 1.0]).reshape(1, 3, 1, 1)).flatten().tolist() == [
        0.0, pytest.approx(127.5), 255.0
    ]


def test_nearest_colour_handles_decoded_noise_and_excludes_the_ignore_row():
    palette = generate_palette(11)
    labels = random_labels(11, seed=5)
    labels[labels == 255] = 2
    maskige = maskige_from_labels(labels, palette, [0, 0, 0]).float()
    noisy = maskige + torch.empty_like(maskige).uniform_(-40, 40)  # well under half the palette distance
    assert torch.equal(class_scores_nearest_color(noisy, palette).argmax(1), labels)
    black = torch.zeros(1, 3, 2, 2)
    assert class_scores_nearest_color(black, palette).shape == (1, 11, 2, 2)  # a class, never "ignore"


@pytest.mark.parametrize(
    "labels, error, match",
    [
        (torch.tensor([[[0, 11]]]), ValueError, r"values \[11\] outside the 11 classes"),
        (torch.tensor([[[0, -1]]]), ValueError, r"values \[-1\] outside"),
        (torch.tensor([[[0.0, 1.0]]]), TypeError, "integer class ids"),
        (torch.tensor([[[True, False]]]), TypeError, "integer class ids"),
        (torch.zeros(0, 4, 4, dtype=torch.long), ValueError, "empty batch"),
        (torch.zeros(4, 4, dtype=torch.long), ValueError, r"\(batch, height, width\)"),
        (np.zeros((1, 4, 4), dtype=np.int64), TypeError, "torch.Tensor"),
    ],
)
def test_bad_label_maps_are_refused(labels, error, match):
    with pytest.raises(error, match=match):
        maskige_from_labels(labels, generate_palette(11), [0, 0, 0])


@pytest.mark.parametrize(
    "maskige, error, match",
    [
        (torch.zeros(1, 4, 8, 8), ValueError, r"\(batch, 3, height, width\)"),
        (torch.zeros(1, 1, 8, 8), ValueError, r"\(batch, 3, height, width\)"),
        (torch.zeros(3, 8, 8), ValueError, r"\(batch, 3, height, width\)"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.int32), TypeError, "uint8 .* or floating"),
        (torch.zeros(0, 3, 8, 8), ValueError, "empty batch"),
    ],
)
def test_bad_maskiges_are_refused(maskige, error, match):
    for function in (class_scores_nearest_color, class_scores_least_squares):
        with pytest.raises(error, match=match):
            function(maskige, generate_palette(11))


def test_bad_palettes_are_refused():
    with pytest.raises(ValueError, match="exactly 3 values"):
        class_scores_nearest_color(torch.zeros(1, 3, 2, 2), [[1, 2]])
    with pytest.raises(ValueError, match="0..255"):
        class_scores_nearest_color(torch.zeros(1, 3, 2, 2), [[1, 2, 300]])
    with pytest.raises(ValueError, match=r"in 1\.\.1024"):
        generate_palette(1025)
    with pytest.raises(ValueError, match=r"in 1\.\.1024"):
        generate_palette(0)
    with pytest.raises(ValueError, match="Unknown palette preset"):
        preset_palette("pascal")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_maskige_functions_run_on_gpu():
    palette = torch.tensor(generate_palette(19), device="cuda")
    labels = random_labels(19, seed=7).cuda()
    _, recovered = round_trip(labels, palette, [0, 0, 0])
    assert recovered.device.type == "cuda"
    assert torch.equal(recovered[labels != 255], labels[labels != 255])


@pytest.mark.slow
def test_camvid_label_maps_round_trip_exactly(camvid_dir):
    """Every CamVid val label map, void (11) as the ignore index, painted with the CPU preset's palette."""
    from PIL import Image

    from gss_hf import GSSConfig

    config = GSSConfig.from_preset("gss-mobilenetv2-camvid")
    files = sorted((camvid_dir / "valannot").glob("*.png"))
    assert len(files) == 101
    labels = torch.from_numpy(np.stack([np.array(Image.open(f)) for f in files])).long()
    labels[labels == 11] = 255
    _, recovered = round_trip(labels, config.palette, config.ignore_color)
    labelled = labels != 255
    assert labelled.float().mean() > 0.5
    assert torch.equal(recovered[labelled], labels[labelled])
