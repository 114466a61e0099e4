"""Mean IoU for semantic segmentation, computed from one confusion matrix, loadable offline by path.

`evaluate.load("mean_iou")` fetches its script from the Hub; `evaluate.load("path/to/gss_miou")` copies only this one
file into the modules cache and imports it, so it must stay self-contained: NumPy, `datasets` and `evaluate` only, no
sibling imports. It is also the single implementation of the scores: the torch training scripts accumulate a
confusion matrix and call `scores_from_confusion_matrix` from here.
"""

import datasets
import numpy as np

import evaluate


_DESCRIPTION = """\
Mean Intersection-over-Union (mIoU), mean class accuracy (mAcc) and overall pixel accuracy (aAcc) for semantic
segmentation, as reported by Generative Semantic Segmentation (GSS, CVPR 2023) and MMSegmentation. All pixels of all
images are accumulated into one (num_labels, num_labels) confusion matrix first, so every score is a dataset-level
ratio (not an average of per-image scores). Pixels whose reference is `ignore_index` are skipped. Same names and
conventions as the `mean_iou` metric of evaluate: a class's IoU is NaN when it is absent from both the references and
the predictions, its accuracy is NaN when it is absent from the references, and NaN classes are left out of the
means. Unlike `mean_iou`, labels outside 0..num_labels-1 raise instead of being dropped silently.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[np.ndarray]`):
        Predicted label maps, each of shape (height, width), integer class ids in 0..num_labels-1.
    references (`list[np.ndarray]`):
        Reference label maps, each of the same shape as its prediction, class ids in 0..num_labels-1 or
        `ignore_index`. Different pairs may have different sizes.
    num_labels (`int`):
        Number of classes.
    ignore_index (`int`):
        Reference value of unlabelled pixels (255 in most datasets); those pixels count nowhere.
    id2label (`dict[int, str]`, *optional*):
        Class names; when given, the output also holds `per_category_iou_by_name`.

Returns:
    mean_iou (`float`): IoU averaged over the classes whose IoU is not NaN.
    mean_accuracy (`float`): accuracy averaged over the classes present in the references.
    overall_accuracy (`float`): correctly classified pixels / all labelled pixels.
    per_category_iou (`np.ndarray` of shape (num_labels,)): intersection / union per class, NaN when the union is 0.
    per_category_accuracy (`np.ndarray` of shape (num_labels,)): intersection / reference pixels per class, NaN
        when the class has no reference pixel.
    per_category_iou_by_name (`dict[str, float]`): only with `id2label`.

Examples:

    >>> import numpy as np
    >>> gss_miou = evaluate.load("training/gss_miou")
    >>> predictions = [np.array([[0, 1], [1, 1]])]
    >>> references = [np.array([[0, 1], [0, 255]])]
    >>> results = gss_miou.compute(predictions=predictions, references=references, num_labels=2, ignore_index=255)
    >>> print(results["mean_iou"], results["overall_accuracy"])
    0.5 0.6666666666666666
"""

_CITATION = """\
@inproceedings{chen2023generative,
  title = {Generative Semantic Segmentation},
  author = {Chen, Jiaqi and Lu, Jiachen and Zhu, Xiatian and Zhang, Li},
  booktitle = {CVPR},
  year = {2023}
}
"""


def confusion_matrix(
    predictions: np.ndarray, references: np.ndarray, num_labels: int, ignore_index: int
) -> np.ndarray:
    """Pixel counts per (reference class, predicted class) over label maps of any matching shape.

    Returns a (num_labels, num_labels) int64 matrix: rows are reference classes, columns predicted classes. Pixels
    whose reference is `ignore_index` are skipped, whatever their prediction; every other reference and prediction
    must lie in 0..num_labels-1, since silently dropping a bad id would inflate the scores.
    """
    predictions, references = np.asarray(predictions), np.asarray(references)
    if predictions.shape != references.shape:
        raise ValueError(
            f"predictions and references must have the same shape, got {predictions.shape} and {references.shape}."
        )
    for name, array in (("predictions", predictions), ("references", references)):
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class ids, got dtype {array.dtype}.")
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1, got {num_labels}.")
    labelled = references != ignore_index
    references, predictions = references[labelled].astype(np.int64), predictions[labelled].astype(np.int64)
    for name, labels in (("references", references), ("predictions", predictions)):
        out_of_range = labels[(labels < 0) | (labels >= num_labels)]
        if out_of_range.size:
            raise ValueError(
                f"{name} hold class ids {np.unique(out_of_range)[:10].tolist()} outside 0..{num_labels - 1} at "
                f"labelled pixels (ignore_index={ignore_index})."
            )
    counts = np.bincount(references * num_labels + predictions, minlength=num_labels * num_labels)
    return counts.reshape(num_labels, num_labels).astype(np.int64)


def scores_from_confusion_matrix(matrix: np.ndarray) -> dict:
    """mIoU, mAcc, aAcc and the per-class IoU and accuracy of a (num_labels, num_labels) confusion matrix (rows =
    reference, columns = prediction), with evaluate's `mean_iou` names and NaN conventions."""
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be square (num_labels, num_labels), got shape {matrix.shape}.")
    matrix = matrix.astype(np.float64)
    intersection = np.diag(matrix)
    reference_area = matrix.sum(axis=1)
    union = reference_area + matrix.sum(axis=0) - intersection
    per_category_iou = _ratio(intersection, union)
    per_category_accuracy = _ratio(intersection, reference_area)
    labelled_pixels = reference_area.sum()
    return {
        "mean_iou": _mean_ignoring_nan(per_category_iou),
        "mean_accuracy": _mean_ignoring_nan(per_category_accuracy),
        "overall_accuracy": float(intersection.sum() / labelled_pixels) if labelled_pixels else float("nan"),
        "per_category_iou": per_category_iou,
        "per_category_accuracy": per_category_accuracy,
    }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (an undefined score, not a zero one)."""
    ratio = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=ratio, where=denominator > 0)
    return ratio


def _mean_ignoring_nan(values: np.ndarray) -> float:
    """Mean over the defined (non-NaN) values; NaN, without numpy's empty-slice warning, when none is defined."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def class_names(id2label: dict[int, str], num_labels: int) -> list[str]:
    """The names of classes 0..num_labels-1; `id2label` keys may be ints or their strings (as in a JSON config)."""
    names = {int(class_id): name for class_id, name in id2label.items()}
    missing = [class_id for class_id in range(num_labels) if class_id not in names]
    if missing:
        raise ValueError(f"id2label has no name for class ids {missing} (num_labels={num_labels}).")
    return [names[class_id] for class_id in range(num_labels)]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class GSSMeanIoU(evaluate.Metric):
    """mIoU / mAcc / aAcc over a list of label maps, without Hub access (see the module docstring)."""

    def _info(self) -> evaluate.MetricInfo:
        # int32, not uint16 like `mean_iou`: a negative or too large id must reach `confusion_matrix`'s check rather
        # than fail (or wrap) in the Arrow cast.
        label_map = datasets.List(datasets.List(datasets.Value("int32")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label_map, "references": label_map}),
            homepage="https://arxiv.org/abs/2303.11316",
            license="apache-2.0",
            codebase_urls=["https://github.com/fudan-zvg/GSS"],
            reference_urls=[
                "https://github.com/open-mmlab/mmsegmentation/blob/main/mmseg/evaluation/metrics/iou_metric.py",
                "https://huggingface.co/spaces/evaluate-metric/mean_iou",
            ],
        )

    def _compute(
        self,
        predictions: list,
        references: list,
        num_labels: int,
        ignore_index: int,
        id2label: dict[int, str] | None = None,
    ) -> dict:
        matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
        for index, (prediction, reference) in enumerate(zip(predictions, references)):
            prediction, reference = np.asarray(prediction), np.asarray(reference)
            if prediction.ndim != 2 or prediction.shape != reference.shape:
                raise ValueError(
                    f"Pair {index}: prediction and reference must be 2-D label maps of the same shape, got "
                    f"{prediction.shape} and {reference.shape}."
                )
            matrix += confusion_matrix(prediction, reference, num_labels, ignore_index)
        scores = scores_from_confusion_matrix(matrix)
        if id2label is not None:
            names = class_names(id2label, num_labels)
            scores["per_category_iou_by_name"] = dict(zip(names, scores["per_category_iou"].tolist()))
        return scores
