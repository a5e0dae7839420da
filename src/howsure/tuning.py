"""Moved to howsure.pipelines.tune_task; these names stay importable."""

from howsure.pipelines.tune_task import CandidateResult, auroc_standard_error, load_candidates, rank_candidates

__all__ = ["CandidateResult", "auroc_standard_error", "load_candidates", "rank_candidates"]
