"""The modules moved into core/ and stats/ stay importable at their old paths, as the same
objects (not copies), so code and pickles written against the old names keep working."""

from __future__ import annotations

import importlib

import pytest

MOVED = {
    "howsure.task": "howsure.core.task",
    "howsure.metrics": "howsure.stats.metrics",
    "howsure.splits": "howsure.stats.splits",
    "howsure.service.drift": "howsure.stats.drift",
    "howsure.backends.base": "howsure.core.scores",
    "howsure.calibration.base": "howsure.core.validation",
}


@pytest.mark.parametrize("old,new", MOVED.items())
def test_old_path_exports_the_moved_objects(old, new):
    old_module, new_module = importlib.import_module(old), importlib.import_module(new)
    names = [name for name in getattr(old_module, "__all__", dir(old_module)) if hasattr(new_module, name)]
    names = [name for name in names if not name.startswith("__") and name != "annotations"]
    assert names, f"{old} re-exports nothing from {new}"
    for name in names:
        assert getattr(old_module, name) is getattr(new_module, name), f"{old}.{name}"


def test_the_validators_the_calibrators_import_are_the_shared_ones():
    from howsure.calibration import base
    from howsure.core import validation

    for name in ("check_scores", "check_labels", "check_fit_inputs", "check_mode", "MODES", "ROW_SUM_TOLERANCE"):
        assert getattr(base, name) is getattr(validation, name)
