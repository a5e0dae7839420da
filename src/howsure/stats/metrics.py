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

Binning conventions (equal-width, equal-mass, groups of ``beta`` items) are stated in
`howsure.stats.binning`, because published numbers differ by them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from scipy.stats import rankdata

# Names re-exported for code that read them here before the split (validators, binning, curve).
from howsure.core.scored import top_label  # noqa: F401  (re-exported: the top-label view is a core record)
from howsure.core.validation import ROW_SUM_TOLERANCE, check_length, check_top_label  # noqa: F401
from howsure.core.validation import as_vector, check_distribution
from howsure.errors import DataError
from howsure.stats.binning import STRATEGIES, STRATEGY_NAMES  # noqa: F401
from howsure.stats.binning import bin_index, bin_sums, check_bins, rank_groups
from howsure.stats.intervals import percentile_interval
from howsure.stats.reliability import ReliabilityCurve, reliability_curve  # noqa: F401

#: Probabilities are clipped to [EPS, 1 - EPS] before taking logs, as scikit-learn's
#: ``log_loss`` does, so a confidently wrong item costs a large but finite amount.
EPS = float(np.finfo(float).eps)

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


# --------------------------------------------------------------------------- row-wise statistics
# Each takes `correct` and `confidence` of shape (B, n) and returns shape (B,).


def _ece_rows(correct, confidence, n_bins: int, strategy: str) -> np.ndarray:
    counts, conf_sums, correct_sums = bin_sums(
        correct, confidence, bin_index(confidence, n_bins, strategy), n_bins
    )
    # sum_b (n_b / n) |mean_conf_b - acc_b| = sum_b |conf_sum_b - correct_sum_b| / n
    return np.abs(conf_sums - correct_sums).sum(axis=1) / confidence.shape[1]


def _mce_rows(correct, confidence, n_bins: int, strategy: str) -> np.ndarray:
    counts, conf_sums, correct_sums = bin_sums(
        correct, confidence, bin_index(confidence, n_bins, strategy), n_bins
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        gaps = np.abs(conf_sums - correct_sums) / counts
    return np.where(counts > 0, gaps, 0.0).max(axis=1)


def _rms_rows(correct, confidence, beta: int) -> np.ndarray:
    n = confidence.shape[1]
    n_groups = max(n // beta, 1)
    # Groups of beta items; the last one absorbs the remainder (n % beta items).
    groups = rank_groups(confidence, lambda rank, _n: np.minimum(rank // beta, n_groups - 1))
    counts, conf_sums, correct_sums = bin_sums(correct, confidence, groups, n_groups)
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
    correct = as_vector(correct, "correct")
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
    check_bins(n_bins, strategy)
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
    check_bins(n_bins, strategy)
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
    check_bins(n_bins, "uniform")
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
        check_length(
            labels, len(correct), f"probabilities have {len(labels)} rows but confidence has {len(correct)} items"
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
        name: percentile_interval(
            points[name],
            np.concatenate(replicates[name]) if replicates[name] else np.empty(0),
            level,
            recentre=name in RECENTRED,
        )
        for name in ordered
    }
