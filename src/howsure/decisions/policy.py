"""A decision policy: calibrator + certified threshold(s) + the guarantee, as one JSON file.

    from howsure.decisions.policy import Policy
    from howsure.decisions.policy_certification import certify_policy
    policy = certify_policy(true_labels, probabilities, target_accuracy=0.95, delta=0.05,
                            labels=["negative", "positive"], model_id="smollm2-135m")
    policy.save("policy.json")
    policy = Policy.load("policy.json")
    for d in policy.decide(new_probabilities):     # (n, K) raw label probabilities
        print(d.label, d.confidence, d.decision)   # decision: "auto" or "review"

Inputs are always the model's *raw* outputs: the policy applies its own calibrator both when
it is certified and when it decides, so the threshold is compared with exactly the kind of
confidence it was certified on. The calibrator must have been fitted on other labelled items
than the ones certifying the threshold, or the guarantee no longer holds.

The file is plain JSON (no executable serialisation) and versioned: ``schema_version`` is the layout of the
file, ``version`` the user's version of this policy (bump it when re-certifying),
``policy_id`` a hash of the content that changes whenever anything in it does.

``reference`` keeps the calibrated top-label confidences of the certification items (sorted,
at most `MAX_REFERENCE` quantiles), so a label-free drift check can later compare live
confidences with them (``howsure.service.drift``). Files written before it existed still load.

Three optional fields, present only when set (older files load and keep their ``policy_id``):
``adapter`` (``{"directory", "checksum"}``: the LoRA adapter the scores come through, the sha256
of its weights, `adapter_checksum`), ``certified_on`` (the text hashes of the certification
items, so a later fine-tune keeps them out of training) and ``overlap`` (a sentence, when the
policy was certified on items its adapter trained on, with ``--allow-overlap``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from howsure.core.validation import check_probabilities
from howsure.errors import CalibrationError, PolicyError

FORMAT_NAME = "howsure.policy"
SCHEMA_VERSION = 1
RULES = ("top_label", "per_class")
DECISIONS = ("auto", "review")
MAX_REFERENCE = 2000  # quantiles kept of the reference confidences: enough for PSI and KS
REFERENCE_DIGITS = 6


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one item.

    ``label`` is the predicted label, ``confidence`` its calibrated probability, ``decision``
    ``"auto"`` (act on ``label`` without a person) or ``"review"``, ``probabilities`` the
    calibrated probability of every label.
    """

    label: str
    confidence: float
    decision: str
    probabilities: dict[str, float]


@dataclass
class Policy:
    """A certified routing rule. Build one with `certify_policy`, read one with `Policy.load`.

    ``rule`` is ``"top_label"`` (automate when the predicted label's calibrated confidence is
    at least ``threshold``) or ``"per_class"`` (at least ``class_thresholds[label]``). A
    threshold of None automates nothing. ``reference`` holds the calibrated confidences the
    threshold was certified on (sorted quantiles), for drift checks; None in older files.
    """

    labels: list[str]
    rule: str
    threshold: float | None
    class_thresholds: dict[str, float | None] | None
    guarantee: dict[str, Any]
    data_fingerprint: str
    calibrator: dict[str, Any] | None = None
    task: dict[str, Any] | None = None
    model_id: str | None = None
    version: int = 1
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    cost: dict[str, Any] | None = None
    reference: list[float] | None = None
    adapter: dict[str, Any] | None = None
    certified_on: dict[str, Any] | None = None
    overlap: str | None = None
    _calibrator_object: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._validate()

    # ------------------------------------------------------------------ identity and I/O
    @property
    def policy_id(self) -> str:
        """Short sha256 of the content; two files with the same id route identically."""
        blob = json.dumps(self._content(), sort_keys=True, ensure_ascii=False, allow_nan=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _content(self) -> dict[str, Any]:
        content = {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "version": self.version,
            "created": self.created,
            "model_id": self.model_id,
            "task": self.task,
            "labels": list(self.labels),
            "calibrator": self.calibrator,
            "rule": self.rule,
            "threshold": self.threshold,
            "class_thresholds": self.class_thresholds,
            "guarantee": self.guarantee,
            "cost": self.cost,
            "data_fingerprint": self.data_fingerprint,
        }
        # Only present when set, so a file written before the field existed keeps its
        # policy_id and still loads.
        if self.reference is not None:
            content["reference"] = self.reference
        for name in ("adapter", "certified_on", "overlap"):
            if getattr(self, name) is not None:
                content[name] = getattr(self, name)
        return content

    def to_dict(self) -> dict[str, Any]:
        return {**self._content(), "policy_id": self.policy_id}

    def save(self, path: str | Path) -> Path:
        """Write the policy as JSON to ``path`` and return the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False, allow_nan=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        """Read a policy written by `save`; `PolicyError` on anything else."""
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise PolicyError(f"policy file {str(path)!r} does not exist") from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
            raise PolicyError(f"cannot read policy file {str(path)!r}: {exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"policy file {str(path)!r} is not valid JSON: {exc}") from None
        try:
            return cls.from_dict(data)
        except PolicyError as exc:
            raise PolicyError(f"policy file {str(path)!r}: {exc}") from None

    @classmethod
    def from_dict(cls, data: Any) -> "Policy":
        """Rebuild a policy from `to_dict` output, checking format, version and every field."""
        if not isinstance(data, dict):
            raise PolicyError(f"a policy must be a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT_NAME:
            raise PolicyError(f"not a howsure policy: format is {data.get('format')!r}, expected {FORMAT_NAME!r}")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise PolicyError(
                f"policy schema version {data.get('schema_version')!r} is not supported; this "
                f"howsure reads schema version {SCHEMA_VERSION}"
            )
        required = ("labels", "rule", "threshold", "class_thresholds", "guarantee", "data_fingerprint",
                    "version", "created")
        missing = [key for key in required if key not in data]
        if missing:
            raise PolicyError(f"policy is missing the field {missing[0]!r}")
        policy = cls(
            labels=data["labels"],
            rule=data["rule"],
            threshold=data["threshold"],
            class_thresholds=data["class_thresholds"],
            guarantee=data["guarantee"],
            data_fingerprint=data["data_fingerprint"],
            calibrator=data.get("calibrator"),
            task=data.get("task"),
            model_id=data.get("model_id"),
            version=data["version"],
            created=data["created"],
            cost=data.get("cost"),
            reference=data.get("reference"),
            adapter=data.get("adapter"),
            certified_on=data.get("certified_on"),
            overlap=data.get("overlap"),
        )
        stated = data.get("policy_id")
        if stated is not None and stated != policy.policy_id:
            raise PolicyError(
                f"policy_id {stated!r} does not match the content (hash {policy.policy_id!r}); "
                "the file was edited by hand - certify it again instead"
            )
        return policy

    def _validate(self) -> None:
        if not isinstance(self.labels, list) or len(self.labels) < 2 or not all(
            isinstance(label, str) and label for label in self.labels
        ):
            raise PolicyError(f"policy labels must be a list of at least 2 non-empty names, got {self.labels!r}")
        if len(set(self.labels)) != len(self.labels):
            raise PolicyError(f"policy labels repeat a name: {self.labels!r}")
        if self.rule not in RULES:
            raise PolicyError(f"unknown policy rule {self.rule!r}; expected one of {list(RULES)}")
        _check_threshold(self.threshold, "threshold")
        if self.rule == "per_class":
            if not isinstance(self.class_thresholds, dict):
                raise PolicyError(
                    f"a per_class policy needs class_thresholds {{label: threshold}}, got {self.class_thresholds!r}"
                )
            unknown = sorted(set(self.class_thresholds) - set(self.labels))
            if unknown:
                raise PolicyError(f"class threshold for {unknown[0]!r}, which is not one of the labels {self.labels}")
            for label, value in self.class_thresholds.items():
                _check_threshold(value, f"threshold of {label!r}")
        elif self.class_thresholds is not None:
            raise PolicyError("a top_label policy has one threshold; class_thresholds must be null")
        if not isinstance(self.version, int) or isinstance(self.version, bool) or self.version < 1:
            raise PolicyError(f"policy version must be an integer >= 1, got {self.version!r}")
        if not isinstance(self.guarantee, dict):
            raise PolicyError(f"policy guarantee must be an object, got {self.guarantee!r}")
        if self.calibrator is not None and not isinstance(self.calibrator, dict):
            raise PolicyError(f"policy calibrator must be an object or null, got {type(self.calibrator).__name__}")
        if self.reference is not None:
            _check_reference(self.reference)
        if self.adapter is not None:
            _check_adapter(self.adapter)
        if self.certified_on is not None and (
                not isinstance(self.certified_on, dict) or self.certified_on.get("key") not in ("text", "id")
                or not isinstance(self.certified_on.get("hashes"), list)):
            raise PolicyError(f"policy certified_on must be {{'key': 'text' or 'id', 'n_items': n, 'hashes': [...]}}, "
                              f"got {self.certified_on!r:.80}")
        if self.overlap is not None and not isinstance(self.overlap, str):
            raise PolicyError(f"policy overlap must be a sentence or null, got {self.overlap!r:.80}")
        if self.task is not None:
            task_labels = list((self.task or {}).get("labels", {}))
            if task_labels != self.labels:
                raise PolicyError(f"policy labels {self.labels} differ from its task's labels {task_labels}")

    # ------------------------------------------------------------------ deciding
    def use_calibrator(self, calibrator: Any) -> None:
        """Apply ``calibrator`` from now on: a fitted calibrator, its ``to_dict()``, or None
        (raw scores)."""
        if calibrator is None or isinstance(calibrator, dict):
            self.calibrator, self._calibrator_object = calibrator, None
        else:
            self.calibrator, self._calibrator_object = calibrator.to_dict(), calibrator

    def loaded_calibrator(self) -> Any:
        """The fitted calibrator the policy applies (its ``calibrator`` field, loaded once), or
        None for a policy on raw scores; `PolicyError` when the stored state cannot be loaded."""
        if self.calibrator is None:
            return None
        if self._calibrator_object is None:
            try:  # here, not at the top: calibration loads sklearn, deciding on raw scores must not
                from howsure.calibration import calibrator_from_dict
            except ImportError:  # pragma: no cover - calibration ships with howsure
                raise PolicyError("this policy has a calibrator but howsure.calibration is not installed") from None
            try:
                self._calibrator_object = calibrator_from_dict(self.calibrator)
            except CalibrationError as exc:
                raise PolicyError(f"the policy's calibrator cannot be loaded: {exc}") from None
        return self._calibrator_object

    @staticmethod
    def _apply(calibrator: Any, scores: np.ndarray) -> np.ndarray:
        try:
            return calibrator.predict_proba(scores)
        except CalibrationError as exc:
            raise PolicyError(f"the policy's calibrator refused the input: {exc}") from None

    def calibrate(self, probabilities: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply the policy's calibrator to raw label probabilities.

        Parameters
        ----------
        probabilities : array-like of shape (n, K)
            Raw label probabilities, columns in the order of `labels`.

        Returns
        -------
        predicted : ndarray of shape (n,), int
            Index of the predicted label.
        confidence : ndarray of shape (n,)
            Its calibrated probability: what the threshold is compared with.
        calibrated : ndarray of shape (n, K)
            Calibrated probabilities of every label. With a confidence-mode calibrator only the
            predicted label's probability is calibrated; the rest share what remains in
            proportion to their raw probabilities.
        """
        probs = check_probabilities(probabilities)
        if probs.shape[1] != len(self.labels):
            raise PolicyError(
                f"probabilities have {probs.shape[1]} columns but the policy has "
                f"{len(self.labels)} labels {self.labels}"
            )
        calibrator = self.loaded_calibrator()
        if calibrator is not None and calibrator.mode == "distribution":
            probs = np.asarray(self._apply(calibrator, probs), dtype=np.float64)
        rows = np.arange(probs.shape[0])
        predicted = probs.argmax(axis=1)
        raw_top = probs[rows, predicted]
        if calibrator is None or calibrator.mode == "distribution":
            return predicted, raw_top, probs
        confidence = np.asarray(self._apply(calibrator, raw_top), dtype=np.float64)
        rest = probs.sum(axis=1) - raw_top
        scale = np.divide(1 - confidence, rest, out=np.zeros_like(rest), where=rest > 0)
        calibrated = probs * scale[:, None]
        calibrated[rows, predicted] = confidence
        return predicted, confidence, calibrated

    def automate(self, predicted: np.ndarray, confidence: np.ndarray) -> np.ndarray:
        """(n,) bool: which items the rule automates, given predicted indices and confidences."""
        if self.rule == "top_label":
            cut = np.full(len(self.labels), np.inf if self.threshold is None else self.threshold)
        else:
            cut = np.array([
                np.inf if self.class_thresholds.get(label) is None else self.class_thresholds[label]
                for label in self.labels
            ])
        return confidence >= cut[predicted]

    def decide(self, probabilities: Any) -> list[Decision]:
        """Route items: one `Decision` per row of raw label probabilities (n, K)."""
        predicted, confidence, calibrated = self.calibrate(probabilities)
        auto = self.automate(predicted, confidence)
        return [
            Decision(
                label=self.labels[p],
                confidence=float(c),
                decision="auto" if a else "review",
                probabilities={label: float(v) for label, v in zip(self.labels, row)},
            )
            for p, c, a, row in zip(predicted, confidence, auto, calibrated)
        ]

    def two_sided(self) -> "TwoSidedRule | None":
        """A per-class policy on two labels, read as the two-sided binary policy.

        Per predicted label, "automate label A when P(A) >= t_A" on two labels whose
        probabilities sum to 1 (howsure score's and every calibrator's do) is "auto-positive if
        P(positive) >= t_positive, auto-negative if P(positive) <= 1 - t_negative, review the
        middle". None for a top_label policy or more than two labels.
        """
        if self.rule != "per_class" or len(self.labels) != 2:
            return None
        positive = positive_label(self.labels)
        negative = next(label for label in self.labels if label != positive)
        thresholds = self.class_thresholds or {}
        t_neg = thresholds.get(negative)
        return TwoSidedRule(
            positive=positive, negative=negative, accept_above=thresholds.get(positive),
            reject_below=None if t_neg is None else 1 - t_neg,
        )

    def summary(self) -> str:
        """What the policy promises, in one sentence."""
        g = self.guarantee
        two_sided = self.two_sided()
        if two_sided is not None:
            return (
                f"{two_sided.text(calibrated=self.calibrator is not None)}; with probability >= "
                f"{1 - g['delta']:.0%} each automated label's precision is >= {g['target_accuracy']:.1%}"
            )
        if self.rule == "top_label":
            if self.threshold is None:
                return "automates nothing: every item goes to review"
            kind = "calibrated confidence" if self.calibrator is not None else "confidence"
            return (
                f"automates items whose {kind} is >= {self.threshold:.6g}; with "
                f"probability >= {1 - g['delta']:.0%} their accuracy is >= {g['target_accuracy']:.1%}"
            )
        parts = [
            f"{label} >= {t:.6g}" if t is not None else f"{label} never"
            for label, t in (self.class_thresholds or {}).items()
        ]
        return (
            f"automates per predicted label ({', '.join(parts)}); with probability >= "
            f"{1 - g['delta']:.0%} each automated label's precision is >= {g['target_accuracy']:.1%}"
        )


POSITIVE_NAMES = ("positive", "pos", "yes", "true", "1")


def positive_label(labels: Sequence[str]) -> str:
    """Which of two labels a two-sided policy calls positive: one named like ``positive``
    (positive, pos, yes, true, 1; any case), else the second."""
    named = [label for label in labels if label.strip().lower() in POSITIVE_NAMES]
    return named[0] if len(named) == 1 else labels[1]


@dataclass(frozen=True)
class TwoSidedRule:
    """A two-label per-class policy as the two-sided binary rule: auto-``positive`` when
    P(positive) >= ``accept_above``, auto-``negative`` when P(positive) <= ``reject_below``,
    review the middle. A side that is None never automates."""

    positive: str
    negative: str
    accept_above: float | None
    reject_below: float | None

    def text(self, calibrated: bool = False) -> str:
        """'auto-positive if P(positive) >= a, auto-negative if P(positive) <= b, review the middle'."""
        prob = f"P({self.positive})"
        accept = (f"auto-{self.positive} if {prob} >= {self.accept_above:.6g}"
                  if self.accept_above is not None else f"never auto-{self.positive}")
        reject = (f"auto-{self.negative} if {prob} <= {self.reject_below:.6g}"
                  if self.reject_below is not None else f"never auto-{self.negative}")
        note = f" ({prob} calibrated)" if calibrated else ""
        return f"{accept}, {reject}, review the middle{note}"


def _check_threshold(value: Any, what: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1 or math.isnan(value):
        raise PolicyError(f"{what} must be a number in [0, 1] or null, got {value!r}")


ADAPTER_WEIGHTS = "adapter_model.safetensors"


def adapter_checksum(directory: str | Path) -> str:
    """sha256 of an adapter directory's weight file (``adapter_model.safetensors``): what a
    policy records so the service scores with exactly the adapter it was certified with."""
    path = Path(directory) / ADAPTER_WEIGHTS
    try:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise PolicyError(f"cannot read the adapter weights {str(path)!r}: {exc}") from None


def _check_adapter(adapter: Any) -> None:
    if not isinstance(adapter, dict) or not all(isinstance(adapter.get(key), str) and adapter.get(key)
                                                for key in ("directory", "checksum")):
        raise PolicyError(f"policy adapter must be {{'directory': str, 'checksum': str}} or null, got {adapter!r:.80}")


def _check_reference(values: Any) -> None:
    if not isinstance(values, list) or not values:
        raise PolicyError(f"policy reference must be a non-empty list of confidences or null, got {values!r:.80}")
    if len(values) > MAX_REFERENCE:
        raise PolicyError(f"policy reference holds {len(values)} values; at most {MAX_REFERENCE} are kept")
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1 or math.isnan(value):
            raise PolicyError(f"policy reference value {i} must be a number in [0, 1], got {value!r}")
        if i and value < values[i - 1]:
            raise PolicyError(f"policy reference must be sorted; value {i} ({value!r}) < value {i - 1} ({values[i - 1]!r})")
