"""Image processor for GSS: photos to normalised pixel values, label maps to class-id maps aligned with them, and
class scores back to label maps.

It is built on transformers' PIL backend, so it needs only PIL and NumPy (no torchvision). It is shipped to the Hub
as remote code, which is why it imports nothing but installed libraries and sibling modules.

Inputs are checked strictly, because the usual failure modes of segmentation data are silent: a 16-bit photo that
PIL clips to white, a colour-coded label PNG read as three channels of class ids, or a label map that is not the
size of its photo all train a model on garbage without an error.
"""

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers import AutoImageProcessor
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    ImageInput,
    PILImageResampling,
    SizeDict,
)
from transformers.models.auto.video_processing_auto import VIDEO_PROCESSOR_MAPPING
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import TensorType

from .configuration_gss import GSSConfig
from .label_spec import LabelSpec
from .maskige import IGNORE_INDEX


# PIL modes with more than 8 bits per pixel. `Image.convert("RGB")` clips these at 255 instead of rescaling them,
# which turns most of a 16-bit photo white, so they are rescaled explicitly.
HIGH_BIT_DEPTH_PIL_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
UINT16_MAX = 65535
# round(x / 257) maps 0..65535 onto 0..255 and inverts the usual 8-to-16-bit widening x * 257 exactly.
UINT16_TO_UINT8_DIVISOR = 257
# A short-edge resize without a long-edge bound that would give more pixels than this is refused: a very thin photo
# (2000x1 resized to 360 pixels high) would become a 720000x360 image that no model run fits in memory.
MAX_PROCESSED_PIXELS = 4096 * 4096
# The default resize bounds the long edge too, so such photos are shrunk instead.
DEFAULT_LONGEST_EDGE = 2048
# Grey, RGB and RGBA.
VALID_CHANNEL_COUNTS = (1, 3, 4)


class GSSImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    do_reduce_labels (`bool`, *optional*, defaults to `self.do_reduce_labels`):
        Whether to shift every label down by one and turn label 0 into `ignore_index`, for datasets whose label 0 is
        "background" or "other" rather than a class (e.g. ADE20k). `ignore_index` itself stays `ignore_index`.
    ignore_index (`int`, *optional*, defaults to `self.ignore_index`):
        The label of unlabelled pixels, which the loss ignores.
    void_value (`int`, *optional*, defaults to `self.void_value`):
        A label value that means unlabelled (CamVid's files: 11); it becomes `ignore_index`.
    label_id_map (`dict[int, int]`, *optional*, defaults to `self.label_id_map`):
        Label values -> class ids (e.g. Cityscapes labelIds -> trainIds); unlisted values become `ignore_index`.
    size_rounding (`str`, *optional*, defaults to `self.size_rounding`):
        How a `shortest_edge` resize rounds the sides: "floor" (transformers' rule: the short side is set, the long
        one truncated) or "nearest" (mmcv's `Resize(keep_ratio=True)`, the official GSS test pipeline: one scale
        factor, the smaller of shortest_edge / short side and longest_edge / long side, each side rounded to the
        nearest pixel). They differ by one pixel on about half of all photo sizes.
    """

    do_reduce_labels: bool
    size_rounding: str
    ignore_index: int
    void_value: int | None
    label_id_map: dict[int, int] | None


class GSSImageProcessor(PilBackend):
    r"""
    Prepares photos and optional segmentation maps for [`GSSForSemanticSegmentation`] and turns its class scores back
    into label maps.

    Photos are resized (by default so that the shortest edge is 512 pixels and the longest at most 2048, keeping the
    aspect ratio), rescaled to 0..1 and normalised with the ImageNet mean and standard deviation, giving float32
    `pixel_values` of shape `(batch, 3, height, width)`. Segmentation maps are resized with nearest-neighbour
    sampling to exactly the size of their processed photo, and are never rescaled or normalised: they come back as
    int64 `labels` of shape `(batch, height, width)`. The processor never crops or pads, so that every label stays
    on its pixel; random crops for training belong in the data pipeline.

    Accepted photos are PIL images, or NumPy arrays and torch tensors of shape `(height, width)`,
    `(height, width, channels)` or `(channels, height, width)`, and batches of them (a list, or one array with a
    leading batch axis):

    - Grey photos (1 channel, PIL mode "L") are replicated to three identical RGB channels.
    - RGBA photos (4 channels) lose their alpha channel; the colours are kept as they are, not blended onto a
      background, as the OpenCV loaders that GSS was trained with do. PIL images in other modes ("P", "LA", "CMYK",
      ...) are converted with PIL's own `convert("RGB")`, which also drops alpha.
    - 16-bit photos (uint16 arrays, PIL modes "I;16" and "I") are rescaled from 0..65535 to 0..255 with
      round(value / 257), instead of being clipped at 255 as PIL's `convert("RGB")` would.
    - Arrays must be uint8 or uint16. Float photos are refused, because nothing tells whether they are on a 0..1 or a
      0..255 scale; other channel counts (2, 5, ...) are refused too.

    Segmentation maps must be 2-D maps of non-negative integer class ids of the same size as their photo: PIL images in
    mode "L", "P" (palette indices) or "I;16", or 2-D integer arrays. Colour-coded label images (one RGB colour per
    class) must be converted to class ids first.

    Args:
        do_reduce_labels (`bool`, *optional*, defaults to `False`):
            Whether to shift every label down by one and turn label 0 into `ignore_index` (see
            [`GSSImageProcessorKwargs`]).
        ignore_index (`int`, *optional*, defaults to 255):
            The label of unlabelled pixels (the model's `config.ignore_index`).
        void_value (`int`, *optional*):
            A label value that means unlabelled; it becomes `ignore_index`.
        label_id_map (`dict[int, int]`, *optional*):
            Label values -> class ids, applied first; unlisted values become `ignore_index`.

        The four label settings are one `LabelSpec` (`label_spec`), the rules the training data and the evaluation
        read label files by, so a saved processor converts label maps exactly as the model's scores were measured.
        **kwargs:
            The usual image processor settings (`do_resize`, `size`, `resample`, `do_rescale`, `rescale_factor`,
            `do_normalize`, `image_mean`, `image_std`). `size` is `{"shortest_edge": n}` (optionally with
            `"longest_edge"`, which wins) to keep the aspect ratio, or `{"height": h, "width": w}` for a fixed size;
            the default is a 512-pixel short edge and at most 2048 pixels on the long one. With a short edge and no
            long-edge bound, a photo that would be processed at more than 4096x4096 pixels is refused with a message.
    """

    valid_kwargs = GSSImageProcessorKwargs
    model_input_names = ["pixel_values"]

    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 512, "longest_edge": DEFAULT_LONGEST_EDGE}
    default_to_square = False
    do_resize = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_reduce_labels = False
    ignore_index = IGNORE_INDEX
    void_value = None
    label_id_map = None
    size_rounding = "floor"

    def __init__(self, **kwargs: Unpack[GSSImageProcessorKwargs]):
        super().__init__(**kwargs)
        check_size_rounding(self.size_rounding)
        self.label_spec  # validates the label settings now rather than at the first label map

    @property
    def label_spec(self) -> LabelSpec:
        """The processor's label settings as the `LabelSpec` that every label map is converted by."""
        return LabelSpec(self.ignore_index, self.void_value, self.do_reduce_labels, self.label_id_map)

    def preprocess(
        self,
        images: ImageInput,
        segmentation_maps: ImageInput | None = None,
        **kwargs: Unpack[GSSImageProcessorKwargs],
    ) -> BatchFeature:
        r"""
        Prepares a photo or a batch of photos, and optionally one segmentation map per photo.

        Args:
            images (`ImageInput`):
                A photo or a batch of photos (see the class docstring for the accepted formats).
            segmentation_maps (`ImageInput`, *optional*):
                One 2-D map of integer class ids per photo, of the same size as that photo.
            **kwargs:
                Overrides of the processor's settings for this call, and `return_tensors` (`"pt"` or `"np"`).

        Returns:
            [`BatchFeature`]: `pixel_values` and, when `segmentation_maps` are given, `labels`.
        """
        return super().preprocess(images, segmentation_maps, **kwargs)

    def _preprocess_image_like_inputs(
        self,
        images: ImageInput,
        segmentation_maps: ImageInput | None,
        input_data_format: str | ChannelDimension | None,
        return_tensors: str | TensorType | None,
        do_reduce_labels: bool,
        ignore_index: int,
        void_value: int | None,
        label_id_map: dict[int, int] | None,
        **kwargs,
    ) -> BatchFeature:
        """Checks and converts the inputs, then resizes each label map to the processed size of its photo."""
        if kwargs.get("do_center_crop") or kwargs.get("do_pad"):
            raise ValueError(
                "GSSImageProcessor does not crop or pad, so that label maps stay aligned with their photos; "
                "set `do_center_crop` and `do_pad` to False."
            )
        images = split_batch(images, single_ndim=3, name="images")
        if not images:
            raise ValueError("`images` is empty: pass at least one photo.")
        images = [to_rgb_uint8(image, index, input_data_format) for index, image in enumerate(images)]
        pixel_values = self._preprocess(images, **kwargs)
        data = {"pixel_values": pixel_values}

        if segmentation_maps is not None:
            maps = split_batch(segmentation_maps, single_ndim=2, name="segmentation_maps")
            if len(maps) != len(images):
                hint = ""
                if isinstance(segmentation_maps, (np.ndarray, torch.Tensor)) and segmentation_maps.ndim == 3:
                    hint = " (a single 3-D array is read as a batch of 2-D maps along its first axis)"
                raise ValueError(
                    f"Got {len(images)} images but {len(maps)} segmentation maps{hint}; pass exactly one map per "
                    "image."
                )
            label_spec = LabelSpec(ignore_index, void_value, do_reduce_labels, label_id_map)
            labels = []
            for index, (segmentation_map, image, processed_image) in enumerate(zip(maps, images, pixel_values)):
                segmentation_map = to_label_map(segmentation_map, index)
                if segmentation_map.shape != image.shape[1:]:
                    raise ValueError(
                        f"Segmentation map {index} has size (height, width) = {segmentation_map.shape} but its "
                        f"image has size {image.shape[1:]}; a label map must cover its image pixel for pixel."
                    )
                try:
                    segmentation_map = label_spec.apply(segmentation_map)
                except ValueError as error:
                    raise ValueError(f"Segmentation map {index}: {error}") from error
                labels.append(resize_labels(segmentation_map, processed_image.shape[1:]))
            data["labels"] = labels

        return BatchFeature(data=data, tensor_type=return_tensors)

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | None,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | tuple[float, ...],
        image_std: float | tuple[float, ...],
        **kwargs,
    ) -> list[np.ndarray]:
        """Resizes, rescales and normalises channel-first uint8 RGB photos into float32 arrays."""
        size_rounding = kwargs.get("size_rounding") or self.size_rounding
        check_size_rounding(size_rounding)
        processed_images = []
        for index, image in enumerate(images):
            if do_resize:
                check_short_edge_resize(image.shape[1:], size, index)
                if size_rounding == "nearest" and size.shortest_edge:
                    image = self.resize(image, nearest_keep_ratio_size(image.shape[1:], size), resample)
                else:
                    image = self.resize(image, size, resample)
            if do_rescale:
                image = self.rescale(image, rescale_factor)
            if do_normalize:
                image = self.normalize(image, image_mean, image_std)
            processed_images.append(image.astype(np.float32, copy=False))
        return processed_images

    def post_process_semantic_segmentation(
        self, outputs, target_sizes: list[tuple[int, int]] | torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """
        Turns the class scores of [`GSSForSemanticSegmentation`] into label maps.

        Args:
            outputs:
                Model outputs whose `logits` are class scores of shape `(batch, num_labels, height, width)`.
            target_sizes (`list[tuple[int, int]]` or `torch.Tensor` of shape `(batch, 2)`, *optional*):
                The (height, width) of each prediction, usually the size of the original photo. The scores are
                resized bilinearly before the argmax, which gives smoother borders than resizing the label map.
                If unset, predictions keep the size of the logits.

        Returns:
            `list[torch.Tensor]`: one int64 map of shape `(height, width)` per image, with values in
            `0..num_labels - 1`, the keys of the model's `id2label`.
        """
        logits = outputs.logits
        if target_sizes is None:
            return list(logits.argmax(dim=1))
        if len(target_sizes) != len(logits):
            raise ValueError(
                f"Got {len(target_sizes)} target sizes for a batch of {len(logits)} predictions; pass one "
                "(height, width) per image."
            )
        if isinstance(target_sizes, torch.Tensor):
            target_sizes = target_sizes.tolist()
        return [
            F.interpolate(scores[None], size=tuple(target_size), mode="bilinear", align_corners=False)[0].argmax(0)
            for scores, target_size in zip(logits, target_sizes)
        ]


SIZE_ROUNDINGS = ("floor", "nearest")


def check_size_rounding(size_rounding: str) -> None:
    if size_rounding not in SIZE_ROUNDINGS:
        raise ValueError(f"`size_rounding` must be one of {SIZE_ROUNDINGS}, got {size_rounding!r}.")


def nearest_keep_ratio_size(shape: tuple[int, int], size: SizeDict) -> SizeDict:
    """mmcv's `rescale_size` for a (height, width) photo: one scale factor that brings the short side to
    `shortest_edge` without the long side passing `longest_edge` (when set), each side rounded to the nearest pixel."""
    height, width = shape
    scale = size.shortest_edge / min(height, width)
    if size.longest_edge:
        scale = min(scale, size.longest_edge / max(height, width))
    return SizeDict(height=int(height * scale + 0.5), width=int(width * scale + 0.5))


def check_short_edge_resize(shape: tuple[int, int], size: SizeDict, index: int) -> None:
    """Refuses, before resizing, a photo that a short-edge resize without a long-edge bound would blow up beyond
    MAX_PROCESSED_PIXELS (the other sizes are bounded by the numbers they give)."""
    if not size.shortest_edge or size.longest_edge:
        return
    height, width = shape
    scale = size.shortest_edge / min(height, width)
    if height * width * scale**2 > MAX_PROCESSED_PIXELS:
        side = int(MAX_PROCESSED_PIXELS**0.5)
        raise ValueError(
            f"Image {index} would be processed at about {round(width * scale)}x{round(height * scale)} pixels "
            f"(width x height), more than {side}x{side}: bound the long edge (`size={{'shortest_edge': ..., "
            "'longest_edge': ...}`) or crop the photo first."
        )


def split_batch(inputs: ImageInput, single_ndim: int, name: str) -> list:
    """Splits `inputs` into a list of single items: a list or tuple as it is, an array with one more axis than a
    single item (`single_ndim`) along its first axis, anything else as one item."""
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    if isinstance(inputs, (np.ndarray, torch.Tensor)) and inputs.ndim == single_ndim + 1:
        return list(inputs)
    if isinstance(inputs, (PIL.Image.Image, np.ndarray, torch.Tensor)):
        return [inputs]
    raise TypeError(
        f"`{name}` must be a PIL image, a NumPy array, a torch tensor or a list of them, got {type(inputs).__name__}."
    )


def as_numpy(item: PIL.Image.Image | np.ndarray | torch.Tensor, description: str) -> np.ndarray:
    """A NumPy view of a PIL image, array or tensor; anything else (a path, a nested list) is refused by name."""
    if isinstance(item, torch.Tensor):
        return item.detach().cpu().numpy()
    if isinstance(item, (PIL.Image.Image, np.ndarray)):
        return np.asarray(item)
    raise TypeError(f"{description} must be a PIL image, a NumPy array or a torch tensor, got {type(item).__name__}.")


def to_rgb_uint8(
    image: PIL.Image.Image | np.ndarray | torch.Tensor,
    index: int,
    input_data_format: str | ChannelDimension | None = None,
) -> np.ndarray:
    """Converts one photo to a channel-first uint8 RGB array by the rules in the [`GSSImageProcessor`] docstring.

    `index`, the photo's place in the batch, names it in errors; `input_data_format` says where a 3-D array keeps its
    channels, when the shape alone does not.
    """
    if isinstance(image, PIL.Image.Image) and image.mode not in HIGH_BIT_DEPTH_PIL_MODES + ("F",):
        # PIL's own conversion replicates grey, expands palettes and drops alpha.
        return np.moveaxis(np.asarray(image.convert("RGB")), -1, 0)
    array = as_numpy(image, f"Image {index}")
    if isinstance(image, PIL.Image.Image) and image.mode in HIGH_BIT_DEPTH_PIL_MODES:
        if array.min() < 0 or array.max() > UINT16_MAX:
            raise ValueError(
                f"Image {index} is a PIL image in mode {image.mode!r} with values in {array.min()}..{array.max()}, "
                f"outside the 16-bit range 0..{UINT16_MAX} that this mode is read as."
            )
        array = array.astype(np.uint16)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3:
        array = np.moveaxis(array, channel_axis(array, index, input_data_format), 0)
    else:
        raise ValueError(
            f"Image {index} has shape {array.shape}; expected (height, width), (height, width, channels) or "
            "(channels, height, width)."
        )

    if array.shape[0] not in VALID_CHANNEL_COUNTS:
        raise ValueError(
            f"Image {index} has {array.shape[0]} channels (shape {array.shape}); expected 1 (grey), 3 (RGB) or "
            "4 (RGBA)."
        )
    if array.dtype == np.uint16:
        array = ((array.astype(np.uint32) + UINT16_TO_UINT8_DIVISOR // 2) // UINT16_TO_UINT8_DIVISOR).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(
            f"Image {index} has dtype {array.dtype}; expected uint8 (0..255) or uint16 (0..65535). Float images are "
            "refused because their scale (0..1 or 0..255) is ambiguous: convert them to uint8 first."
        )
    if array.shape[0] == 1:
        return np.repeat(array, 3, axis=0)
    return array[:3]


def channel_axis(array: np.ndarray, index: int, input_data_format: str | ChannelDimension | None) -> int:
    """The channel axis (0 or 2) of a 3-D photo: the given format, else the axis that holds 1, 3 or 4 entries,
    preferring the first as transformers does."""
    if input_data_format is not None:
        return 0 if ChannelDimension(input_data_format) == ChannelDimension.FIRST else 2
    if array.shape[0] in VALID_CHANNEL_COUNTS:
        return 0
    if array.shape[2] in VALID_CHANNEL_COUNTS:
        return 2
    raise ValueError(
        f"Image {index} has shape {array.shape}, in which neither the first nor the last axis is a channel axis of "
        "1 (grey), 3 (RGB) or 4 (RGBA) channels."
    )


def to_label_map(segmentation_map: PIL.Image.Image | np.ndarray | torch.Tensor, index: int) -> np.ndarray:
    """Checks that one segmentation map is a 2-D map of integer class ids and returns it as int64 (its values are
    checked by the `LabelSpec` that converts it)."""
    array = as_numpy(segmentation_map, f"Segmentation map {index}")
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"Segmentation map {index} has shape {array.shape} and dtype {array.dtype}, but segmentation maps must "
            "be 2-D maps of integer class ids. A colour-coded label image (one RGB colour per class) must be "
            "converted to class ids first, e.g. with the dataset's palette."
        )
    return array.astype(np.int64)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes a label map to (height, width) `size` with nearest-neighbour sampling, so that no label is blended
    into a new one. PIL's 32-bit integer mode keeps class ids above 255, which the uint8 route of transformers'
    `resize` would reject, and samples the same grid as the photo's resize."""
    if labels.shape == tuple(size):
        return labels
    height, width = size
    resized = PIL.Image.fromarray(labels.astype(np.int32)).resize((width, height), resample=PILImageResampling.NEAREST)
    return np.asarray(resized).astype(np.int64)


AutoImageProcessor.register(GSSConfig, image_processor_classes={"pil": GSSImageProcessor}, exist_ok=True)
# GSS has no video processor, and says so: otherwise the pipelines' optional video-processor lookup finds this
# processor's `auto_map` and asks interactively whether to run remote code, even when gss_hf is installed.
VIDEO_PROCESSOR_MAPPING.register(GSSConfig, {}, exist_ok=True)
GSSImageProcessor.register_for_auto_class("AutoImageProcessor")

__all__ = ["GSSImageProcessor"]
