"""The label conventions of a dataset, written once: how the values in its label files become class ids.

`GSSImageProcessor` (its `label_spec`), the training datasets and the evaluation all read label maps through one
`LabelSpec`, so a rule such as "ADE20K's 0 means unlabelled" or "CamVid's 11 is void" cannot differ between the data
a model was trained on, the scores reported for it and what its saved processor does.
"""

from dataclasses import dataclass, field

import numpy as np

from .maskige import IGNORE_INDEX, out_of_range_label_values


@dataclass(frozen=True)
class LabelSpec:
    """
    Args:
        ignore_index (`int`, defaults to 255):
            The label of unlabelled pixels, which losses and scores skip (a model's `config.ignore_index`).
        void_value (`int`, *optional*):
            A label value that means unlabelled (CamVid's files: 11); it becomes `ignore_index`.
        reduce_labels (`bool`, defaults to `False`):
            The files' class ids start at 1 and 0 means unlabelled (ADE20K): 0 becomes `ignore_index`, every other
            id is lowered by one.
        id_map (`dict[int, int]`, *optional*):
            File values -> class ids (for example Cityscapes labelIds -> trainIds); values it does not list become
            `ignore_index`.

    The rules apply in that order, id map first; `ignore_index` itself always stays `ignore_index`.
    """

    ignore_index: int = IGNORE_INDEX
    void_value: int | None = None
    reduce_labels: bool = False
    id_map: dict[int, int] | None = field(default=None, hash=False)

    def __post_init__(self):
        _check_label_value(self.ignore_index, "ignore_index")
        if self.void_value is not None:
            _check_label_value(self.void_value, "void_value")
        if not isinstance(self.reduce_labels, (bool, np.bool_)):
            raise ValueError(f"`reduce_labels` must be True or False, got {self.reduce_labels!r}.")
        if self.id_map is not None:
            if not isinstance(self.id_map, dict) or not self.id_map:
                raise ValueError(f"`id_map` must be a non-empty dict of file value -> class id, got {self.id_map!r}.")
            # JSON (a saved processor) turns integer keys into strings.
            converted = {_as_label_value(key, "id_map key"): _as_label_value(value, "id_map value")
                         for key, value in self.id_map.items()}  # fmt: skip
            object.__setattr__(self, "id_map", converted)

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """(height, width) non-negative integer label-file values -> int64 class ids or `ignore_index`."""
        labels = np.asarray(labels).astype(np.int64)
        if labels.size and labels.min() < 0:
            raise ValueError(
                f"it contains the negative label {labels.min()}; class ids must be >= 0 (unlabelled pixels use the "
                "ignore index)."
            )
        unlabelled = labels == self.ignore_index
        if self.id_map is not None:
            lookup = np.full(max(labels.max(initial=0), max(self.id_map)) + 1, self.ignore_index, dtype=np.int64)
            lookup[list(self.id_map)] = list(self.id_map.values())
            labels = lookup[labels]
        if self.void_value is not None:
            unlabelled |= labels == self.void_value
        if self.reduce_labels:
            unlabelled |= labels == 0
            labels = labels - 1
        labels[unlabelled] = self.ignore_index
        return labels

    def check(self, labels: np.ndarray, num_labels: int, where: str) -> None:
        """Raises `ValueError` naming `where` unless every value of the converted `labels` is a class id in
        0..num_labels-1 or `ignore_index`, with a hint at the option that probably fixes it."""
        bad_values = out_of_range_label_values(labels, num_labels, self.ignore_index)
        if bad_values:
            example = bad_values[0]
            raise ValueError(
                f"The label map {where} holds {bad_values}, neither class ids (0..{num_labels - 1}) nor the ignore "
                f"index {self.ignore_index}. If {example} means unlabelled, pass --void_value {example}; if the "
                "class ids start at 1 with 0 for unlabelled, pass --reduce_labels."
            )


def _check_label_value(value, name: str) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")


def _as_label_value(value, name: str) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    _check_label_value(value, name)
    return int(value)


__all__ = ["LabelSpec"]
