"""Calibration and discrimination metrics, each with a bootstrap interval. Numbers only.

Two views of the same predictions:

* **top-label** — ``confidence`` is the probability the model gave its predicted label and
  ``correct`` says whether that label was right. Accuracy, ECE, RMS calibration error, MCE,
  Brier, NLL, AUROC and AURC are all computed on this pair, so scores from any source (a
  ``howsure score`` run, another tool's JSON) can be compared.
* **full distribution** — ``probabilities`` of shape (n, K) against gold ``labels``; gives the
  multiclass Brier score and log loss, which also see how the wrong labels' mass is spread.

Every statistic is computed row-wise on arrays of shape (B, n) so a bootstrap of B resamples
is a handful of numpy calls instead of a Python loop. `summarize` draws one set of resample
indices and applies every metric to it, so the intervals of different metrics describe the
same resamples.

Binning conventions (stated because published numbers differ by them):

* ``"uniform"`` (equal width): bin b covers (b/n_bins, (b+1)/n_bins]; a confidence of
  exactly 0 goes into the first bin. This reproduces the public Llama-3.1-8B run's 20-bin ECE
  (``tests/test_metrics.py::test_reproduces_public_llama_run_raw_numbers``).
* ``"quantile"`` (equal mass): items are sorted by confidence (stable sort) and split into
  ``n_bins`` consecutive groups whose sizes differ by at most one, as ``numpy.array_split``
  does; equal confidences may straddle a group boundary.
* RMS calibration error uses groups of ``beta`` consecutive items in confidence order, the
  last group taking the remainder (Hendrycks et al.'s ``calib_err``, used by SimpleQA-style
  evaluations). Unlike that reference loop, the last group is counted too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from scipy.stats import rankdata

from howsure.errors import DataError

STRATEGIES = ("uniform", "quantile")
STRATEGY_NAMES = {"uniform": "equal-width", "quantile": "equal-mass"}

#: Probabilities are clipped to [EPS, 1 - EPS] before taking logs, as scikit-learn's
#: ``log_loss`` does, so a confidently wrong item costs a large but finite amount.
EPS = float(np.finfo(float).eps)

#: A row of label probabilities may miss 1 by this much: scores are float32 softmaxes, and
#: ``howsure score`` and CSV files print a limited number of digits.
ROW_SUM_TOLERANCE = 1e-4

#: Bootstrap resamples are processed in chunks of at most this many cells (rows x items) so
#: memory stays bounded for large inputs.
_MAX_CELLS = 2_000_000


@dataclass(frozen=True)
class MetricInfo:
    """How to present one metric: a short title, which direction is better, what it means."""

    title: str
    lower_is_better: bool | None  # None: neither direction is better (mean confidence)
    description: str


METRICS: dict[str, MetricInfo] = {
    "accuracy": MetricInfo("Accuracy", False, "share of items whose predicted label is right"),
    "mean_confidence": MetricInfo(
        "Mean confidence", None, "average confidence; close to accuracy when calibrated on average"
    ),
    "ece": MetricInfo("ECE (equal-width)", True, "expected calibration error, equal-width bins"),
    "ece_equal_mass": MetricInfo(
        "ECE (equal-mass)", True, "expected calibration error, bins holding equal item counts"
    ),
    "rms_calibration_error": MetricInfo(
        "RMS calibration error", True, "root-mean-square calibration error, bins of beta items"
    ),
    "mce": MetricInfo(
        "MCE", True, "largest gap between confidence and accuracy in one bin; noisy, as a bin of a "
        "few items can decide it"
    ),
    "brier": MetricInfo("Brier score", True, "mean squared error of confidence vs correctness"),
    "nll": MetricInfo("NLL", True, "negative log-likelihood of correctness under confidence"),
    "auroc": MetricInfo(
        "AUROC", False, "how well confidence ranks right answers above wrong ones (0.5 = chance)"
    ),
    "aurc": MetricInfo(
        "AURC", True, "area under the risk-coverage curve: mean error rate when keeping the top-k"
    ),
    "brier_multiclass": MetricInfo(
        "Brier (all labels)", True, "sum over labels of squared error, averaged over items (0-2)"
    ),
    "nll_multiclass": MetricInfo(
        "NLL (all labels)", True, "log loss of the gold label under the full label distribution"
    ),
}


# --------------------------------------------------------------------------- validation


def check_top_label(correct, confidence) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert the top-label view.

    Parameters
    ----------
    correct : array-like of shape (n,)
        1/True where the predicted label was right, 0/False where it was wrong.
    confidence : array-like of shape (n,)
        Probability the model gave its predicted label, in [0, 1].

    Returns
    -------
    correct : ndarray of shape (n,), float64 of 0.0/1.0
    confidence : ndarray of shape (n,), float64

    Raises
    ------
    DataError
        Mismatched lengths, no items, NaN, confidence outside [0, 1] or correctness other than
        0/1; the message names the first offending index and value.
    """
    confidence = _as_float_vector(confidence, "confidence")
    correct = _as_float_vector(correct, "correct")
    if correct.shape != confidence.shape:
        raise DataError(
            f"correct has {correct.shape[0]} items but confidence has {confidence.shape[0]}; "
            "expected one correctness value per confidence"
        )
    _check_probability_range(confidence, "confidence")
    bad = np.flatnonzero((correct != 0.0) & (correct != 1.0))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"correct[{i}] = {float(correct[i])!r}; expected 0/1 or True/False")
    return correct, confidence


def check_distribution(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert the full-distribution view.

    Parameters
    ----------
    probabilities : array-like of shape (n, K)
        Per-label probabilities; each row must sum to 1 within `ROW_SUM_TOLERANCE`.
    labels : array-like of shape (n,)
        Gold label index of each item, an integer in [0, K).

    Returns
    -------
    probabilities : ndarray of shape (n, K), float64, rows rescaled to sum to 1 exactly
    labels : ndarray of shape (n,), int64

    Raises
    ------
    DataError
        Wrong shapes, NaN, probabilities outside [0, 1], rows not summing to 1, label indices
        out of range.
    """
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.ndim != 2 or probabilities.shape[1] < 2:
        raise DataError(
            f"probabilities have shape {probabilities.shape}; expected (n_items, n_labels) "
            "with at least 2 labels"
        )
    if probabilities.shape[0] == 0:
        raise DataError("no items to evaluate; expected at least one row of probabilities")
    _check_probability_range(probabilities, "probabilities")
    sums = probabilities.sum(axis=1)
    off = np.flatnonzero(np.abs(sums - 1.0) > ROW_SUM_TOLERANCE)
    if off.size:
        i = int(off[0])
        raise DataError(
            f"probabilities row {i} sums to {sums[i]:.6g}; expected each row to sum to 1 "
            f"(within {ROW_SUM_TOLERANCE})"
        )
    if np.any(np.abs(sums - 1.0) > 1e-12):  # leave exact rows bit for bit as given
        probabilities = probabilities / sums[:, None]
    labels_float = _as_float_vector(labels, "labels")
    if labels_float.shape[0] != probabilities.shape[0]:
        raise DataError(
            f"labels has {labels_float.shape[0]} items but probabilities has "
            f"{probabilities.shape[0]} rows; expected one gold label per row"
        )
    n_labels = probabilities.shape[1]
    bad = np.flatnonzero(
        (labels_float != np.round(labels_float)) | (labels_float < 0) | (labels_float >= n_labels)
    )
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"labels[{i}] = {float(labels_float[i])!r}; expected a label index in 0..{n_labels - 1}"
        )
    return probabilities, labels_float.astype(np.int64)


def top_label(probabilities, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reduce a label distribution to the top-label view.

    Parameters
    ----------
    probabilities : array-like of shape (n, K)
    labels : array-like of shape (n,)
        Gold label indices.

    Returns
    -------
    correct : ndarray of shape (n,), 0.0/1.0
    confidence : ndarray of shape (n,)
        Largest probability of each row.
    prediction : ndarray of shape (n,), int64
        Index of that probability (the first one on ties, as ``argmax``).
    """
    probabilities, labels = check_distribution(probabilities, labels)
    prediction = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(prediction)), prediction]
    return (prediction == labels).astype(float), confidence, prediction


def _as_float_vector(values, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be numeric; {exc}") from None
    if array.ndim != 1:
        raise DataError(f"{name} has shape {array.shape}; expected a 1-D array of items")
    if array.size == 0:
        raise DataError(f"{name} is empty; expected at least one item")
    nan = np.flatnonzero(np.isnan(array))
    if nan.size:
        raise DataError(f"{name}[{int(nan[0])}] is NaN ({nan.size} NaN values in all); expected numbers")
    return array


def _check_probability_range(array: np.ndarray, name: str) -> None:
    nan = np.argwhere(np.isnan(array))
    if nan.size:
        where = ", ".join(str(int(v)) for v in nan[0])
        raise DataError(f"{name}[{where}] is NaN ({len(nan)} NaN values in all); expected numbers")
    bad = np.argwhere((array < 0.0) | (array > 1.0))
    if bad.size:
        index = tuple(int(v) for v in bad[0])
        where = ", ".join(str(v) for v in index)
        raise DataError(f"{name}[{where}] = {float(array[index])!r} is outside [0, 1]; expected a probability")


def _check_bins(n_bins: int, strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise DataError(f"binning strategy {strategy!r} is unknown; expected one of {STRATEGIES}")
    if int(n_bins) != n_bins or n_bins < 1:
        raise DataError(f"n_bins = {n_bins!r}; expected a positive integer")


# --------------------------------------------------------------------------- binning


def _bin_index(confidence: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    """Bin of every item, row by row.

    Parameters
    ----------
    confidence : ndarray of shape (B, n)
    n_bins : int
    strategy : {"uniform", "quantile"}

    Returns
    -------
    ndarray of shape (B, n), int64 in [0, n_bins)
    """
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        # side="left" puts a value equal to an edge into the bin below it: bins are (lo, hi].
        index = np.searchsorted(edges, confidence, side="left") - 1
        return np.clip(index, 0, n_bins - 1)
    return _rank_groups(confidence, lambda rank, n: _array_split_group(rank, n, n_bins))


def _array_split_group(rank: np.ndarray, n: int, n_groups: int) -> np.ndarray:
    """Group of each rank when n items are cut as ``numpy.array_split(range(n), n_groups)``:
    the first ``n % n_groups`` groups hold one item more than the rest."""
    size, larger = divmod(n, n_groups)
    boundary = larger * (size + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        beyond = larger + (rank - boundary) // max(size, 1)
    return np.where(rank < boundary, rank // (size + 1), beyond)


def _rank_groups(confidence: np.ndarray, group_of_rank: Callable) -> np.ndarray:
    """Assign items to groups by their rank in confidence order (stable), row by row."""
    n = confidence.shape[1]
    order = np.argsort(confidence, axis=1, kind="stable")
    groups = np.empty_like(order)
    np.put_along_axis(groups, order, group_of_rank(np.arange(n), n)[None, :], axis=1)
    return groups


def _bin_sums(correct: np.ndarray, confidence: np.ndarray, groups: np.ndarray, n_groups: int):
    """Per-row, per-group item count, confidence sum and correct sum.

    Parameters
    ----------
    correct, confidence : ndarray of shape (B, n)
    groups : ndarray of shape (B, n), int in [0, n_groups)

    Returns
    -------
    counts, confidence_sums, correct_sums : ndarray of shape (B, n_groups)
    """
    rows = correct.shape[0]
    flat = (groups + n_groups * np.arange(rows)[:, None]).ravel()
    size = rows * n_groups
    counts = np.bincount(flat, minlength=size).reshape(rows, n_groups)
    confidence_sums = np.bincount(flat, weights=confidence.ravel(), minlength=size)
    correct_sums = np.bincount(flat, weights=correct.ravel(), minlength=size)
    return counts, confidence_sums.reshape(rows, n_groups), correct_sums.reshape(rows, n_groups)


# --------------------------------------------------------------------------- row-wise statistics
# Each takes `correct` and `confidence` of shape (B, n) and returns shape (B,).


def _ece_rows(correct, confidence, n_bins: int, strategy: str) -> np.ndarray:
    counts, conf_sums, correct_sums = _bin_sums(
        correct, confidence, _bin_index(confidence, n_bins, strategy), n_bins
    )
    # sum_b (n_b / n) |mean_conf_b - acc_b| = sum_b |conf_sum_b - correct_sum_b| / n
    return np.abs(conf_sums - correct_sums).sum(axis=1) / confidence.shape[1]


def _mce_rows(correct, confidence, n_bins: int, strategy: str) -> np.ndarray:
    counts, conf_sums, correct_sums = _bin_sums(
        correct, confidence, _bin_index(confidence, n_bins, strategy), n_bins
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        gaps = np.abs(conf_sums - correct_sums) / counts
    return np.where(counts > 0, gaps, 0.0).max(axis=1)


def _rms_rows(correct, confidence, beta: int) -> np.ndarray:
    n = confidence.shape[1]
    n_groups = max(n // beta, 1)
    # Groups of beta items; the last one absorbs the remainder (n % beta items).
    groups = _rank_groups(confidence, lambda rank, _n: np.minimum(rank // beta, n_groups - 1))
    counts, conf_sums, correct_sums = _bin_sums(correct, confidence, groups, n_groups)
    # sum_g (n_g / n) (mean_conf_g - acc_g)^2 = sum_g (conf_sum_g - correct_sum_g)^2 / (n n_g)
    squared = (conf_sums - correct_sums) ** 2 / (n * counts)
    return np.sqrt(squared.sum(axis=1))


def _auroc_rows(correct, confidence) -> np.ndarray:
    # Mann-Whitney form of the ROC area; average ranks make ties count one half, as
    # scikit-learn's roc_auc_score does.
    ranks = rankdata(confidence, axis=1)
    n_right = correct.sum(axis=1)
    n_wrong = correct.shape[1] - n_right
    rank_sum = (ranks * correct).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_right * (n_right + 1) / 2) / (n_right * n_wrong)
    return np.where((n_right > 0) & (n_wrong > 0), auc, np.nan)


def _aurc_rows(correct, confidence) -> np.ndarray:
    rows, n = confidence.shape
    order = np.argsort(-confidence, axis=1, kind="stable")
    conf_sorted = np.take_along_axis(confidence, order, axis=1)
    errors_sorted = 1.0 - np.take_along_axis(correct, order, axis=1)
    cum_errors = np.concatenate([np.zeros((rows, 1)), np.cumsum(errors_sorted, axis=1)], axis=1)
    # Items with equal confidence cannot be told apart by a threshold, so the errors among the
    # first k are taken as their expectation over every order of the tied items: linear
    # interpolation across each run of equal confidences. Then the value does not depend on
    # how ties happen to be sorted.
    positions = np.broadcast_to(np.arange(n), (rows, n))
    changes = conf_sorted[:, 1:] != conf_sorted[:, :-1]
    is_start = np.concatenate([np.ones((rows, 1), bool), changes], axis=1)
    is_end = np.concatenate([changes, np.ones((rows, 1), bool)], axis=1)
    run_start = np.maximum.accumulate(np.where(is_start, positions, 0), axis=1)
    run_end = np.minimum.accumulate(np.where(is_end, positions + 1, n)[:, ::-1], axis=1)[:, ::-1]
    errors_before = np.take_along_axis(cum_errors, run_start, axis=1)
    errors_in_run = np.take_along_axis(cum_errors, run_end, axis=1) - errors_before
    kept = positions + 1.0
    expected_errors = errors_before + (kept - run_start) * errors_in_run / (run_end - run_start)
    return (expected_errors / kept).mean(axis=1)


# --------------------------------------------------------------------------- public metrics


def accuracy(correct) -> float:
    """Share of right predictions.

    Parameters
    ----------
    correct : array-like of shape (n,), 0/1
    """
    correct = _as_float_vector(correct, "correct")
    return float(correct.mean())


def expected_calibration_error(correct, confidence, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Expected calibration error: bin-weighted mean |accuracy - mean confidence|.

    Parameters
    ----------
    correct : array-like of shape (n,), 0/1
    confidence : array-like of shape (n,), in [0, 1]
    n_bins : int
        Number of bins (15 by default; the public Llama-3.1-8B run in docs/evaluation.md used 20).
    strategy : {"uniform", "quantile"}
        Equal-width or equal-mass bins (see the module docstring).

    Returns
    -------
    float in [0, 1]
    """
    _check_bins(n_bins, strategy)
    return _on_one_row(_ece_rows, correct, confidence, int(n_bins), strategy)


def maximum_calibration_error(correct, confidence, n_bins: int = 15, strategy: str = "uniform") -> float:
    """Largest |accuracy - mean confidence| over the non-empty bins.

    Parameters
    ----------
    correct : array-like of shape (n,), 0/1
    confidence : array-like of shape (n,), in [0, 1]
    n_bins : int
    strategy : {"uniform", "quantile"}

    Returns
    -------
    float in [0, 1]
    """
    _check_bins(n_bins, strategy)
    return _on_one_row(_mce_rows, correct, confidence, int(n_bins), strategy)


def rms_calibration_error(correct, confidence, beta: int = 100) -> float:
    """Root-mean-square calibration error over adaptive bins of ``beta`` items.

    Parameters
    ----------
    correct : array-like of shape (n,), 0/1
    confidence : array-like of shape (n,), in [0, 1]
    beta : int
        Target number of items per bin; ``n // beta`` bins, the last taking the remainder (one
        bin when n < beta).

    Returns
    -------
    float in [0, 1]
    """
    _check_beta(beta)
    return _on_one_row(_rms_rows, correct, confidence, int(beta))


def brier_score(correct, confidence) -> float:
    """Top-label Brier score: mean of (confidence - correct)^2.

    Parameters
    ----------
    correct : array-like of shape (n,), 0/1
    confidence : array-like of shape (n,), in [0, 1]

    Returns
    -------
    float in [0, 1]
    """
    return _on_one_row(lambda c, p: _brier_items(c, p).mean(axis=1), correct, confidence)


def negative_log_likelihood(correct, confidence) -> float:
    """Top-label NLL: mean of -log P(observed correctness), probabilities clipped to [EPS, 1-EPS].

    Parameters
    ----------
    correct : array-like of shape (n,), 0/1
    confidence : array-like of shape (n,), in [0, 1]

    Returns
    -------
    float >= 0, in nats
    """
    return _on_one_row(lambda c, p: _nll_items(c, p).mean(axis=1), correct, confidence)


def auroc(correct, confidence) -> float:
    """Area under the ROC curve of confidence as a score for being right.

    Parameters
    ----------
    correct : array-like of shape (n,), 0/1
    confidence : array-like of shape (n,), in [0, 1]

    Returns
    -------
    float in [0, 1], or NaN when every item is right or every item is wrong
    """
    return _on_one_row(_auroc_rows, correct, confidence)


def aurc(correct, confidence) -> float:
    """Area under the risk-coverage curve.

    Keeping the k most confident items, the risk is their error rate; AURC is the mean risk
    over k = 1..n. Lower is better; a perfect ranking scores about ``e^2 / 2`` for error rate e,
    a random one about ``e``. Ties are handled by their expectation over every order.

    Parameters
    ----------
    correct : array-like of shape (n,), 0/1
    confidence : array-like of shape (n,), in [0, 1]

    Returns
    -------
    float in [0, 1]
    """
    return _on_one_row(_aurc_rows, correct, confidence)


def multiclass_brier_score(probabilities, labels) -> float:
    """Brier score over every label: mean over items of sum_k (p_k - [k == gold])^2.

    Parameters
    ----------
    probabilities : array-like of shape (n, K), rows summing to 1
    labels : array-like of shape (n,), gold label indices

    Returns
    -------
    float in [0, 2] (scikit-learn's ``brier_score_loss(..., scale_by_half=False)``)
    """
    probabilities, labels = check_distribution(probabilities, labels)
    return float(_multiclass_brier_items(probabilities, labels).mean())


def multiclass_log_loss(probabilities, labels) -> float:
    """Mean -log p(gold label), probabilities clipped to [EPS, 1 - EPS].

    Parameters
    ----------
    probabilities : array-like of shape (n, K), rows summing to 1
    labels : array-like of shape (n,), gold label indices

    Returns
    -------
    float >= 0, in nats
    """
    probabilities, labels = check_distribution(probabilities, labels)
    return float(_multiclass_nll_items(probabilities, labels).mean())


def _on_one_row(row_statistic: Callable, correct, confidence, *args) -> float:
    """Validate the top-label view and apply a row-wise statistic to it as a single row."""
    correct, confidence = check_top_label(correct, confidence)
    return float(row_statistic(correct[None], confidence[None], *args)[0])


def _brier_items(correct, confidence):
    return (confidence - correct) ** 2


def _nll_items(correct, confidence):
    clipped = np.clip(confidence, EPS, 1.0 - EPS)
    return -np.where(correct == 1.0, np.log(clipped), np.log1p(-clipped))


def _multiclass_brier_items(probabilities, labels):
    one_hot = np.zeros_like(probabilities)
    one_hot[np.arange(len(labels)), labels] = 1.0
    return ((probabilities - one_hot) ** 2).sum(axis=1)


def _multiclass_nll_items(probabilities, labels):
    gold = probabilities[np.arange(len(labels)), labels]
    return -np.log(np.clip(gold, EPS, 1.0 - EPS))


def _check_beta(beta: int) -> None:
    if int(beta) != beta or beta < 1:
        raise DataError(f"beta = {beta!r}; expected a positive number of items per bin")


# --------------------------------------------------------------------------- reliability curve


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin numbers of a reliability diagram; only bins holding at least one item.

    Attributes
    ----------
    strategy : {"uniform", "quantile"}
    n_bins : int
        Bins asked for (empty ones are left out of the arrays).
    bin_lower, bin_upper : ndarray of shape (m,)
        Bin edges for "uniform"; the smallest and largest confidence inside for "quantile".
    mean_confidence : ndarray of shape (m,)
    accuracy : ndarray of shape (m,)
    counts : ndarray of shape (m,), int
    """

    strategy: str
    n_bins: int
    bin_lower: np.ndarray
    bin_upper: np.ndarray
    mean_confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray

    @property
    def ece(self) -> float:
        """ECE recomputed from the bins: sum of count-weighted gaps."""
        return float((self.counts * np.abs(self.accuracy - self.mean_confidence)).sum() / self.counts.sum())

    def to_dict(self) -> dict:
        """Plain JSON-ready numbers."""
        return {
            "strategy": self.strategy,
            "n_bins": self.n_bins,
            "bin_lower": self.bin_lower.tolist(),
            "bin_upper": self.bin_upper.tolist(),
            "mean_confidence": self.mean_confidence.tolist(),
            "accuracy": self.accuracy.tolist(),
            "counts": self.counts.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ReliabilityCurve":
        """Inverse of `to_dict`."""
        return cls(
            strategy=data["strategy"],
            n_bins=int(data["n_bins"]),
            bin_lower=np.asarray(data["bin_lower"], float),
            bin_upper=np.asarray(data["bin_upper"], float),
            mean_confidence=np.asarray(data["mean_confidence"], float),
            accuracy=np.asarray(data["accuracy"], float),
            counts=np.asarray(data["counts"], int),
        )


def reliability_curve(correct, confidence, n_bins: int = 15, strategy: str = "uniform") -> ReliabilityCurve:
    """Mean confidence, accuracy and item count of each non-empty bin.

    Parameters
    ----------
    correct : array-like of shape (n,), 0/1
    confidence : array-like of shape (n,), in [0, 1]
    n_bins : int
    strategy : {"uniform", "quantile"}
        The same binning `expected_calibration_error` uses, so the curve's `ece` equals it.

    Returns
    -------
    ReliabilityCurve
    """
    correct, confidence = check_top_label(correct, confidence)
    _check_bins(n_bins, strategy)
    n_bins = int(n_bins)
    bins = _bin_index(confidence[None], n_bins, strategy)[0]
    counts, conf_sums, correct_sums = (a[0] for a in _bin_sums(correct[None], confidence[None], bins[None], n_bins))
    filled = counts > 0
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
        lower, upper = edges[:-1][filled], edges[1:][filled]
    else:
        lower = np.array([confidence[bins == b].min() for b in np.flatnonzero(filled)])
        upper = np.array([confidence[bins == b].max() for b in np.flatnonzero(filled)])
    return ReliabilityCurve(
        strategy=strategy,
        n_bins=n_bins,
        bin_lower=lower,
        bin_upper=upper,
        mean_confidence=conf_sums[filled] / counts[filled],
        accuracy=correct_sums[filled] / counts[filled],
        counts=counts[filled].astype(int),
    )


# --------------------------------------------------------------------------- bootstrap


def bootstrap_indices(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Resample indices in chunks.

    Parameters
    ----------
    n : int
        Number of items.
    n_boot : int
        Total number of resamples.
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same resamples.

    Yields
    ------
    ndarray of shape (b, n), int
        b rows of indices drawn with replacement, b summing to ``n_boot`` over the chunks.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_CELLS // max(n, 1))
    done = 0
    while done < n_boot:
        rows = min(chunk, n_boot - done)
        yield rng.integers(0, n, size=(rows, n))
        done += rows


# Binned calibration errors are biased upward on finite samples (every bin's |accuracy -
# confidence| picks up noise), and a resample's more so: their bootstrap replicates sit above
# the estimate, and the plain percentile interval can exclude it (0.081 outside [0.082, 0.152]).
RECENTRED = ("ece", "ece_equal_mass", "mce", "rms_calibration_error")


def _interval(point: float, replicates: np.ndarray, level: float, recentre: bool = False) -> dict[str, float]:
    """Percentile interval of the replicates; with ``recentre``, of the replicates shifted by
    the bootstrap's estimate of the estimator's bias (their mean minus the estimate), which is
    reported as ``bias``: the interval then shows the estimate's sampling spread around itself
    instead of adding the bias a second time, and the estimate lies inside it."""
    replicates = replicates[~np.isnan(replicates)]
    if np.isnan(point) or replicates.size == 0:
        empty = {"value": float(point), "low": float("nan"), "high": float("nan")}
        return {**empty, "bias": float("nan")} if recentre else empty
    tail = (1.0 - level) / 2.0 * 100.0
    bias = float(replicates.mean() - point) if recentre else 0.0
    low, high = np.percentile(replicates - bias, [tail, 100.0 - tail])
    entry = {"value": float(point), "low": float(low), "high": float(high)}
    if recentre:
        # A calibration error lies in [0, 1]: the shifted replicates may not.
        entry.update(low=max(0.0, entry["low"]), high=min(1.0, entry["high"]), bias=bias)
    return entry


def summarize(
    correct,
    confidence,
    *,
    probabilities=None,
    labels=None,
    n_bins: int = 15,
    beta: int = 100,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Every metric with a bootstrap interval.

    Means (accuracy, Brier, NLL, ...) and AUROC/AURC get the percentile interval of the
    resampled values. The binned calibration errors (`RECENTRED`) get it of the resampled
    values minus the bootstrap bias (their mean minus the estimate), and report that ``bias``:
    the plug-in estimate is biased upward, a resample's more so, and the plain percentile
    interval can miss the estimate altogether. Read the recentred interval as the estimate's
    sampling spread; ``value - bias`` is the bootstrap's bias-corrected estimate of the
    population's calibration error.

    Parameters
    ----------
    correct : array-like of shape (n,), 0/1
    confidence : array-like of shape (n,), in [0, 1]
    probabilities : array-like of shape (n, K), optional
        Full label distribution; with ``labels`` adds ``brier_multiclass`` and ``nll_multiclass``.
    labels : array-like of shape (n,), optional
        Gold label indices for ``probabilities``.
    n_bins : int
        Bins of ``ece``, ``ece_equal_mass`` and ``mce``.
    beta : int
        Items per bin of ``rms_calibration_error``.
    n_boot : int
        Bootstrap resamples of the items (0 gives NaN intervals).
    seed : int
        Seed of the resampling; equal seeds give equal intervals.
    level : float
        Coverage of the percentile interval, 0.95 by default.

    Returns
    -------
    dict
        Metric name (keys of `METRICS`) -> ``{"value", "low", "high"}``, plus ``"bias"`` for
        `RECENTRED`. ``low``/``high`` are NaN where the statistic is undefined (AUROC with one
        outcome only).
    """
    correct, confidence = check_top_label(correct, confidence)
    _check_bins(n_bins, "uniform")
    _check_beta(beta)
    if not 0.0 < level < 1.0:
        raise DataError(f"level = {level!r}; expected a coverage strictly between 0 and 1")
    if int(n_boot) != n_boot or n_boot < 0:
        raise DataError(f"n_boot = {n_boot!r}; expected a non-negative number of resamples")
    n_bins, beta = int(n_bins), int(beta)

    # Per-item losses: a resample's mean is the mean of the resampled items' losses.
    item_values = {
        "accuracy": correct,
        "mean_confidence": confidence,
        "brier": _brier_items(correct, confidence),
        "nll": _nll_items(correct, confidence),
    }
    if probabilities is not None or labels is not None:
        if probabilities is None or labels is None:
            raise DataError("probabilities and labels go together; got only one of them")
        probabilities, labels = check_distribution(probabilities, labels)
        if len(labels) != len(correct):
            raise DataError(
                f"probabilities have {len(labels)} rows but confidence has {len(correct)} items"
            )
        item_values["brier_multiclass"] = _multiclass_brier_items(probabilities, labels)
        item_values["nll_multiclass"] = _multiclass_nll_items(probabilities, labels)

    row_statistics: dict[str, Callable] = {
        "ece": lambda c, p: _ece_rows(c, p, n_bins, "uniform"),
        "ece_equal_mass": lambda c, p: _ece_rows(c, p, n_bins, "quantile"),
        "rms_calibration_error": lambda c, p: _rms_rows(c, p, beta),
        "mce": lambda c, p: _mce_rows(c, p, n_bins, "uniform"),
        "auroc": _auroc_rows,
        "aurc": _aurc_rows,
    }

    points = {name: float(values.mean()) for name, values in item_values.items()}
    points.update({name: float(f(correct[None], confidence[None])[0]) for name, f in row_statistics.items()})

    replicates: dict[str, list[np.ndarray]] = {name: [] for name in points}
    for index in bootstrap_indices(len(correct), int(n_boot), seed):
        for name, values in item_values.items():
            replicates[name].append(values[index].mean(axis=1))
        sample_correct, sample_confidence = correct[index], confidence[index]
        for name, statistic in row_statistics.items():
            replicates[name].append(statistic(sample_correct, sample_confidence))

    ordered = [name for name in METRICS if name in points]
    return {
        name: _interval(
            points[name],
            np.concatenate(replicates[name]) if replicates[name] else np.empty(0),
            level,
            recentre=name in RECENTRED,
        )
        for name in ordered
    }
