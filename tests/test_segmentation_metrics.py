"""The scores: the gss_miou evaluate module (NumPy, loaded by path) and the streaming torch confusion matrix of the
training scripts, against hand-computed confusion matrices and against each other."""

import json
import math
from pathlib import Path

import evaluate
import numpy as np
import pytest
import torch
from accelerate import Accelerator

from training.gss_miou.gss_miou import confusion_matrix, scores_from_confusion_matrix
from training.metrics import StreamingConfusionMatrix, codebook_usage, count_tokens, error_detection_scores


TRAINING_DIR = Path(__file__).resolve().parents[1] / "training"


IGNORE = 255

# Two images of different sizes, 3 classes, one ignored pixel each.
PREDICTION_1 = np.array([[0, 0, 1], [1, 2, 2]])
REFERENCE_1 = np.array([[0, 1, 1], [1, 2, IGNORE]])
PREDICTION_2 = np.array([[2, 0], [0, 0]])
REFERENCE_2 = np.array([[2, 2], [0, IGNORE]])
# (reference, prediction) pairs, ignored pixels left out:
#   image 1: (0,0) (1,0) (1,1) (1,1) (2,2)      image 2: (2,2) (2,0) (0,0)
# rows = reference, columns = prediction:
HAND_MATRIX = np.array(
    [
        [2, 0, 0],  # reference 0: predicted 0 twice
        [1, 2, 0],  # reference 1: predicted 0 once, 1 twice
        [1, 0, 2],  # reference 2: predicted 0 once, 2 twice
    ]
)
# row sums 2, 3, 3; column sums 4, 2, 2; diagonal 2, 2, 2
# IoU = diag / (row + column - diag): 2/(2+4-2) = 1/2, 2/(3+2-2) = 2/3, 2/(3+2-2) = 2/3
HAND_IOU = [1 / 2, 2 / 3, 2 / 3]
# accuracy = diag / row: 2/2, 2/3, 2/3
HAND_ACCURACY = [1.0, 2 / 3, 2 / 3]
HAND_MEAN_IOU = (1 / 2 + 2 / 3 + 2 / 3) / 3  # = 11/18
HAND_MEAN_ACCURACY = (1 + 2 / 3 + 2 / 3) / 3  # = 7/9
HAND_OVERALL_ACCURACY = 6 / 8  # diagonal 6 of 8 labelled pixels


def streaming_matrix_of(pairs: list[tuple[np.ndarray, np.ndarray]], num_labels: int) -> StreamingConfusionMatrix:
    """One `update` per (prediction, reference) pair, each as a batch of one."""
    matrix = StreamingConfusionMatrix(num_labels, IGNORE)
    for prediction, reference in pairs:
        matrix.update(torch.from_numpy(prediction)[None], torch.from_numpy(reference)[None])
    return matrix


def random_label_maps(
    seed: int, shapes: list[tuple[int, ...]], used_labels: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(prediction, reference) pairs with ids in 0..used_labels-1 and about 20% ignored reference pixels."""
    rng = np.random.default_rng(seed)
    pairs = []
    for shape in shapes:
        reference = rng.integers(0, used_labels, shape)
        reference[rng.random(shape) < 0.2] = IGNORE
        pairs.append((rng.integers(0, used_labels, shape), reference))
    return pairs


def test_confusion_matrix_and_scores_match_hand_computation():
    matrix = confusion_matrix(PREDICTION_1, REFERENCE_1, 3, IGNORE) + confusion_matrix(
        PREDICTION_2, REFERENCE_2, 3, IGNORE
    )
    np.testing.assert_array_equal(matrix, HAND_MATRIX)
    assert matrix.dtype == np.int64

    scores = scores_from_confusion_matrix(matrix)
    np.testing.assert_allclose(scores["per_category_iou"], HAND_IOU)
    np.testing.assert_allclose(scores["per_category_accuracy"], HAND_ACCURACY)
    assert scores["mean_iou"] == pytest.approx(HAND_MEAN_IOU)
    assert scores["mean_accuracy"] == pytest.approx(HAND_MEAN_ACCURACY)
    assert scores["overall_accuracy"] == pytest.approx(HAND_OVERALL_ACCURACY)


def test_streaming_matrix_matches_hand_computation_and_one_shot():
    streaming = streaming_matrix_of([(PREDICTION_1, REFERENCE_1), (PREDICTION_2, REFERENCE_2)], num_labels=3)
    np.testing.assert_array_equal(streaming.matrix.numpy(), HAND_MATRIX)
    assert streaming.matrix.dtype == torch.int64

    results = streaming.compute()
    assert results["mean_iou"] == pytest.approx(HAND_MEAN_IOU)
    assert results["per_category_accuracy"] == pytest.approx(HAND_ACCURACY)

    # Several batches of several images add up to the matrix of all images in one batch.
    pairs = random_label_maps(seed=0, shapes=[(6, 5, 7)] * 3, used_labels=4)
    batches = [(torch.from_numpy(prediction), torch.from_numpy(reference)) for prediction, reference in pairs]
    in_batches = StreamingConfusionMatrix(4, IGNORE)
    for predictions, references in batches:
        in_batches.update(predictions, references)
    one_shot = StreamingConfusionMatrix(4, IGNORE)
    one_shot.update(torch.cat([p for p, _ in batches]), torch.cat([r for _, r in batches]))
    torch.testing.assert_close(in_batches.matrix, one_shot.matrix)
    all_predictions = np.concatenate([p for p, _ in pairs])
    all_references = np.concatenate([r for _, r in pairs])
    np.testing.assert_array_equal(
        in_batches.matrix.numpy(), confusion_matrix(all_predictions, all_references, 4, IGNORE)
    )


def test_ignored_pixels_count_nowhere():
    (prediction, reference), = random_label_maps(seed=1, shapes=[(2, 8, 8)], used_labels=3)
    ignored = reference == IGNORE
    assert ignored.any()
    matrix = streaming_matrix_of([(prediction[0], reference[0]), (prediction[1], reference[1])], num_labels=3).matrix
    assert matrix.sum().item() == (~ignored).sum()

    # Whatever is predicted at ignored pixels, even an id outside the classes, changes nothing.
    scrambled = prediction.copy()
    scrambled[ignored] = 99
    np.testing.assert_array_equal(
        confusion_matrix(scrambled, reference, 3, IGNORE), confusion_matrix(prediction, reference, 3, IGNORE)
    )
    other = StreamingConfusionMatrix(3, IGNORE)
    other.update(torch.from_numpy(scrambled), torch.from_numpy(reference))
    torch.testing.assert_close(other.matrix, matrix)


def test_nan_classes_are_left_out_of_the_means():
    # 3 classes; class 1 appears nowhere, class 2 only in the prediction.
    prediction = np.array([[0, 2]])
    reference = np.array([[0, 0]])
    # matrix rows: reference 0 -> [1, 0, 1]; references 1 and 2 -> no pixel
    # IoU:      class 0: 1 / (2 + 1 - 1) = 1/2;  class 1: 0/0 = NaN;  class 2: 0 / (0 + 1 - 0) = 0
    # accuracy: class 0: 1/2;                     class 1: 0/0 = NaN;  class 2: 0/0 = NaN (no reference pixel)
    # mIoU = (1/2 + 0) / 2 = 1/4;  mAcc = 1/2;  aAcc = 1 / 2
    scores = scores_from_confusion_matrix(confusion_matrix(prediction, reference, 3, IGNORE))
    np.testing.assert_array_equal(scores["per_category_iou"], [0.5, np.nan, 0.0])
    np.testing.assert_array_equal(scores["per_category_accuracy"], [0.5, np.nan, np.nan])
    assert (scores["mean_iou"], scores["mean_accuracy"], scores["overall_accuracy"]) == (0.25, 0.5, 0.5)

    results = streaming_matrix_of([(prediction, reference)], num_labels=3).compute({0: "road", 1: "car", 2: "sky"})
    assert results["per_category_iou"] == [0.5, None, 0.0]
    assert results["per_category_accuracy_by_name"] == {"road": 0.5, "car": None, "sky": None}
    assert results["mean_iou"] == 0.25
    json.dumps(results, allow_nan=False)  # NaN would not be valid JSON

    # Nothing labelled at all: every score is undefined, without a warning or a division error.
    empty = scores_from_confusion_matrix(np.zeros((3, 3), dtype=np.int64))
    assert all(math.isnan(empty[key]) for key in ("mean_iou", "mean_accuracy", "overall_accuracy"))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="outside 0..2"):
        confusion_matrix(np.array([[0, 1]]), np.array([[0, 3]]), 3, IGNORE)
    with pytest.raises(ValueError, match="predictions hold class ids \\[-1\\]"):
        confusion_matrix(np.array([[0, -1]]), np.array([[0, 1]]), 3, IGNORE)
    with pytest.raises(ValueError, match="same shape"):
        confusion_matrix(np.zeros((2, 2), dtype=int), np.zeros((2, 3), dtype=int), 3, IGNORE)

    matrix = StreamingConfusionMatrix(3, IGNORE)
    with pytest.raises(ValueError, match="references hold class ids \\[7\\]"):
        matrix.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))
    with pytest.raises(ValueError, match="batch, height, width"):
        matrix.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class ids"):
        matrix.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="no name for class ids \\[2\\]"):
        matrix.compute({0: "road", 1: "car"})
    assert matrix.matrix.sum() == 0  # rejected batches added nothing


def test_evaluate_module_loaded_by_path_agrees_with_streaming_matrix():
    gss_miou = evaluate.load(str(TRAINING_DIR / "gss_miou"), keep_in_memory=True)
    assert "chen2023generative" in gss_miou.info.citation

    # Class 4 is never used, so the NaN path is compared too.
    pairs = random_label_maps(seed=2, shapes=[(5, 7), (6, 4), (3, 9)], used_labels=4)
    id2label = {class_id: f"class {class_id}" for class_id in range(5)}
    expected = streaming_matrix_of(pairs, num_labels=5).compute(id2label)
    results = gss_miou.compute(
        predictions=[p for p, _ in pairs], references=[r for _, r in pairs], num_labels=5, ignore_index=IGNORE,
        id2label=id2label,
    )

    def as_float(values: list) -> list[float]:
        return [math.nan if value is None else value for value in values]

    for key in ("mean_iou", "mean_accuracy", "overall_accuracy"):
        assert results[key] == pytest.approx(expected[key])
    for key in ("per_category_iou", "per_category_accuracy"):
        np.testing.assert_allclose(results[key], as_float(expected[key]))
    assert list(results["per_category_iou_by_name"]) == list(id2label.values())
    np.testing.assert_allclose(
        list(results["per_category_iou_by_name"].values()), as_float(expected["per_category_iou"])
    )
    assert math.isnan(results["per_category_iou"][4])

    with pytest.raises(ValueError, match="outside 0..4"):
        gss_miou.compute(
            predictions=[np.full((2, 2), 5)], references=[np.zeros((2, 2), int)], num_labels=5, ignore_index=IGNORE
        )


def test_reduce_with_one_process_keeps_the_matrix():
    streaming = streaming_matrix_of([(PREDICTION_1, REFERENCE_1), (PREDICTION_2, REFERENCE_2)], num_labels=3)
    streaming.reduce(Accelerator(cpu=True))
    np.testing.assert_array_equal(streaming.matrix.numpy(), HAND_MATRIX)
    assert streaming.matrix.dtype == torch.int64


def test_codebook_usage_on_known_counts():
    # Uniform over 5 of 16 codes: entropy log 5, perplexity 5.
    uniform = torch.tensor([3, 0, 3, 3, 0, 3, 3] + [0] * 9)
    assert codebook_usage(uniform) == {"perplexity": pytest.approx(5.0), "live_codes": 5, "codebook_size": 16}
    # One code only: collapse, perplexity 1.
    assert codebook_usage(torch.tensor([0, 7, 0]))["perplexity"] == pytest.approx(1.0)
    # p = (1/4, 1/4, 1/2): entropy = 1.5 log 2, perplexity 2 ** 1.5.
    assert codebook_usage(torch.tensor([1, 1, 2]))["perplexity"] == pytest.approx(2**1.5)
    with pytest.raises(ValueError, match="no token"):
        codebook_usage(torch.zeros(4, dtype=torch.long))


def test_count_tokens():
    token_ids = torch.tensor([[[0, 3], [3, 3]], [[1, 0], [3, 0]]])  # (batch, height, width)
    counts = count_tokens(token_ids, codebook_size=6)
    assert counts.tolist() == [3, 1, 0, 4, 0, 0]
    assert counts.dtype == torch.int64
    with pytest.raises(ValueError, match="outside the codebook"):
        count_tokens(torch.tensor([0, 6]), codebook_size=6)


def brute_force_error_detection(scores: list[float], errors: list[bool]) -> tuple[float, float]:
    """AUROC over every (wrong, right) pair and average precision over every distinct threshold, by definition."""
    wrong = [score for score, error in zip(scores, errors) if error]
    right = [score for score, error in zip(scores, errors) if not error]
    auroc = sum((w > r) + 0.5 * (w == r) for w in wrong for r in right) / (len(wrong) * len(right))
    average_precision, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores), reverse=True):
        flagged = [error for score, error in zip(scores, errors) if score >= threshold]
        recall = sum(flagged) / len(wrong)
        average_precision += (recall - previous_recall) * sum(flagged) / len(flagged)
        previous_recall = recall
    return auroc, average_precision


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_detection_scores_equal_their_definitions_with_ties(seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (4, 15), generator=generator).float() / 5  # many ties
    errors = torch.rand(4, 15, generator=generator) < 0.3 + 0.1 * scores
    result = error_detection_scores(scores, errors)
    auroc, average_precision = brute_force_error_detection(scores.flatten().tolist(), errors.flatten().tolist())
    assert result["auroc"] == pytest.approx(auroc) and result["average_precision"] == pytest.approx(average_precision)
    assert result["error_rate"] == pytest.approx(errors.float().mean().item())


def test_error_detection_scores_of_perfect_inverted_and_constant_uncertainties():
    errors = torch.tensor([True, False, True, False, False])
    perfect = error_detection_scores(errors.float(), errors)
    assert perfect["auroc"] == 1.0 and perfect["average_precision"] == 1.0
    assert error_detection_scores(-errors.float(), errors)["auroc"] == 0.0
    constant = error_detection_scores(torch.ones(5), errors)
    assert constant["auroc"] == 0.5 and constant["average_precision"] == pytest.approx(2 / 5)


def test_error_detection_scores_refuse_one_class_and_mismatched_shapes():
    with pytest.raises(ValueError, match="needs both wrong and right pixels, got 0 wrong and 3 right"):
        error_detection_scores(torch.rand(3), torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"uncertainty \(3,\) and errors \(4,\) differ in shape"):
        error_detection_scores(torch.rand(3), torch.zeros(4, dtype=torch.bool))
