"""Segmentation data for the GSS training scripts: splits from a Hub id or a local folder, photos and label maps read
with errors that name the file, the paper's training augmentation (spec §5) and a deterministic sampling order.

- `layouts`: the data arguments, and the splits of a Hub dataset, a local folder or a save_to_disk folder;
- `reading`: photos and label maps read and checked, and the SegNet/CamVid photo reader;
- `augmentation`: the training augmentation (resize, pad, crop, flip, photometric distortion);
- `samples`: the sampler, the train and eval datasets and batch collation;
- `synthetic`: synthetic label maps for tokenizer training.
"""

from gss_hf import IGNORE_INDEX
from training.data.augmentation import SegmentationAugmentation
from training.data.layouts import (
    CAMVID_VOID_VALUE,
    add_data_arguments,
    load_segmentation_splits,
    load_splits_from_args,
)
from training.data.reading import (
    check_split_files,
    read_camvid_val_photos,
    read_image,
    read_label_map,
    read_segnet_photos_and_labels,
)
from training.data.samples import (
    EpochSampler,
    SegmentationEvalDataset,
    SegmentationTrainDataset,
    collate_segmentation,
)
from training.data.synthetic import SyntheticLabelDataset, synthetic_label_map


__all__ = [
    "CAMVID_VOID_VALUE",
    "IGNORE_INDEX",
    "EpochSampler",
    "SegmentationAugmentation",
    "SegmentationEvalDataset",
    "SegmentationTrainDataset",
    "SyntheticLabelDataset",
    "add_data_arguments",
    "check_split_files",
    "collate_segmentation",
    "load_segmentation_splits",
    "load_splits_from_args",
    "read_camvid_val_photos",
    "read_image",
    "read_label_map",
    "read_segnet_photos_and_labels",
    "synthetic_label_map",
]
