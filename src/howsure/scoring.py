"""Moved to `howsure.backends.labels`; this name stays importable."""

from howsure.backends.labels import (  # noqa: F401
    INSPECT_LOW_LABEL_MASS,
    LOW_LABEL_MASS,
    LabelVocabulary,
    LowLabelMassWarning,
    build_label_vocabulary,
    decode_sequence,
    label_scores_from_probs,
    surface_forms,
    warn_if_low_label_mass,
)

__all__ = [
    "INSPECT_LOW_LABEL_MASS",
    "LOW_LABEL_MASS",
    "LabelVocabulary",
    "LowLabelMassWarning",
    "build_label_vocabulary",
    "decode_sequence",
    "label_scores_from_probs",
    "surface_forms",
    "warn_if_low_label_mass",
]
