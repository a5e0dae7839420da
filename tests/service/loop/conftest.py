"""Fixtures of the learning-loop tests; the helpers live in loop_sim.py."""

from __future__ import annotations

from typing import Any

import pytest

from loop_sim import loop_policy_dict


@pytest.fixture
def loop_policy() -> dict[str, Any]:
    """`loop_policy_dict()`: certified at 95 % on the synthetic model, no calibrator."""
    return loop_policy_dict()
