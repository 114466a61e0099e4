"""Evaluation metrics for the training scripts, in torch and streaming.

Label maps stay on the accelerator: each batch only adds to a (num_labels, num_labels) confusion matrix, which is
summed over processes once at the end. The scores themselves come from the `gss_miou` evaluate module, so the numbers
the scripts report and the ones `evaluate.load("training/gss_miou")` gives cannot drift apart.
"""

import math

import torch
from training.gss_miou.gss_miou import class_names, scores_from_confusion_matrix


_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class StreamingConfusionMatrix:
    """Accumulates a (num_labels, num_labels) int64 confusion matrix over batches, on the predictions' device.

    Rows are reference classes, columns predicted classes. Pixels whose reference is `ignore_index` are skipped; any
    other reference or prediction outside 0..num_labels-1 raises, as in `gss_miou.confusion_matrix`.
    """

    def __init__(self, num_labels: int, ignore_index: int = 255):
        if num_labels < 1:
            raise ValueError(f"num_labels must be at least 1, got {num_labels}.")
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_labels, num_labels, dtype=torch.int64)

    def update(self, predictions: torch.Tensor, references: torch.Tensor) -> None:
        """Adds a batch of (batch, height, width) predicted and reference class ids."""
        if predictions.shape != references.shape or predictions.dim() != 3:
            raise ValueError(
                "predictions and references must both be (batch, height, width) label maps, got shapes "
                f"{tuple(predictions.shape)} and {tuple(references.shape)}."
            )
        for name, tensor in (("predictions", predictions), ("references", references)):
            if tensor.dtype not in _INTEGER_DTYPES:
                raise ValueError(f"{name} must hold integer class ids, got dtype {tensor.dtype}.")
        if predictions.device != references.device:
            raise ValueError(
                f"predictions and references must be on the same device, got {predictions.device} and "
                f"{references.device}."
            )
        labelled = references != self.ignore_index
        references, predictions = references[labelled].long(), predictions[labelled].long()
        for name, labels in (("references", references), ("predictions", predictions)):
            out_of_range = labels[(labels < 0) | (labels >= self.num_labels)]
            if out_of_range.numel():
                raise ValueError(
                    f"{name} hold class ids {out_of_range.unique()[:10].tolist()} outside "
                    f"0..{self.num_labels - 1} at labelled pixels (ignore_index={self.ignore_index})."
                )
        counts = torch.bincount(references * self.num_labels + predictions, minlength=self.num_labels**2)
        self.matrix = self.matrix.to(predictions.device) + counts.view(self.num_labels, self.num_labels)

    def reduce(self, accelerator) -> None:
        """Sums the matrix over all processes, so that every process holds the global one. Call it once, after the
        last `update`: a second call would add the global matrices up again."""
        self.matrix = accelerator.reduce(self.matrix.to(accelerator.device), reduction="sum")

    def compute(self, id2label: dict[int, str] | None = None) -> dict:
        """mean_iou, mean_accuracy, overall_accuracy and per-class IoU and accuracy lists, as plain Python values
        ready for `json.dumps`: an undefined score (NaN, e.g. a class absent from references and predictions) is
        None. With `id2label`, also `per_category_iou_by_name` and `per_category_accuracy_by_name`."""
        scores = scores_from_confusion_matrix(self.matrix.cpu().numpy())
        results = {
            "mean_iou": _none_if_nan(scores["mean_iou"]),
            "mean_accuracy": _none_if_nan(scores["mean_accuracy"]),
            "overall_accuracy": _none_if_nan(scores["overall_accuracy"]),
            "per_category_iou": [_none_if_nan(value) for value in scores["per_category_iou"].tolist()],
            "per_category_accuracy": [_none_if_nan(value) for value in scores["per_category_accuracy"].tolist()],
        }
        if id2label is not None:
            names = class_names(id2label, self.num_labels)
            results["per_category_iou_by_name"] = dict(zip(names, results["per_category_iou"]))
            results["per_category_accuracy_by_name"] = dict(zip(names, results["per_category_accuracy"]))
        return results


def _none_if_nan(value: float) -> float | None:
    """JSON has no NaN: an undefined score becomes null."""
    return None if math.isnan(value) else value


def count_tokens(token_ids: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """(codebook_size,) int64 count of each codebook index in `token_ids` (any shape), on their device."""
    if token_ids.dtype not in _INTEGER_DTYPES:
        raise ValueError(f"token_ids must hold integer codebook indices, got dtype {token_ids.dtype}.")
    token_ids = token_ids.flatten().long()
    if token_ids.numel() and (token_ids.min() < 0 or token_ids.max() >= codebook_size):
        raise ValueError(
            f"token_ids range over {token_ids.min().item()}..{token_ids.max().item()}, outside the codebook "
            f"0..{codebook_size - 1}."
        )
    return torch.bincount(token_ids, minlength=codebook_size)


def codebook_usage(token_counts: torch.Tensor) -> dict:
    """How much of the codebook the tokenizer uses, from (codebook_size,) counts of each token id.

    `perplexity` is exp(entropy) of the usage distribution: n when n codes are used equally often, codebook_size at
    best, 1 when a single code is used (codebook collapse). `live_codes` counts codes used at least once.
    """
    if token_counts.dim() != 1:
        raise ValueError(f"token_counts must be a (codebook_size,) tensor, got shape {tuple(token_counts.shape)}.")
    total = token_counts.sum()
    if total <= 0:
        raise ValueError("token_counts holds no token: codebook usage is undefined.")
    probabilities = token_counts[token_counts > 0].double() / total
    entropy = -(probabilities * probabilities.log()).sum()
    return {
        "perplexity": entropy.exp().item(),
        "live_codes": int((token_counts > 0).sum().item()),
        "codebook_size": token_counts.numel(),
    }


def error_detection_scores(uncertainty: torch.Tensor, errors: torch.Tensor) -> dict:
    """How well an uncertainty marks wrong pixels: the AUROC and the average precision of "this pixel is
    misclassified" ranked by `uncertainty` (higher: more likely wrong).

    Exact with ties (pixels of equal uncertainty are one threshold): AUROC counts a tie as half a correct ordering,
    and the average precision is sum_t (R_t - R_t-1) P_t over the distinct thresholds t from the highest, as
    scikit-learn's `roc_auc_score` and `average_precision_score` define them.

    Args:
        uncertainty: scores of any shape; errors: booleans of the same shape (True: the pixel is misclassified).
    """
    if uncertainty.shape != errors.shape:
        raise ValueError(f"uncertainty {tuple(uncertainty.shape)} and errors {tuple(errors.shape)} differ in shape.")
    errors = errors.flatten().bool()
    num_errors = int(errors.sum())
    num_correct = errors.numel() - num_errors
    if num_errors == 0 or num_correct == 0:
        raise ValueError(
            f"error detection needs both wrong and right pixels, got {num_errors} wrong and {num_correct} right."
        )
    values, inverse = torch.unique(uncertainty.flatten().double(), return_inverse=True)  # ascending
    wrong = torch.bincount(inverse, weights=errors.double(), minlength=len(values))
    right = torch.bincount(inverse, minlength=len(values)).double() - wrong
    right_below = torch.cumsum(right, 0) - right
    auroc = (wrong * (right_below + 0.5 * right)).sum() / (num_errors * num_correct)
    true_positives, false_positives = torch.cumsum(wrong.flip(0), 0), torch.cumsum(right.flip(0), 0)
    precision = true_positives / (true_positives + false_positives)
    recall_gain = wrong.flip(0) / num_errors
    return {
        "auroc": auroc.item(),
        "average_precision": (recall_gain * precision).sum().item(),
        "error_rate": num_errors / errors.numel(),
    }
