"""Moved to `howsure.decisions.walks`; this name stays importable."""

from howsure.decisions.walks import (  # noqa: F401
    certify_walk,
    fallback_walk,
    last_rejected,
    multistart_walk,
    start_index,
    top_slice_below_target,
)

__all__ = ["certify_walk", "fallback_walk", "last_rejected", "multistart_walk", "start_index", "top_slice_below_target"]
