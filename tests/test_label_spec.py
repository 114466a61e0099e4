"""LabelSpec: the one rule by which label files become class ids, in the processor, the training data and the
evaluation alike."""

import numpy as np
import pytest
import torch

from gss_hf import GSSImageProcessor
from gss_hf.label_spec import LabelSpec
from gss_hf.maskige import out_of_range_label_values


RAW = np.array([[0, 1, 2, 3], [11, 255, 7, 8]], dtype=np.uint8)


def test_void_value_and_reduce_labels():
    np.testing.assert_array_equal(LabelSpec().apply(RAW), RAW)
    np.testing.assert_array_equal(LabelSpec(void_value=11).apply(RAW), [[0, 1, 2, 3], [255, 255, 7, 8]])
    np.testing.assert_array_equal(LabelSpec(reduce_labels=True).apply(RAW), [[255, 0, 1, 2], [10, 255, 6, 7]])
    assert LabelSpec(void_value=11, reduce_labels=True).apply(RAW).dtype == np.int64


def test_an_id_map_applies_first_and_unlisted_values_become_the_ignore_index():
    spec = LabelSpec(ignore_index=250, id_map={7: 0, 8: 1, 3: 2})
    np.testing.assert_array_equal(spec.apply(RAW), [[250, 250, 250, 2], [250, 250, 0, 1]])


def test_the_ignore_index_itself_always_stays():
    labels = np.array([[250, 0, 5]])
    np.testing.assert_array_equal(LabelSpec(ignore_index=250, reduce_labels=True).apply(labels), [[250, 250, 4]])


def test_id_map_keys_from_json_are_integers_again():
    assert LabelSpec(id_map={"7": 0, "8": 1}).id_map == {7: 0, 8: 1}


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"ignore_index": -1}, "`ignore_index` must be a non-negative integer"),
        ({"void_value": "11"}, "`void_value` must be a non-negative integer"),
        ({"reduce_labels": 1}, "`reduce_labels` must be True or False"),
        ({"id_map": {}}, "`id_map` must be a non-empty dict"),
        ({"id_map": {"a": 1}}, "`id_map key` must be a non-negative integer"),
    ],
)
def test_bad_settings_are_refused_when_made(settings, match):
    with pytest.raises(ValueError, match=match):
        LabelSpec(**settings)


def test_negative_values_are_refused():
    with pytest.raises(ValueError, match="negative label -3"):
        LabelSpec().apply(np.array([[0, -3]]))


def test_check_names_the_map_and_the_remedies():
    spec = LabelSpec()
    spec.check(np.array([[0, 10, 255]]), 11, "x.png")
    with pytest.raises(ValueError, match=r"x\.png holds \[11, 12\].*--void_value 11.*--reduce_labels"):
        spec.check(np.array([[0, 11, 12, 255]]), 11, "x.png")


def test_one_range_rule_for_arrays_and_tensors():
    values = [[0, 4, 5, 255, 300, -1]]
    assert out_of_range_label_values(np.array(values), 5, 255) == [-1, 5, 300]
    assert out_of_range_label_values(torch.tensor(values), 5, 255) == [-1, 5, 300]
    assert out_of_range_label_values(torch.tensor([[0, 255]]), 5, 255) == []


def test_the_processor_converts_label_maps_by_its_spec_and_saves_it(tmp_path):
    processor = GSSImageProcessor(do_resize=False, void_value=11, ignore_index=250)
    assert processor.label_spec == LabelSpec(ignore_index=250, void_value=11)
    photo = np.zeros((2, 4, 3), dtype=np.uint8)
    labels = processor(images=photo, segmentation_maps=RAW, return_tensors="np")["labels"][0]
    np.testing.assert_array_equal(labels, LabelSpec(ignore_index=250, void_value=11).apply(RAW))
    processor.save_pretrained(tmp_path)
    assert GSSImageProcessor.from_pretrained(tmp_path).label_spec == processor.label_spec
