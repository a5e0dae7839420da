"""Moved to howsure.pipelines.evaluate (the pipeline), howsure.io.scored_tables (reading scored
tables) and howsure.core.scored (ScoredItems); these names stay importable."""

from howsure.core.scored import ScoredItems
from howsure.io.scored import FALSE_WORDS, TRUE_WORDS
from howsure.io.scored_tables import load_scored_items, read_scores_table, scored_items_from_frame
from howsure.pipelines.evaluate import MODE_DESCRIPTIONS, Evaluation, EvaluationConfig, evaluate, resolve_mode

__all__ = ["FALSE_WORDS", "MODE_DESCRIPTIONS", "TRUE_WORDS", "Evaluation", "EvaluationConfig", "ScoredItems",
           "evaluate", "load_scored_items", "read_scores_table", "resolve_mode", "scored_items_from_frame"]
