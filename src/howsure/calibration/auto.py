"""``auto``: choose a calibrator by cross-validated log loss on the calibration data itself.

Each candidate is cross-fitted on the calibration items (k folds, stratified, duplicates kept
together when ``groups`` are given) and scored on its out-of-fold predictions; the lowest mean
log loss wins and is refitted on all calibration items. The choice never looks at test data.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from howsure.calibration.base import Calibrator, safe_log
from howsure.calibration.crossfit import crossfit_predict
from howsure.calibration.registry import CALIBRATOR_NAMES, calibrator_from_dict, make_calibrator
from howsure.core.validation import check_fit_inputs
from howsure.errors import CalibrationError


def per_item_log_loss(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n, K) probabilities and (n,) labels -> (n,) ``-ln p[label]`` (clipped, so finite)."""
    return -safe_log(probs[np.arange(labels.size), labels])


class AutoCalibrator(Calibrator):
    """Pick among the other calibrators by k-fold cross-validated log loss.

    Parameters
    ----------
    mode : {"distribution", "confidence"}
    candidates : list of str or None
        Calibrator names to try; ``None`` means every calibrator except ``auto``. On a tie the
        earlier name wins, so list simpler calibrators first.
    n_folds : int
        k of the internal cross-validation.
    seed : int
        Seed of the internal folds.

    Fitted attributes
    -----------------
    chosen_ : str
        Name of the winning calibrator.
    cv_log_loss_ : dict of str to float
        Mean out-of-fold log loss per candidate that could be fitted.
    raw_log_loss_ : float
        The same loss of the uncalibrated scores, for reference.
    skipped_ : dict of str to str
        Candidates that could not be fitted on this data, with the reason.
    explanation_ : str
        One sentence saying which calibrator was chosen and why.
    calibrator_ : Calibrator
        The chosen calibrator, refitted on all calibration items.
    """

    name = "auto"
    param_names = ("candidates", "n_folds", "seed")

    def __init__(
        self,
        mode: str = "distribution",
        candidates: Sequence[str] | None = None,
        n_folds: int = 5,
        seed: int = 0,
    ) -> None:
        super().__init__(mode)
        if candidates is not None:
            candidates = list(candidates)
            allowed = [name for name in CALIBRATOR_NAMES if name != self.name]
            unknown = [name for name in candidates if name not in allowed]
            if unknown or not candidates:
                raise CalibrationError(
                    f"auto candidates {candidates!r} must be a non-empty list drawn from {allowed}"
                )
        self.candidates = candidates
        self.n_folds = n_folds
        self.seed = seed

    def _candidate_names(self) -> list[str]:
        if self.candidates is not None:
            return list(self.candidates)
        return [name for name in CALIBRATOR_NAMES if name != self.name]

    def fit(self, scores: Any, y: Any, groups: Sequence[Hashable] | None = None) -> "AutoCalibrator":
        """Cross-validate every candidate, keep the best, refit it on all items.

        Parameters
        ----------
        scores : array-like, (n, K) label probabilities or (n,) confidences (see ``mode``)
        y : array-like of shape (n,)
        groups : sequence of hashables of shape (n,), optional
            Keys (e.g. texts) whose items stay in one fold, so duplicates cannot flatter a
            candidate that memorises.

        Returns
        -------
        self
        """
        probs, labels = check_fit_inputs(scores, y, self.mode)
        raw = probs[:, 1] if self.mode == "confidence" else probs
        per_item: dict[str, np.ndarray] = {}
        skipped: dict[str, str] = {}
        scheme = None
        for name in self._candidate_names():
            try:
                out_of_fold, scheme = crossfit_predict(
                    lambda name=name: make_calibrator(name, mode=self.mode),
                    raw,
                    labels,
                    n_folds=self.n_folds,
                    seed=self.seed,
                    groups=groups,
                    return_scheme=True,
                )
            except CalibrationError as exc:
                skipped[name] = str(exc)
                continue
            distribution = (
                np.column_stack([1.0 - out_of_fold, out_of_fold]) if self.mode == "confidence" else out_of_fold
            )
            per_item[name] = per_item_log_loss(distribution, labels)
        if not per_item:
            reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
            raise CalibrationError(f"auto could not cross-validate any candidate: {reasons}")

        self.cv_log_loss_ = {name: float(losses.mean()) for name, losses in per_item.items()}
        self.raw_log_loss_ = float(per_item_log_loss(probs, labels).mean())
        self.skipped_ = skipped
        self.chosen_ = min(self.cv_log_loss_, key=self.cv_log_loss_.get)
        self.explanation_ = self._explain(per_item, scheme.describe())
        self.calibrator_ = make_calibrator(self.chosen_, mode=self.mode).fit(raw, labels)
        self.n_classes_ = probs.shape[1]
        return self

    def _explain(self, per_item: dict[str, np.ndarray], scheme_sentence: str) -> str:
        ranked = sorted(self.cv_log_loss_, key=self.cv_log_loss_.get)
        best = ranked[0]
        sentence = (
            f"Chose {best}: lowest cross-validated log loss on the calibration data, "
            f"{self.cv_log_loss_[best]:.4f} against {self.raw_log_loss_:.4f} uncalibrated "
            f"[{scheme_sentence}]."
        )
        if len(ranked) > 1:
            runner_up = ranked[1]
            # Paired per-item differences: the same items scored by both, so their spread is
            # the honest yardstick for whether the gap means anything.
            gap = per_item[runner_up] - per_item[best]
            standard_error = float(gap.std(ddof=1) / np.sqrt(gap.size))
            verdict = "a clear margin" if gap.mean() > 2 * standard_error else "within noise, so either would do"
            sentence += (
                f" Runner-up {runner_up} was {gap.mean():.4f} worse "
                f"(standard error {standard_error:.4f}: {verdict})."
            )
        if len(ranked) > 2:
            sentence += " Others: " + ", ".join(f"{name} {self.cv_log_loss_[name]:.4f}" for name in ranked[2:]) + "."
        if self.skipped_:
            sentence += " Not usable here: " + "; ".join(f"{n} ({r})" for n, r in self.skipped_.items()) + "."
        return sentence

    def _predict(self, probs: np.ndarray) -> np.ndarray:
        return self.calibrator_._predict(probs)

    def _get_state(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen_,
            "cv_log_loss": self.cv_log_loss_,
            "raw_log_loss": self.raw_log_loss_,
            "skipped": self.skipped_,
            "explanation": self.explanation_,
            "calibrator": self.calibrator_.to_dict(),
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self.calibrator_ = calibrator_from_dict(state["calibrator"])
        self.chosen_ = str(state["chosen"])
        if self.calibrator_.name != self.chosen_ or not self.calibrator_.is_fitted:
            raise ValueError(f"inner calibrator {self.calibrator_.name!r} does not match chosen {self.chosen_!r}")
        self.cv_log_loss_ = {str(k): float(v) for k, v in state["cv_log_loss"].items()}
        self.raw_log_loss_ = float(state["raw_log_loss"])
        self.skipped_ = {str(k): str(v) for k, v in state["skipped"].items()}
        self.explanation_ = str(state["explanation"])
