"""Plots of confidence: compute and draw apart, as scikit-learn's ``CalibrationDisplay``.

Each plot has a function that computes its numbers from plain arrays and returns a display
holding them (``reliability_diagram``, ``outcome_histogram``, ``threshold_tradeoff``,
``sample_size_progression``); the display's ``plot(ax=None)`` draws them. Displays turn into
plain JSON (``to_dict``) and back (`display_from_dict`), so a report can be redrawn from its
JSON summary without the data.

matplotlib is imported inside the drawing code only, and figures are built on
``matplotlib.figure.Figure`` with the Agg canvas: nothing needs a display, and no global
pyplot state is touched.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from howsure.core.validation import check_top_label
from howsure.decisions.simulation import certified_threshold, sample_size_draws
from howsure.errors import DataError
from howsure.stats.binning import STRATEGY_NAMES
from howsure.stats.intervals import clopper_pearson
from howsure.stats.reliability import ReliabilityCurve, reliability_curve

# Colours chosen to stay apart for the common colour-vision deficiencies.
RIGHT_COLOUR = "#1b9e77"
WRONG_COLOUR = "#d95f02"
MAIN_COLOUR = "#2c5d8f"
COUNT_COLOUR = "#9aa5b1"
IDEAL_COLOUR = "#7a7a7a"

DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99)
DEFAULT_SAMPLE_SIZES = (50, 100, 200, 500, 1000, 2000, 5000, 10000)


# --------------------------------------------------------------------------- figure helpers


def new_figure(width: float = 6.4, height: float = 4.6, ncols: int = 1):
    """An Agg-backed figure with ``ncols`` axes side by side.

    Returns
    -------
    figure : matplotlib.figure.Figure
    axes : list of matplotlib.axes.Axes, length ``ncols``
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, list(axes)


def figure_png(figure, dpi: int = 110) -> bytes:
    """PNG bytes of a figure."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def _axes_or_new(ax, width: float = 6.4, height: float = 4.6):
    if ax is not None:
        return ax.figure, ax
    figure, (ax,) = new_figure(width, height)
    return figure, ax


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e6e6e6", linewidth=0.6)
    ax.set_axisbelow(True)


def _finish_bar_chart(display, figure, ax):
    """Title, style and no vertical grid lines between the bars; keeps figure and axes on the
    display and returns it, as every ``plot`` does."""
    if display.title:
        ax.set_title(display.title, fontsize=11)
    _style(ax)
    ax.grid(False, axis="x")
    display.figure_, display.ax_ = figure, ax
    return display


def _percent(value: float) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{100 * value:.0f}%"


def _as_array(values, dtype=float) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in values], dtype=dtype)


def _json_list(values: np.ndarray) -> list:
    """Array to a JSON list, NaN written as null."""
    return [None if isinstance(v, float) and not np.isfinite(v) else v for v in np.asarray(values).tolist()]


# --------------------------------------------------------------------------- display base


class Display:
    """Numbers for one plot plus the code that draws them.

    Subclasses are dataclasses; array fields are listed in ``_array_fields`` so `to_dict` and
    `from_dict` can write them as JSON lists and read them back as arrays.
    """

    kind: ClassVar[str] = ""
    _array_fields: ClassVar[tuple[str, ...]] = ()

    def plot(self, ax=None):  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """The display's numbers as JSON-ready data, tagged with its ``kind``."""
        data: dict[str, Any] = {"kind": self.kind}
        for item in fields(self):
            value = getattr(self, item.name)
            if isinstance(value, ReliabilityCurve):
                value = value.to_dict()
            elif item.name in self._array_fields and value is not None:
                value = _json_list(value)
            data[item.name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Display":
        """Inverse of `to_dict`."""
        values = {}
        for item in fields(cls):
            if item.name not in data:
                continue
            value = data[item.name]
            if item.name == "curve":
                value = ReliabilityCurve.from_dict(value)
            elif item.name in cls._array_fields and value is not None:
                value = _as_array(value)
            values[item.name] = value
        return cls(**values)


# --------------------------------------------------------------------------- reliability


@dataclass
class ReliabilityDisplay(Display):
    """Reliability diagram: accuracy against mean confidence per bin, over a histogram.

    Attributes
    ----------
    curve : ReliabilityCurve
        Per-bin mean confidence, accuracy and count.
    title : str
    """

    curve: ReliabilityCurve
    title: str = ""
    kind: ClassVar[str] = "reliability"

    def plot(self, ax=None):
        """Draw the diagram; dot area grows with the bin's count, which is printed above it.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Where to draw; a new figure when omitted.

        Returns
        -------
        self, with ``figure_`` and ``ax_`` set
        """
        figure, ax = _axes_or_new(ax)
        curve = self.curve
        low = np.floor(min(curve.bin_lower.min(), curve.accuracy.min()) * 10) / 10
        low = min(low, 0.5)

        # The histogram sits on a twin axis scaled so its tallest bar fills a quarter of the
        # height, under the dots instead of on its own panel.
        counts_ax = ax.twinx()
        widths = np.maximum(curve.bin_upper - curve.bin_lower, 0.006)
        counts_ax.bar(curve.bin_lower, curve.counts, width=widths, align="edge",
                      color=COUNT_COLOUR, alpha=0.35, edgecolor="white", linewidth=0.5)
        counts_ax.set_ylim(0, curve.counts.max() * 4)
        counts_ax.set_yticks([])
        counts_ax.spines[["top", "right", "left"]].set_visible(False)
        ax.set_zorder(counts_ax.get_zorder() + 1)
        ax.patch.set_visible(False)

        from matplotlib.lines import Line2D

        ax.plot([low, 1], [low, 1], linestyle="--", color=IDEAL_COLOUR, linewidth=1)
        sizes = 25 + 375 * curve.counts / curve.counts.max()
        ax.plot(curve.mean_confidence, curve.accuracy, color=MAIN_COLOUR, linewidth=1.4)
        ax.scatter(curve.mean_confidence, curve.accuracy, s=sizes, color=MAIN_COLOUR,
                   edgecolor="white", linewidth=0.8, zorder=3)
        # Equal-mass bins all hold the same count, so one number in the box says it; otherwise
        # each dot gets its own.
        equal_counts = curve.counts.max() - curve.counts.min() <= 1
        if not equal_counts:
            for x, y, count, size in zip(curve.mean_confidence, curve.accuracy, curve.counts, sizes):
                ax.annotate(f"{count}", (x, y), textcoords="offset points", xytext=(0, np.sqrt(size) / 2 + 3),
                            ha="center", fontsize=7, color="#333333")
        per_bin = f"{curve.counts.min()}-{curve.counts.max()} items per bin" if equal_counts else "items per bin above dots"
        ax.set_xlim(low, 1.0)
        ax.set_ylim(low, 1.07)  # room for the count printed over a dot at accuracy 1
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy (share right)")
        # The numbers and the legend go above and below the axes: dots can land anywhere
        # inside (a calibrated model's low bins sit top left), and nothing should cover them.
        info = (f"ECE {curve.ece:.3f} · {STRATEGY_NAMES[curve.strategy]}, {curve.n_bins} bins · "
                f"{int(curve.counts.sum())} items; {per_bin}")
        ax.set_title(f"{self.title}\n{info}" if self.title else info, fontsize=9.5 if self.title else 8.5)
        handles = [
            Line2D([], [], linestyle="--", color=IDEAL_COLOUR, label="perfectly calibrated"),
            Line2D([], [], marker="o", color=MAIN_COLOUR, label="bins (area ~ items)"),
            Line2D([], [], marker="s", linestyle="", markersize=8, color=COUNT_COLOUR, alpha=0.5,
                   label="confidence histogram"),
        ]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=8,
                  frameon=False)
        _style(ax)
        self.figure_, self.ax_ = figure, ax
        return self


def reliability_diagram(correct, confidence, n_bins: int = 15, strategy: str = "uniform", title: str = "") -> ReliabilityDisplay:
    """Numbers of a reliability diagram (`howsure.metrics.reliability_curve`) in a display.

    Parameters
    ----------
    correct : array-like of shape (n,), 0/1
    confidence : array-like of shape (n,), in [0, 1]
    n_bins : int
    strategy : {"uniform", "quantile"}
    title : str

    Returns
    -------
    ReliabilityDisplay
    """
    return ReliabilityDisplay(reliability_curve(correct, confidence, n_bins, strategy), title)


# --------------------------------------------------------------------------- outcome histogram


@dataclass
class OutcomeHistogramDisplay(Display):
    """Counts of right and wrong items per confidence bin.

    Attributes
    ----------
    edges : ndarray of shape (n_bins + 1,)
    right : ndarray of shape (n_bins,)
        Items predicted right in each bin.
    wrong : ndarray of shape (n_bins,)
    title : str
    """

    edges: np.ndarray
    right: np.ndarray
    wrong: np.ndarray
    title: str = ""
    kind: ClassVar[str] = "outcome_histogram"
    _array_fields: ClassVar[tuple[str, ...]] = ("edges", "right", "wrong")

    def plot(self, ax=None):
        """Stacked bars, wrong items at the bottom so their growth with confidence is visible.

        Returns
        -------
        self, with ``figure_`` and ``ax_`` set
        """
        figure, ax = _axes_or_new(ax)
        widths = np.diff(self.edges)
        lower = self.edges[:-1]
        ax.bar(lower, self.wrong, width=widths, align="edge", color=WRONG_COLOUR, edgecolor="white",
               linewidth=0.5, label=f"wrong ({int(self.wrong.sum())})")
        ax.bar(lower, self.right, width=widths, align="edge", bottom=self.wrong, color=RIGHT_COLOUR,
               edgecolor="white", linewidth=0.5, label=f"right ({int(self.right.sum())})")
        filled = np.flatnonzero((self.right + self.wrong) > 0)
        if filled.size:
            ax.set_xlim(min(np.floor(self.edges[filled[0]] * 10) / 10, 0.5), self.edges[filled[-1] + 1])
        ax.set_xlabel("confidence")
        ax.set_ylabel("items")
        ax.legend(loc="upper left", fontsize=8, frameon=False)
        if self.title:
            ax.set_title(self.title, fontsize=11)
        _style(ax)
        self.figure_, self.ax_ = figure, ax
        return self


def outcome_histogram(correct, confidence, n_bins: int = 20, title: str = "") -> OutcomeHistogramDisplay:
    """Histogram of confidence split by outcome.

    Parameters
    ----------
    correct : array-like of shape (n,), 0/1
    confidence : array-like of shape (n,), in [0, 1]
    n_bins : int
        Equal-width bins over [0, 1] (numpy's convention: [lo, hi), the last bin closed).
    title : str

    Returns
    -------
    OutcomeHistogramDisplay
    """
    correct, confidence = check_top_label(correct, confidence)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    right, _ = np.histogram(confidence[correct == 1], bins=edges)
    wrong, _ = np.histogram(confidence[correct == 0], bins=edges)
    return OutcomeHistogramDisplay(edges, right.astype(float), wrong.astype(float), title)


# --------------------------------------------------------------------------- threshold trade-off


@dataclass
class ThresholdTradeoffDisplay(Display):
    """What each confidence threshold keeps and how accurate the kept items are.

    Attributes
    ----------
    thresholds : ndarray of shape (m,)
    kept : ndarray of shape (m,)
        Items with confidence >= threshold.
    accuracy : ndarray of shape (m,)
        Share right among the kept items (NaN when none is kept).
    accuracy_low, accuracy_high : ndarray of shape (m,)
        95 % Clopper-Pearson interval of that share.
    n_items : int
    title : str
    """

    thresholds: np.ndarray
    kept: np.ndarray
    accuracy: np.ndarray
    accuracy_low: np.ndarray
    accuracy_high: np.ndarray
    n_items: int
    title: str = ""
    kind: ClassVar[str] = "threshold_tradeoff"
    _array_fields: ClassVar[tuple[str, ...]] = ("thresholds", "kept", "accuracy", "accuracy_low", "accuracy_high")

    def plot(self, ax=None):
        """Bars: items kept (left axis); line with its interval: their accuracy (right axis).

        Returns
        -------
        self, with ``figure_`` and ``ax_`` (the bars' axes) set
        """
        figure, ax = _axes_or_new(ax, 10.8, 4.6)
        positions = np.arange(len(self.thresholds))
        bars = ax.bar(positions, self.kept, width=0.6, color=COUNT_COLOUR, alpha=0.6, label="items kept")
        for bar, kept in zip(bars, self.kept):
            share = kept / self.n_items if self.n_items else np.nan
            ax.annotate(f"{int(kept)}\n{_percent(share)}", (bar.get_x() + bar.get_width() / 2, 0),
                        textcoords="offset points", xytext=(0, 3), ha="center", va="bottom",
                        fontsize=7, color="#333333")
        ax.set_ylim(0, max(self.n_items, 1) * 1.02)
        ax.set_ylabel("items at or above the threshold")
        ax.set_xticks(positions, [f"≥{t:g}" for t in self.thresholds])
        ax.set_xlabel("confidence threshold")

        accuracy_ax = ax.twinx()
        finite = np.isfinite(self.accuracy)
        accuracy_ax.fill_between(positions[finite], self.accuracy_low[finite], self.accuracy_high[finite],
                                 color=MAIN_COLOUR, alpha=0.12, linewidth=0, label="95% interval")
        accuracy_ax.plot(positions[finite], self.accuracy[finite], color=MAIN_COLOUR, marker="o",
                         linewidth=1.6, markersize=4, label="accuracy of kept items")
        for x, value in zip(positions[finite], self.accuracy[finite]):
            accuracy_ax.annotate(f"{100 * value:.1f}%", (x, value), textcoords="offset points",
                                 xytext=(0, 7), ha="center", fontsize=7.5, color=MAIN_COLOUR,
                                 fontweight="bold")
        low = np.nanmin(self.accuracy_low) if finite.any() else 0.0
        accuracy_ax.set_ylim(max(0.0, np.floor(low * 10) / 10 - 0.05), 1.04)
        accuracy_ax.yaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")
        accuracy_ax.set_ylabel("accuracy of kept items", color=MAIN_COLOUR)
        accuracy_ax.spines[["top"]].set_visible(False)
        handles = ax.get_legend_handles_labels()
        more = accuracy_ax.get_legend_handles_labels()
        ax.legend(handles[0] + more[0], handles[1] + more[1], loc="upper center", bbox_to_anchor=(0.5, -0.13),
                  ncol=3, fontsize=8, frameon=False)
        return _finish_bar_chart(self, figure, ax)


def threshold_tradeoff(correct, confidence, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, title: str = "") -> ThresholdTradeoffDisplay:
    """Items kept and their accuracy at each confidence threshold.

    Parameters
    ----------
    correct : array-like of shape (n,), 0/1
    confidence : array-like of shape (n,), in [0, 1]
    thresholds : sequence of float of length m, each in [0, 1]
    title : str

    Returns
    -------
    ThresholdTradeoffDisplay
    """
    correct, confidence = check_top_label(correct, confidence)
    thresholds = np.asarray(sorted(thresholds), float)
    if thresholds.size == 0 or thresholds.min() < 0 or thresholds.max() > 1:
        raise DataError(f"thresholds {thresholds.tolist()} must be a non-empty list of values in [0, 1]")
    kept_mask = confidence[None, :] >= thresholds[:, None]
    kept = kept_mask.sum(axis=1)
    right = (kept_mask * correct[None, :]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(kept > 0, right / np.maximum(kept, 1), np.nan)
    low, high = clopper_pearson(right, kept)
    return ThresholdTradeoffDisplay(thresholds, kept.astype(float), accuracy, low, high, int(correct.size), title)


# --------------------------------------------------------------------------- sample size


@dataclass
class SampleSizeDisplay(Display):
    """What a threshold chosen on n labelled items automates, and how accurate that is.

    Drawn from plain arrays, so the numbers may come from `sample_size_progression` (measured
    on held-out items) or from ``howsure.decisions.sample_size_curve`` (planned shares only;
    leave ``accuracy`` out).

    Attributes
    ----------
    sizes : ndarray of shape (m,)
        Labelled items the threshold was chosen on.
    automated : ndarray of shape (m,)
        Share of items at or above the threshold.
    accuracy : ndarray of shape (m,), optional
        Accuracy of those automated items (NaN where nothing is automated).
    automated_low, automated_high, accuracy_low, accuracy_high : ndarray of shape (m,), optional
        Bands around ``automated`` and ``accuracy``; ``band`` says what they are.
    target : float, optional
        The accuracy asked for.
    method : str
        How the threshold was chosen and measured, for captions.
    band : str
        What the bands mean, for the legend.
    title : str
    """

    sizes: np.ndarray
    automated: np.ndarray
    accuracy: np.ndarray | None = None
    automated_low: np.ndarray | None = None
    automated_high: np.ndarray | None = None
    accuracy_low: np.ndarray | None = None
    accuracy_high: np.ndarray | None = None
    target: float | None = None
    method: str = ""
    band: str = ""
    title: str = ""
    kind: ClassVar[str] = "sample_size"
    _array_fields: ClassVar[tuple[str, ...]] = (
        "sizes", "automated", "accuracy", "automated_low", "automated_high", "accuracy_low", "accuracy_high",
    )

    def plot(self, ax=None):
        """Bars: share automated; line: accuracy of the automated items; dashed: the target.

        Returns
        -------
        self, with ``figure_`` and ``ax_`` set
        """
        figure, ax = _axes_or_new(ax, 10.8, 4.6)
        positions = np.arange(len(self.sizes))
        band = f" ({self.band})" if self.band else ""
        errors = None
        if self.automated_low is not None and self.automated_high is not None:
            errors = np.vstack([self.automated - self.automated_low, self.automated_high - self.automated])
        bars = ax.bar(positions, self.automated, width=0.6, color=COUNT_COLOUR, alpha=0.6,
                      yerr=errors, ecolor="#6b7785", capsize=3,
                      label="share automated" + (band if errors is not None else ""))
        for bar, share in zip(bars, self.automated):
            ax.annotate(_percent(share), (bar.get_x() + bar.get_width() / 2, 0), textcoords="offset points",
                        xytext=(0, 3), ha="center", va="bottom", fontsize=8)
        if self.accuracy is not None:
            finite = np.isfinite(self.accuracy)
            if self.accuracy_low is not None and self.accuracy_high is not None:
                ax.fill_between(positions[finite], self.accuracy_low[finite], self.accuracy_high[finite],
                                color=MAIN_COLOUR, alpha=0.12, linewidth=0, label="accuracy" + band)
            ax.plot(positions[finite], self.accuracy[finite], color=MAIN_COLOUR, marker="o", linewidth=1.6,
                    markersize=4, label="accuracy of automated items")
            for x, value in zip(positions[finite], self.accuracy[finite]):
                ax.annotate(f"{100 * value:.1f}%", (x, value), textcoords="offset points", xytext=(0, 7),
                            ha="center", fontsize=7.5, color=MAIN_COLOUR, fontweight="bold")
        if self.target is not None:
            ax.axhline(self.target, color=WRONG_COLOUR, linestyle="--", linewidth=1,
                       label=f"target accuracy {100 * self.target:g}%")
        ax.set_ylim(0, 1.08)
        ax.yaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")
        ax.set_xticks(positions, [f"{int(s)}" for s in self.sizes])
        ax.set_xlabel("labelled items used to choose the threshold")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)
        return _finish_bar_chart(self, figure, ax)


def sample_size_progression(
    correct,
    confidence,
    *,
    target: float = 0.9,
    sizes: Sequence[int] = DEFAULT_SAMPLE_SIZES,
    n_repeats: int = 50,
    seed: int = 0,
    choose_threshold: Callable[[np.ndarray, np.ndarray, float], float | None] = certified_threshold,
    method: str = "",
    title: str = "",
) -> SampleSizeDisplay:
    """Simulate choosing a threshold on n labelled items and applying it to the rest
    (`howsure.decisions.simulation.sample_size_draws`) and hold the result in a display.

    Only the sizes up to half the items are used, so at least half is left to measure on.
    Reports the median share and mean accuracy with their 10th-90th percentiles over the draws.

    Parameters
    ----------
    correct : array-like of shape (N,), 0/1
    confidence : array-like of shape (N,), in [0, 1]
    target : float
        Accuracy the threshold aims for.
    sizes : sequence of int
    n_repeats : int
    seed : int
    choose_threshold : callable
        ``(correct (n,), confidence (n,), target) -> threshold or None`` (None automates
        nothing); `certified_threshold` by default.
    method, title : str
        Caption and title of the display.

    Returns
    -------
    SampleSizeDisplay
    """
    correct, confidence = check_top_label(correct, confidence)
    if not 0.0 < target < 1.0:
        raise DataError(f"target = {target!r}; expected an accuracy strictly between 0 and 1")
    usable = sorted({int(s) for s in sizes if 0 < s <= correct.size // 2})
    if not usable:
        raise DataError(
            f"{correct.size} items are too few for sample sizes {list(sizes)}; each size must be "
            "at most half the items so the rest can measure the threshold"
        )
    numbers = sample_size_draws(correct, confidence, target=target, sizes=usable, n_repeats=n_repeats, seed=seed,
                                choose_threshold=choose_threshold)
    default_method = (
        f"Threshold certified on the labelled items to give at least {100 * target:g}% accuracy with "
        "95% confidence (howsure.decisions, fallback testing from fixed start thresholds)"
        if choose_threshold is certified_threshold
        else f"Threshold chosen on the labelled items for {100 * target:g}% accuracy"
    )
    return SampleSizeDisplay(
        **numbers,
        target=float(target),
        method=method or f"{default_method}; share and accuracy measured on the remaining items, "
        f"{n_repeats} random draws per size.",
        band="10th-90th percentile over draws",
        title=title,
    )


# --------------------------------------------------------------------------- comparison


@dataclass
class ComparisonDisplay(Display):
    """Displays of the same kind side by side, e.g. raw vs calibrated, base vs fine-tuned.

    Attributes
    ----------
    panels : list of Display
        Drawn left to right; each keeps its own title.
    """

    panels: list = field(default_factory=list)
    kind: ClassVar[str] = "comparison"

    def plot(self, ax=None):
        """Draw each panel in its own axes of one figure.

        Parameters
        ----------
        ax : sequence of matplotlib Axes, optional
            One per panel; a new figure when omitted.

        Returns
        -------
        self, with ``figure_`` and ``axes_`` set
        """
        if ax is None:
            figure, axes = new_figure(5.4 * len(self.panels), 4.6, ncols=len(self.panels))
        else:
            axes = list(ax)
            if len(axes) != len(self.panels):
                raise DataError(f"{len(axes)} axes given for {len(self.panels)} panels")
            figure = axes[0].figure
        for panel, panel_ax in zip(self.panels, axes):
            panel.plot(ax=panel_ax)
        self.figure_, self.axes_ = figure, axes
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "panels": [panel.to_dict() for panel in self.panels]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ComparisonDisplay":
        return cls([display_from_dict(panel) for panel in data["panels"]])


def side_by_side(*panels: Display) -> ComparisonDisplay:
    """Put displays side by side (give each a title that says which is which)."""
    if not panels:
        raise DataError("side_by_side needs at least one display")
    return ComparisonDisplay(list(panels))


DISPLAYS: dict[str, type[Display]] = {
    cls.kind: cls
    for cls in (ReliabilityDisplay, OutcomeHistogramDisplay, ThresholdTradeoffDisplay, SampleSizeDisplay, ComparisonDisplay)
}


def display_from_dict(data: dict[str, Any]) -> Display:
    """Rebuild any display from its `Display.to_dict` output."""
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in DISPLAYS:
        raise DataError(f"plot kind {kind!r} is unknown; expected one of {sorted(DISPLAYS)}")
    return DISPLAYS[kind].from_dict(data)
