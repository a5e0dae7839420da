"""Old import path of ``howsure.pipelines.score_job`` (the resumable scoring job); kept for users."""

from howsure.pipelines.score_job import (CHUNK_ROWS, INVALID_POLICIES, ScoreSummary, meta_path,
                                         reject_invalid_rows, run_meta, score_rows)

__all__ = ["CHUNK_ROWS", "INVALID_POLICIES", "ScoreSummary", "meta_path", "reject_invalid_rows", "run_meta",
           "score_rows"]
