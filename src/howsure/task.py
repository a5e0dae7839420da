"""Moved to `howsure.core.task`; this path stays importable for existing code."""

from howsure.core.task import BUNDLED_TASKS, VARIANT_RULES, Example, Task, load_task, normalize_answer

__all__ = ["BUNDLED_TASKS", "VARIANT_RULES", "Example", "Task", "load_task", "normalize_answer"]
