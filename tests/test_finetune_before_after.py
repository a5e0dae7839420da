"""docs/scripts/finetune_before_after.py's seed-experiment helpers: the evaluation mix and the
per-domain log-odds table the docs quote (no model is loaded)."""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from howsure.datasets.seed_sentiment import generate_seed_sentiment

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "scripts" / "finetune_before_after.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("finetune_before_after", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_neutral_heavy_weights_give_the_asked_share_and_keep_the_opinion_mix(script):
    weights = script.neutral_heavy_weights(0.5)
    rows = generate_seed_sentiment(n=320, bias=0.5, seed=1, weights=weights)
    neutral = [row for row in rows if row["category"].startswith("neutral")]
    assert len(neutral) == 160
    assert weights["weak_positive"] / weights["strong_positive"] == pytest.approx(5.0)


def _side(script, groups, p_positive):
    items = types.SimpleNamespace(label_names=["negative", "positive"],
                                  probabilities=np.c_[1 - p_positive, p_positive])
    return script.ScoredFile(items, groups, "")


def test_group_table_reports_shift_relative_to_the_overall_shift(script, capsys):
    frame = pd.DataFrame(generate_seed_sentiment(n=160, bias=0.5, seed=2, weights=script.neutral_heavy_weights(0.5)))
    groups = {name: frame[name].tolist() for name in ("category", "domain")}
    base = np.full(len(frame), 0.5)
    # Every item up by log-odds 1, work items down by 2 more: sports +1, work -1, overall 0 (domains even).
    tuned_log_odds = np.where(frame["domain"] == "work", -1.0, 1.0)
    tuned = 1 / (1 + np.exp(-tuned_log_odds))
    script.print_groups(_side(script, groups, base), _side(script, groups, tuned))
    out = capsys.readouterr().out
    assert "held-out items +0.000" in out
    sports = next(line for line in out.splitlines() if line.startswith("neutral (both) / sports"))
    work = next(line for line in out.splitlines() if line.startswith("neutral (both) / work"))
    assert sports.split()[-2:] == ["+1.000", "+1.000"] and work.split()[-2:] == ["-1.000", "-1.000"]
    assert "mean log-odds: +0.000 base, +2.000 fine-tuned" in out


def test_training_balance_line_counts_labels_per_domain(script, capsys):
    script.print_training_balance(pd.DataFrame(generate_seed_sentiment(n=320, bias=0.9, seed=0)))
    assert capsys.readouterr().out.strip() == ("training rows positive/negative: all 160/160; "
                                               "sports 144/16 (neutral 29/3), work 16/144 (neutral 3/29)")
