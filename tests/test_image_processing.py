import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from transformers.modeling_outputs import SemanticSegmenterOutput

from gss_hf.image_processing_gss import GSSImageProcessor


MEAN = np.array(IMAGENET_DEFAULT_MEAN).reshape(3, 1, 1)
STD = np.array(IMAGENET_DEFAULT_STD).reshape(3, 1, 1)


def normalised(rgb_uint8_channels_first: np.ndarray) -> np.ndarray:
    """What the processor must give for an unresized photo: (v / 255 - mean) / std per channel."""
    return (rgb_uint8_channels_first / 255 - MEAN) / STD


def random_photo(height: int = 12, width: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def processor() -> GSSImageProcessor:
    return GSSImageProcessor()


@pytest.fixture
def unresized() -> GSSImageProcessor:
    return GSSImageProcessor(do_resize=False)


def test_defaults(processor):
    assert dict(processor.size) == {"shortest_edge": 512, "longest_edge": 2048}
    assert tuple(processor.image_mean) == tuple(IMAGENET_DEFAULT_MEAN)
    assert tuple(processor.image_std) == tuple(IMAGENET_DEFAULT_STD)
    assert processor.rescale_factor == 1 / 255
    assert processor.ignore_index == 255
    assert processor.do_reduce_labels is False
    assert processor.model_input_names == ["pixel_values"]
    assert processor.backend == "pil"


def test_constant_photo_is_normalised_exactly(processor):
    photo = np.full((30, 40, 3), [100, 150, 200], dtype=np.uint8)
    pixel_values = processor(photo, return_tensors="pt").pixel_values
    # Shortest edge 30 -> 512 keeps the aspect ratio: 40 * 512 / 30 = 682.7, truncated.
    assert pixel_values.shape == (1, 3, 512, 682)
    assert pixel_values.dtype == torch.float32
    expected = normalised(np.array([100, 150, 200]).reshape(3, 1, 1))
    np.testing.assert_allclose(pixel_values[0].numpy(), np.broadcast_to(expected, (3, 512, 682)), atol=1e-6)


def test_size_height_width_and_shortest_edge():
    photo = random_photo(30, 60)
    fixed = GSSImageProcessor(size={"height": 10, "width": 12})(photo, return_tensors="pt")
    assert fixed.pixel_values.shape == (1, 3, 10, 12)
    portrait = GSSImageProcessor(size={"shortest_edge": 16})(photo.transpose(1, 0, 2).copy(), return_tensors="pt")
    assert portrait.pixel_values.shape == (1, 3, 32, 16)


def test_resize_is_pil_bilinear_then_normalisation():
    photo = random_photo(12, 16)
    pixel_values = GSSImageProcessor(size={"height": 9, "width": 7})(photo, return_tensors="np").pixel_values[0]
    reference = np.asarray(Image.fromarray(photo).resize((7, 9), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    np.testing.assert_allclose(pixel_values, normalised(reference), atol=1e-5)


def test_pil_numpy_and_torch_layouts_agree(unresized):
    photo = random_photo()
    expected = normalised(photo.transpose(2, 0, 1))
    for same_photo in [
        photo,
        photo.transpose(2, 0, 1).copy(),
        torch.from_numpy(photo.transpose(2, 0, 1).copy()),
        Image.fromarray(photo),
    ]:
        pixel_values = unresized(same_photo, return_tensors="pt").pixel_values
        np.testing.assert_allclose(pixel_values[0].numpy(), expected, atol=1e-6)


def test_batches_as_list_and_as_4d_array(unresized):
    photos = np.stack([random_photo(seed=0), random_photo(seed=1)])
    from_array = unresized(photos, return_tensors="pt").pixel_values
    from_list = unresized(list(photos), return_tensors="pt").pixel_values
    assert from_array.shape == (2, 3, 12, 16)
    assert torch.equal(from_array, from_list)
    np.testing.assert_allclose(from_array[1].numpy(), normalised(photos[1].transpose(2, 0, 1)), atol=1e-6)


def test_grey_photos_are_replicated_to_rgb(unresized):
    grey = np.random.default_rng(0).integers(0, 256, (12, 16), dtype=np.uint8)
    expected = normalised(np.repeat(grey[None], 3, axis=0))
    for same_photo in [grey, grey[..., None], grey[None], Image.fromarray(grey)]:
        pixel_values = unresized(same_photo, return_tensors="pt").pixel_values
        assert pixel_values.shape == (1, 3, 12, 16)
        np.testing.assert_allclose(pixel_values[0].numpy(), expected, atol=1e-6)


def test_rgba_alpha_is_dropped_not_blended(unresized):
    photo = random_photo()
    alpha = np.zeros((12, 16, 1), dtype=np.uint8)  # fully transparent: blending onto white would give all 255
    rgba = np.concatenate([photo, alpha], axis=-1)
    expected = normalised(photo.transpose(2, 0, 1))
    for same_photo in [rgba, Image.fromarray(rgba)]:
        pixel_values = unresized(same_photo, return_tensors="pt").pixel_values
        np.testing.assert_allclose(pixel_values[0].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("shape", [(12, 16, 2), (2, 12, 16), (12, 16, 5), (5, 12, 16)])
def test_wrong_channel_count_is_refused(unresized, shape):
    with pytest.raises(ValueError, match="1 \\(grey\\), 3 \\(RGB\\) or 4 \\(RGBA\\)"):
        unresized(np.zeros(shape, dtype=np.uint8))


def test_wrong_channel_count_is_named_when_the_layout_is_given(unresized):
    with pytest.raises(ValueError, match="has 2 channels"):
        unresized(np.zeros((2, 12, 16), dtype=np.uint8), input_data_format="channels_first")


def test_16_bit_photos_are_rescaled_not_clipped(unresized):
    # 128 * 257 is mid-grey in 16 bits; PIL's convert("RGB") would clip it to 255. 1000 / 257 = 3.89 rounds to 4.
    values_16_bit = np.array([[0, 1000, 128 * 257, 65535]] * 2, dtype=np.uint16)
    expected = normalised(np.repeat(np.array([[[0, 4, 128, 255]] * 2]), 3, axis=0))
    photos = [
        values_16_bit,
        np.repeat(values_16_bit[..., None], 3, axis=-1),
        Image.fromarray(values_16_bit),
        Image.fromarray(values_16_bit.astype(np.int32)),
    ]
    assert [photo.mode for photo in photos[2:]] == ["I;16", "I"]
    for photo in photos:
        pixel_values = unresized(photo, return_tensors="pt").pixel_values
        np.testing.assert_allclose(pixel_values[0].numpy(), expected, atol=1e-6)


def test_32_bit_pil_photo_beyond_16_bits_is_refused(unresized):
    with pytest.raises(ValueError, match="outside the 16-bit range"):
        unresized(Image.fromarray(np.full((4, 4), 70000, dtype=np.int32)))


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_other_dtypes_are_refused(unresized, dtype):
    with pytest.raises(ValueError, match="expected uint8 \\(0..255\\) or uint16"):
        unresized(np.zeros((12, 16, 3), dtype=dtype))


def test_empty_batch_is_refused(processor):
    with pytest.raises(ValueError, match="`images` is empty"):
        processor(images=[])


@pytest.mark.parametrize(
    "setting",
    [{"do_center_crop": True, "crop_size": {"height": 8, "width": 8}}, {"do_pad": True}],
    ids=["crop", "pad"],
)
def test_cropping_and_padding_are_refused(processor, setting):
    with pytest.raises(ValueError, match="does not crop or pad"):
        processor(random_photo(), **setting)


def test_paths_are_refused_by_type(processor):
    with pytest.raises(TypeError, match="got str"):
        processor(["photo.png"])


def test_labels_keep_their_values_and_the_photo_size(processor):
    rng = np.random.default_rng(0)
    classes = np.array([0, 3, 7, 254, 255, 300])
    labels = classes[rng.integers(0, len(classes), (37, 53))]
    batch = processor(random_photo(37, 53), labels, return_tensors="pt")
    assert batch.labels.dtype == torch.int64
    assert batch.labels.shape == (1, *batch.pixel_values.shape[2:]) == (1, 512, 733)
    # Nearest-neighbour sampling copies labels; any blending (bilinear, antialiasing) would invent in-between ids.
    assert set(batch.labels.unique().tolist()) == set(classes.tolist())


def test_label_upsampling_repeats_each_label():
    labels = np.arange(30).reshape(5, 6)
    batch = GSSImageProcessor(size={"height": 10, "width": 12})(random_photo(5, 6), labels, return_tensors="pt")
    expected = np.kron(labels, np.ones((2, 2), dtype=np.int64))
    np.testing.assert_array_equal(batch.labels[0].numpy(), expected)


@pytest.mark.parametrize(
    "label_map",
    [
        np.array([[0, 1, 2], [255, 150, 0]], dtype=np.uint8),
        torch.tensor([[0, 1, 2], [255, 150, 0]]),
        Image.fromarray(np.array([[0, 1, 2], [255, 150, 0]], dtype=np.uint8)),
    ],
)
def test_labels_of_every_input_type(unresized, label_map):
    labels = unresized(random_photo(2, 3), label_map, return_tensors="pt").labels
    assert labels.dtype == torch.int64
    assert labels.tolist() == [[[0, 1, 2], [255, 150, 0]]]


def test_palette_label_png_gives_palette_indices(unresized):
    indices = np.array([[0, 1, 2], [3, 4, 5]], dtype=np.uint8)
    palette_map = Image.fromarray(indices, mode="P")
    palette_map.putpalette([255, 0, 0] * 256)  # the colours must not matter, only the indices
    labels = unresized(random_photo(2, 3), palette_map, return_tensors="pt").labels
    assert labels[0].tolist() == indices.tolist()


def test_reduce_labels_maps_zero_to_ignore_and_shifts_the_rest():
    photo = random_photo(2, 3)
    label_map = np.array([[0, 1, 2], [255, 150, 0]], dtype=np.uint8)
    reducing = GSSImageProcessor(do_resize=False, do_reduce_labels=True)
    batch = reducing(photo, label_map, return_tensors="pt")
    assert batch.labels.tolist() == [[[255, 0, 1], [255, 149, 255]]]
    # Photos are never touched by label reduction.
    plain = GSSImageProcessor(do_resize=False)(photo, label_map, return_tensors="pt")
    assert torch.equal(batch.pixel_values, plain.pixel_values)
    assert plain.labels.tolist() == [label_map.tolist()]


def test_reduce_labels_keeps_a_custom_ignore_index(unresized):
    label_map = np.array([[0, 5, 99], [1, 2, 3]])
    batch = unresized(random_photo(2, 3), label_map, do_reduce_labels=True, ignore_index=99, return_tensors="pt")
    assert batch.labels.tolist() == [[[99, 4, 99], [0, 1, 2]]]


def test_photo_and_map_of_different_sizes_are_refused(processor):
    with pytest.raises(ValueError, match=r"\(16, 32\).*\(32, 32\)"):
        processor(random_photo(32, 32), np.zeros((16, 32), dtype=np.uint8))


def test_different_numbers_of_photos_and_maps_are_refused(processor):
    maps = [np.zeros((12, 16), dtype=np.uint8)] * 3
    with pytest.raises(ValueError, match="Got 2 images but 3 segmentation maps"):
        processor([random_photo(), random_photo()], maps)


@pytest.mark.parametrize(
    "label_map",
    [
        Image.fromarray(random_photo()),  # a colour-coded label PNG
        np.zeros((12, 16, 3), dtype=np.uint8),
        np.zeros((12, 16), dtype=np.float32),
    ],
    ids=["rgb-png", "rgb-array", "float"],
)
def test_maps_that_are_not_2d_integer_class_ids_are_refused(processor, label_map):
    with pytest.raises(ValueError, match="2-D maps of integer class ids"):
        processor([random_photo()], [label_map])


def test_negative_labels_are_refused(processor):
    label_map = np.zeros((12, 16), dtype=np.int64)
    label_map[3, 4] = -1
    with pytest.raises(ValueError, match="negative label -1"):
        processor(random_photo(), label_map)


def test_post_processing_at_logit_size_is_the_argmax(processor):
    logits = torch.randn(2, 5, 8, 10, generator=torch.Generator().manual_seed(0))
    maps = processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits))
    assert len(maps) == 2
    for segmentation, scores in zip(maps, logits):
        assert segmentation.dtype == torch.int64
        assert torch.equal(segmentation, scores.argmax(0))


@pytest.mark.parametrize("as_tensor", [False, True])
def test_post_processing_resizes_to_target_sizes(processor, as_tensor):
    num_labels = 5
    id2label = {index: f"class_{index}" for index in range(num_labels)}
    logits = torch.randn(2, num_labels, 8, 10, generator=torch.Generator().manual_seed(0))
    # Class 4 wins the left half of the first image by a wide margin, class 1 the right half.
    logits[0, 4, :, :5] += 100
    logits[0, 1, :, 5:] += 100
    target_sizes = [(32, 40), (17, 23)]
    if as_tensor:
        target_sizes = torch.tensor(target_sizes)
    maps = processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), target_sizes)
    assert [tuple(segmentation.shape) for segmentation in maps] == [(32, 40), (17, 23)]
    for segmentation in maps:
        assert segmentation.dtype == torch.int64
        assert set(segmentation.unique().tolist()) <= set(id2label)
    assert (maps[0][:, :19] == 4).all() and (maps[0][:, 21:] == 1).all()


def test_post_processing_needs_one_target_size_per_image(processor):
    logits = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="Got 1 target sizes for a batch of 2"):
        processor.post_process_semantic_segmentation(SemanticSegmenterOutput(logits=logits), [(8, 8)])


def test_save_and_load_keep_the_settings(tmp_path):
    settings = {
        "size": {"height": 24, "width": 32},
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.25, 0.25, 0.25],
        "do_reduce_labels": True,
        "ignore_index": 254,
    }
    saved = GSSImageProcessor(**settings)
    saved.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert config["image_processor_type"] == "GSSImageProcessor"
    assert {key: config[key] for key in settings} == settings

    loaded = GSSImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == saved.to_dict()
    photo, label_map = random_photo(12, 16), np.arange(12 * 16).reshape(12, 16) % 5
    expected, got = saved(photo, label_map, return_tensors="pt"), loaded(photo, label_map, return_tensors="pt")
    assert got.pixel_values.shape == (1, 3, 24, 32)
    assert torch.equal(expected.pixel_values, got.pixel_values)
    assert torch.equal(expected.labels, got.labels)
    assert got.labels.max() == 254  # label 0 became the custom ignore index


def test_camvid_photo_and_label_map(processor, camvid_dir):
    photo_path = sorted((camvid_dir / "val").glob("*.png"))[0]
    photo = Image.open(photo_path)
    label_map = np.asarray(Image.open(camvid_dir / "valannot" / photo_path.name))
    assert photo.size == (480, 360) and label_map.shape == (360, 480)
    # CamVid marks void pixels 11; the model's ignore index is 255.
    label_map = np.where(label_map == 11, processor.ignore_index, label_map)

    batch = processor(photo, label_map, return_tensors="pt")
    assert batch.pixel_values.shape == (1, 3, 512, 682)
    assert batch.labels.shape == (1, 512, 682)
    assert batch.labels.dtype == torch.int64

    reference = np.asarray(photo.convert("RGB").resize((682, 512), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    np.testing.assert_allclose(batch.pixel_values[0].numpy(), normalised(reference), atol=1e-5)

    input_ids, input_counts = np.unique(label_map, return_counts=True)
    output_ids, output_counts = np.unique(batch.labels.numpy(), return_counts=True)
    assert set(output_ids.tolist()) <= set(input_ids.tolist())
    assert set(output_ids.tolist()) <= set(range(11)) | {255}
    # Nearest-neighbour resizing keeps each class's share of the image.
    input_share = dict(zip(input_ids.tolist(), input_counts / input_counts.sum()))
    for class_id, share in zip(output_ids.tolist(), output_counts / output_counts.sum()):
        assert abs(share - input_share[class_id]) < 0.01


@pytest.mark.parametrize("width, height", [(2000, 1), (30000, 20), (1, 3000)])
def test_very_thin_photos_are_bounded_by_the_default_long_edge(processor, width, height):
    """Without the bound a 512-pixel short edge would make 2000x1 a 1024000x512 image (half a billion pixels)."""
    photo = np.zeros((height, width, 3), dtype=np.uint8)
    pixel_values = processor(images=photo, input_data_format="channels_last", return_tensors="pt")["pixel_values"]
    assert pixel_values.shape[-2] * pixel_values.shape[-1] <= 2048 * 512


def test_a_resize_without_a_long_edge_bound_refuses_what_would_not_fit():
    short_edge_only = GSSImageProcessor(size={"shortest_edge": 360})
    with pytest.raises(ValueError, match=r"Image 0 would be processed at about 720000x360 pixels.*longest_edge"):
        short_edge_only(images=np.zeros((1, 2000, 3), dtype=np.uint8), input_data_format="channels_last")
    assert short_edge_only(images=np.zeros((360, 480, 3), dtype=np.uint8))["pixel_values"][0].shape == (3, 360, 480)


def mmcv_keep_ratio_size(height: int, width: int, short: int, long: int) -> tuple[int, int]:
    """mmcv's `rescale_size(keep_ratio=True)` for img_scale (long, short), as its documentation states it."""
    scale = min(long / max(height, width), short / min(height, width))
    return int(height * scale + 0.5), int(width * scale + 0.5)


def test_nearest_size_rounding_gives_mmcvs_keep_ratio_sizes():
    processor = GSSImageProcessor(size={"shortest_edge": 512, "longest_edge": 2048}, size_rounding="nearest")
    floor = GSSImageProcessor(size={"shortest_edge": 512, "longest_edge": 2048})
    generator = np.random.default_rng(0)
    differs = 0
    for height, width in [(20, 4000), *generator.integers(200, 1200, size=(20, 2)).tolist()]:
        photo, labels = np.zeros((height, width, 3), np.uint8), np.zeros((height, width), np.uint8)
        output = processor(photo, segmentation_maps=labels, return_tensors="pt")
        expected = mmcv_keep_ratio_size(height, width, 512, 2048)
        assert tuple(output.pixel_values.shape[-2:]) == expected == tuple(output.labels.shape[-2:])
        differs += tuple(floor(photo, return_tensors="pt").pixel_values.shape[-2:]) != expected
    assert differs > 0  # the default ("floor", transformers' rule) is another one


def test_an_unknown_size_rounding_is_refused():
    with pytest.raises(ValueError, match=r"`size_rounding` must be one of \('floor', 'nearest'\), got 'round'"):
        GSSImageProcessor(size_rounding="round")
    with pytest.raises(ValueError, match="`size_rounding` must be one of"):
        GSSImageProcessor()(np.zeros((8, 8, 3), np.uint8), size_rounding="ceil")
