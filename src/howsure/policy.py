"""Moved to `howsure.decisions.policy`; this name stays importable."""

from howsure.decisions.policy import (  # noqa: F401
    DECISIONS,
    FORMAT_NAME,
    MAX_REFERENCE,
    POSITIVE_NAMES,
    REFERENCE_DIGITS,
    RULES,
    SCHEMA_VERSION,
    Decision,
    Policy,
    TwoSidedRule,
    positive_label,
)
from howsure.decisions.policy_certification import (  # noqa: F401
    ASSUMPTION,
    assumption_text,
    certify_policy,
    data_fingerprint,
    reference_quantiles,
)

__all__ = [
    "ASSUMPTION",
    "DECISIONS",
    "FORMAT_NAME",
    "MAX_REFERENCE",
    "POSITIVE_NAMES",
    "REFERENCE_DIGITS",
    "RULES",
    "SCHEMA_VERSION",
    "Decision",
    "Policy",
    "TwoSidedRule",
    "assumption_text",
    "certify_policy",
    "data_fingerprint",
    "positive_label",
    "reference_quantiles",
]
