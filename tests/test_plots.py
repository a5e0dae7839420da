"""Plots: the numbers each display holds, what it draws, and its JSON round trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from howsure.stats import metrics
from howsure.errors import DataError
from howsure.report import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def predictions():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.5, 1.0, 600)
    correct = (rng.uniform(size=600) < confidence**2).astype(float)
    return correct, confidence


def all_displays(correct, confidence):
    raw = plots.reliability_diagram(correct, confidence, 10, title="raw")
    return [
        raw,
        plots.outcome_histogram(correct, confidence, title="raw"),
        plots.threshold_tradeoff(correct, confidence),
        plots.sample_size_progression(correct, confidence, target=0.8, n_repeats=5),
        plots.side_by_side(raw, plots.reliability_diagram(correct, confidence**0.5, 10, "quantile", "other")),
    ]


def test_reliability_display_draws_the_curve_numbers(predictions):
    correct, confidence = predictions
    display = plots.reliability_diagram(correct, confidence, n_bins=10)
    expected = metrics.reliability_curve(correct, confidence, 10)
    np.testing.assert_allclose(display.curve.accuracy, expected.accuracy)
    display.plot()
    ax = display.ax_
    accuracy_line = [line for line in ax.lines if len(line.get_xdata()) == len(expected.counts)][0]
    np.testing.assert_allclose(accuracy_line.get_xydata(), np.column_stack([expected.mean_confidence, expected.accuracy]))
    dot_sizes = ax.collections[0].get_sizes()
    assert np.argmax(dot_sizes) == np.argmax(expected.counts)
    printed = sorted(int(t.get_text()) for t in ax.texts if t.get_text().isdigit())
    assert printed == sorted(expected.counts.tolist())
    assert figure_bytes(display).startswith(PNG_SIGNATURE)


def test_equal_mass_diagram_states_the_common_count_once(predictions):
    correct, confidence = predictions
    display = plots.reliability_diagram(correct, confidence, n_bins=10, strategy="quantile").plot()
    assert not any(t.get_text().isdigit() for t in display.ax_.texts)
    assert "equal-mass, 10 bins · 600 items; 60-60 items per bin" in display.ax_.get_title()


def test_outcome_histogram_counts(predictions):
    correct, confidence = predictions
    display = plots.outcome_histogram(correct, confidence, n_bins=20)
    assert display.right.sum() == correct.sum()
    assert display.wrong.sum() == (1 - correct).sum()
    in_top_bin = confidence >= 0.95
    assert display.right[-1] == correct[in_top_bin].sum()
    display.plot()
    heights = [patch.get_height() for patch in display.ax_.patches]
    assert sum(heights) == pytest.approx(len(correct))


def test_threshold_tradeoff_numbers_and_exact_intervals(predictions):
    correct, confidence = predictions
    display = plots.threshold_tradeoff(correct, confidence, thresholds=[0.9, 0.6, 0.99])
    assert display.thresholds.tolist() == [0.6, 0.9, 0.99]
    for i, threshold in enumerate(display.thresholds):
        kept = confidence >= threshold
        assert display.kept[i] == kept.sum()
        assert display.accuracy[i] == pytest.approx(correct[kept].mean())
        exact = binomtest(int(correct[kept].sum()), int(kept.sum())).proportion_ci(0.95, method="exact")
        assert (display.accuracy_low[i], display.accuracy_high[i]) == pytest.approx((exact.low, exact.high))
    display.plot()
    labels = [t.get_text() for t in display.figure_.axes[1].texts]
    assert f"{100 * display.accuracy[0]:.1f}%" in labels


def test_threshold_keeping_nothing_has_no_accuracy():
    display = plots.threshold_tradeoff([1, 0], [0.6, 0.7], thresholds=[0.5, 0.9])
    assert display.kept.tolist() == [2, 0]
    assert np.isnan(display.accuracy[1]) and np.isnan(display.accuracy_low[1])
    display.plot()  # draws without the empty threshold's point


def test_sample_size_progression_is_seeded_and_honest(predictions):
    correct, confidence = predictions
    first = plots.sample_size_progression(correct, confidence, target=0.85, n_repeats=20, seed=1)
    again = plots.sample_size_progression(correct, confidence, target=0.85, n_repeats=20, seed=1)
    assert first.to_dict() == again.to_dict()
    assert first.sizes.tolist() == [50, 100, 200]  # 500 would leave fewer than half to measure on
    assert np.all(np.diff(first.automated) >= 0), "more labels certify looser thresholds"
    # With 200 labels the default method (fallback, whose starts are fixed in advance) certifies
    # in some draws only: the median share is still 0, the 90th percentile is not.
    assert first.automated_high[-1] > 0
    finite = np.isfinite(first.accuracy)
    assert np.all(first.accuracy_low[finite] <= first.accuracy[finite])
    assert np.all(first.accuracy[finite] <= first.accuracy_high[finite])
    # Certified on the labelled items, measured on the others: at or above the target.
    assert first.accuracy[-1] >= 0.85
    assert "certified" in first.method


def test_certified_thresholds_hold_where_the_by_eye_choice_slips():
    # Perfectly calibrated scores: a threshold picked where the sample happens to reach the
    # target often misses it on new items; the certified one does not.
    rng = np.random.default_rng(3)
    confidence = rng.uniform(0.6, 1.0, 4000)
    correct = (rng.uniform(size=4000) < confidence).astype(float)

    def by_eye(right, conf, target):
        from howsure.decisions.simulation import empirical_threshold

        return empirical_threshold(right, conf, target)

    kwargs = dict(target=0.9, sizes=[200], n_repeats=40, seed=0)
    eye = plots.sample_size_progression(correct, confidence, choose_threshold=by_eye, **kwargs)
    certified = plots.sample_size_progression(correct, confidence, **kwargs)
    assert eye.accuracy_low[0] < 0.9 <= certified.accuracy_low[0]
    assert certified.automated[0] < eye.automated[0]


def test_sample_size_progression_uses_the_given_rule(predictions):
    correct, confidence = predictions
    seen_sizes = []

    def automate_nothing(c, p, target):
        seen_sizes.append(len(c))
        return None

    display = plots.sample_size_progression(correct, confidence, sizes=[50], n_repeats=3,
                                            choose_threshold=automate_nothing, method="custom")
    assert seen_sizes == [50, 50, 50]
    assert display.automated.tolist() == [0.0] and np.isnan(display.accuracy[0])
    assert display.method == "custom"
    assert json.loads(json.dumps(display.to_dict(), allow_nan=False))["accuracy"] == [None]
    display.plot()


def test_sample_size_display_from_plain_arrays():
    display = plots.SampleSizeDisplay(np.array([50, 100]), np.array([0.2, 0.4]), np.array([0.93, 0.95]), target=0.95)
    display.plot()
    assert [t.get_text() for t in display.ax_.texts][:2] == ["20%", "40%"]


def test_sample_size_display_draws_decisions_planning_curve():
    from howsure.decisions.simulation import sample_size_curve

    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.7, 1.0, 300)
    correct = rng.uniform(size=300) < confidence
    curve = sample_size_curve(correct, confidence, 0.9, sizes=[100, 400], n_draws=10)
    display = plots.SampleSizeDisplay(curve["n_labels"], curve["median_share"], automated_low=curve["low_share"],
                                      automated_high=curve["high_share"], target=0.9, band="10th-90th percentile")
    display.plot()
    assert len(display.ax_.lines) == 1 + 2  # target line, and the error bar's caps
    assert plots.display_from_dict(display.to_dict()).to_dict() == display.to_dict()


def test_every_display_round_trips_through_json(predictions):
    for display in all_displays(*predictions):
        data = json.loads(json.dumps(display.to_dict(), allow_nan=False))
        rebuilt = plots.display_from_dict(data)
        assert type(rebuilt) is type(display)
        assert rebuilt.to_dict() == display.to_dict()
        assert figure_bytes(rebuilt).startswith(PNG_SIGNATURE)


def test_comparison_draws_into_given_axes(predictions):
    correct, confidence = predictions
    before = plots.reliability_diagram(correct, confidence, title="raw")
    after = plots.reliability_diagram(correct, np.sqrt(confidence), title="calibrated")
    figure, axes = plots.new_figure(10, 4, ncols=2)
    plots.side_by_side(before, after).plot(ax=axes)
    assert [ax.get_title().splitlines()[0] for ax in axes] == ["raw", "calibrated"]
    with pytest.raises(DataError, match="1 axes given for 2 panels"):
        plots.side_by_side(before, after).plot(ax=axes[:1])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: plots.display_from_dict({"kind": "pie"}), r"plot kind 'pie' is unknown"),
        (lambda: plots.side_by_side(), r"needs at least one display"),
        (lambda: plots.threshold_tradeoff([1], [0.5], thresholds=[1.5]), r"must be a non-empty list of values in \[0, 1\]"),
        (lambda: plots.sample_size_progression([1, 0] * 10, [0.6] * 20), r"20 items are too few"),
        (lambda: plots.sample_size_progression([1, 0] * 10, [0.6] * 20, target=1.0), r"target = 1.0"),
        (lambda: plots.reliability_diagram([1], [1.5]), r"outside \[0, 1\]"),
    ],
)
def test_bad_plot_input_is_named(call, match):
    with pytest.raises(DataError, match=match):
        call()


def test_plots_need_no_display_and_no_pyplot(tmp_path):
    script = (
        "import sys, numpy as np; from howsure.report import plots\n"
        "d = plots.reliability_diagram([1, 0, 1], [0.9, 0.6, 0.7]).plot()\n"
        "open(sys.argv[1], 'wb').write(plots.figure_png(d.figure_))\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    out = tmp_path / "plot.png"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(plots.__file__).parents[2]), "MPLCONFIGDIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, env=env, timeout=60)
    assert out.read_bytes().startswith(PNG_SIGNATURE)


def figure_bytes(display) -> bytes:
    return plots.figure_png(display.plot().figure_, dpi=40)
