"""The one set of input validators (howsure.core.validation): the shared primitives find the
first offending value, every array check raises ScoresError, which each layer's callers still
catch under their own type, and the decision and store checks behave as their originals."""

from __future__ import annotations

import numpy as np
import pytest

from howsure.core import validation as V
from howsure.errors import CalibrationError, DataError, PolicyError, ScoresError, StoreError


def test_first_bad_is_the_first_true_entry_in_row_major_order():
    assert V.first_bad(np.array([False, False])) is None
    assert V.first_bad(np.array([False, True, True])) == (1,)
    assert V.first_bad(np.array([[False, False], [True, False], [False, True]])) == (1, 0)


@pytest.mark.parametrize(
    "values,match",
    [
        ("abc", r"^y must be numeric; could not convert string to float: 'abc'$"),
        ([[0.1]], r"^y has shape \(1, 1\); expected a 1-D array of items$"),
        ([], r"^y is empty; expected at least one item$"),
        ([0.1, np.nan, np.nan], r"^y\[1\] is NaN \(2 NaN values in all\); expected numbers$"),
    ],
)
def test_as_vector_names_the_value_and_what_was_expected(values, match):
    with pytest.raises(ScoresError, match=match):
        V.as_vector(values, "y")


def test_unit_interval_and_row_sums_name_the_first_offender():
    with pytest.raises(ScoresError, match=r"^p\[1, 0\] = 1.5 is outside \[0, 1\]; expected a probability$"):
        V.check_unit_interval(np.array([[0.5, 0.5], [1.5, -0.5]]), "p")
    with pytest.raises(ScoresError, match=r"^row 1 is 0.9$"):
        V.check_row_sums(np.array([[0.5, 0.5], [0.4, 0.5]]), "row {row} is {total:.6g}")
    sums = V.check_row_sums(np.array([[0.5, 0.50001]]), "never raised")
    assert sums == pytest.approx([1.00001])


def test_a_bad_score_array_is_caught_as_data_policy_and_calibration_error():
    # Callers of metrics catch DataError, of decisions PolicyError, of calibrators
    # CalibrationError: one type satisfies each of them.
    for check in (
        lambda: V.check_top_label([1, 0], [0.5, 1.5]),
        lambda: V.check_confidences([1, 0], [0.5, 1.5]),
        lambda: V.check_scores([0.5, 1.5], "confidence"),
    ):
        for caught in (DataError, PolicyError, CalibrationError, ScoresError):
            with pytest.raises(caught):
                check()


def test_an_unknown_mode_is_a_calibration_setting_not_a_score_error():
    with pytest.raises(CalibrationError, match=r"unknown calibration mode 'both'") as info:
        V.check_scores([0.5], "both")
    assert not isinstance(info.value, ScoresError)


@pytest.mark.parametrize(
    "confidences,correct,match",
    [
        ([], [], r"the calibration set is empty"),
        ([0.9, 1.2], [1, 1], r"confidences must be in \[0, 1\]; item 1 has 1.2"),
        ([0.9, float("nan")], [1, 1], r"item 1 has nan"),
        ([[0.9, 0.1]], [1], r"confidences must have shape \(n,\), got shape \(1, 2\)"),
        ([0.9, 0.8], [1], r"confidences has 2 items but correct has shape \(1,\)"),
        ([0.9, 0.8], [1, 2], r"correct must hold 0/1 or true/false; item 1 has 2"),
        ([0.9, 0.8], ["yes", "no"], r"correct must hold 0/1 or true/false, got values like \['yes', 'no'\]"),
        ([0.9, 0.8], ["{a}", "{b}"], r"got values like \['\{a\}', '\{b\}'\]"),
        (["high", 0.8], [1, 1], r"confidences must be numbers in \[0, 1\]"),
    ],
)
def test_check_confidences_names_the_bad_item(confidences, correct, match):
    with pytest.raises(PolicyError, match=match):
        V.check_confidences(correct, confidences)


def test_check_confidences_returns_floats_and_booleans():
    correct, conf = V.check_confidences([1, 0, True], [0.9, 0.2, 1.0])
    assert conf.dtype == np.float64 and correct.dtype == bool
    assert correct.tolist() == [True, False, True]


@pytest.mark.parametrize(
    "probabilities,match",
    [
        ([0.5, 0.5], r"probabilities must have shape \(n, K\) with K >= 2, got shape \(2,\)"),
        (np.zeros((0, 2)), r"the calibration set is empty"),
        ([[0.5, 0.5], [0.2, np.inf]], r"probabilities must be in \[0, 1\]; item 1, label 1 has inf"),
        ([["a", "b"]], r"probabilities must be numbers: could not convert string to float: 'a'"),
    ],
)
def test_check_probabilities_names_item_and_label(probabilities, match):
    with pytest.raises(PolicyError, match=match):
        V.check_probabilities(probabilities)


def test_check_probabilities_leaves_raw_label_masses_unnormalised():
    assert V.check_probabilities([[0.2, 0.3]]).tolist() == [[0.2, 0.3]]


@pytest.mark.parametrize(
    "value,match",
    [
        ({}, r"^p must be a non-empty dict label -> probability, got \{\}$"),
        ({"a": 1.5}, r"^p: 'a' -> 1.5 is not a label with a probability in \[0, 1\]$"),
        ({"a": True}, r"^p: 'a' -> True is not"),
        ({1: 0.5}, r"^p: 1 -> 0.5 is not"),
        ({"a": float("nan")}, r"^p: 'a' -> nan is not"),
    ],
)
def test_check_probability_map_raises_the_callers_error_type(value, match):
    with pytest.raises(ScoresError, match=match):
        V.check_probability_map(value, "p")
    with pytest.raises(StoreError, match=match):
        V.check_probability_map(value, "p", StoreError)
    V.check_probability_map({"a": 0.25, "b": 1}, "p")
