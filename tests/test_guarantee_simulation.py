"""What the guarantee promises, checked on real scored populations.

Two kinds of population, each treated as the whole population: the 1,000 cached
Llama-3.1-8B-Instruct results of the public Classification-with-Confidence write-up (raw
confidences; skipped where ../shared is absent), and the bundled model SmolLM2-135M on the 2,000
bundled rt-polarity sentences (tests/data/smollm2_rt_polarity_scores.csv, always present): its
raw confidences, and 5-fold cross-fitted calibrated ones (each item calibrated by a calibrator
fitted on the other folds, so nothing is fitted on the item it judges). Calibration sets are
drawn from a population iid (with replacement), a threshold is certified on each, and the
accuracy of the items that threshold automates is measured over the WHOLE population - the
quantity the guarantee is about. It must reach the target in at least 1 - delta of the draws.

Monte-Carlo slack: with B draws and a true failure probability of at most delta, the failure
count is at most Binomial(B, delta); the check allows up to its 99.9 % quantile (for B = 400 and
delta = 0.05: 20 expected, 35 allowed, i.e. 8.75 %), so a valid method fails it with
probability below 0.001. The draws are seeded, so the run is reproducible.
``docs/scripts/guarantee_simulation.py`` prints the same table with 1,000 draws.

That slack is too loose to catch the naive scan on the real populations (it fails there in
about 5 % of draws). So the same check also runs on a population built to expose an invalid
rule: every item is 94.5 % accurate whatever its confidence, against a target of 95 %. Nearly
every threshold is then a true null, and a rule that tests each one at level delta finds a
lucky one far more often than delta (about 16 % of draws), while a valid rule may fail in at
most delta. With 600 draws the check allows 48 failures (8 %); the naive scan must exceed it.

SmolLM2's most confident items include errors (its second most confident raw item is wrong), so
the fixed_sequence walk, which starts where only a handful of items are automated, often stops
at once and certifies nothing; fallback (the default) and multistart, whose starts are fixed,
certify more often. The tests pin that weakness rather than hide it.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

from howsure.decisions.simulation import simulate_guarantee
from howsure.decisions.walks import calibrated_starts

RESULTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sentiment" / "seed_cwc" / "results"
SMOLLM2 = Path(__file__).resolve().parent / "data" / "smollm2_rt_polarity_scores.csv"
N_DRAWS = 400
DELTA = 0.05
# The largest failure count a valid rule reaches with probability >= 0.999.
ALLOWED = int(binom.ppf(0.999, N_DRAWS, DELTA))  # 35
FLAT_DRAWS = 600
FLAT_ALLOWED = int(binom.ppf(0.999, FLAT_DRAWS, DELTA))


def within_guarantee(failures: int, n_draws: int) -> bool:
    """The check: no more failures than Binomial(n_draws, DELTA) exceeds with probability 0.001."""
    return failures <= binom.ppf(0.999, n_draws, DELTA)


def flat_population(n: int = 20_000, accuracy: float = 0.945, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Confidences spread over [0.5, 1], each item right with the same probability."""
    correct = np.random.default_rng(seed).uniform(size=n) < accuracy
    return np.linspace(1.0, 0.5, n), correct


def population(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name.startswith("smollm2_"):
        with SMOLLM2.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        column = "confidence" if name == "smollm2_raw" else "calibrated_confidence"
        correct = "correct" if name == "smollm2_raw" else "calibrated_correct"
        return np.array([float(r[column]) for r in rows]), np.array([r[correct] == "1" for r in rows])
    path = RESULTS / f"llama31_8b_{name}_results.json"
    if not path.exists():
        pytest.skip(f"shared population {path} not present")
    records = json.loads(path.read_text())["results"]
    return np.array([r["confidence"] for r in records]), np.array([r["correct"] for r in records], bool)


# (population, target accuracy, calibration-set size)
SCENARIOS = [
    ("base", 0.95, 1000),
    ("base", 0.95, 500),
    ("base", 0.90, 300),
    ("base", 0.85, 1000),
    ("finetuned", 0.97, 1000),
    # The bundled model is far weaker (accuracy 0.71 raw, 0.74 calibrated; its top 20 % is
    # about 0.91 accurate, so 0.90 leaves almost nothing to certify): lower targets.
    ("smollm2_raw", 0.80, 1000),
    ("smollm2_raw", 0.85, 1000),
    ("smollm2_calibrated", 0.80, 1000),
    ("smollm2_calibrated", 0.85, 1000),
]
LLAMA = [s for s in SCENARIOS if not s[0].startswith("smollm2_")]
SMOLLM2_SCENARIOS = [s for s in SCENARIOS if s[0].startswith("smollm2_")]


@pytest.fixture(scope="module")
def simulations() -> dict:
    out = {}
    for name, target, n in SCENARIOS:
        try:
            confidences, correct = population(name)
        except pytest.skip.Exception:
            continue  # the shared Llama results are absent; the SmolLM2 rows still run
        out[(name, target, n)] = simulate_guarantee(
            correct, confidences, n_calibration=n, n_draws=N_DRAWS, target_accuracy=target,
            delta=DELTA, seed=2024,
        )
    return out


def scenario_result(simulations: dict, scenario: tuple) -> dict:
    if scenario not in simulations:
        pytest.skip(f"shared population of {scenario[0]!r} not present")
    return simulations[scenario]


def test_the_slack_is_what_the_docstring_says():
    assert ALLOWED == 35 and FLAT_ALLOWED == 48


@pytest.fixture(scope="module")
def flat() -> dict:
    confidences, correct = flat_population()
    return simulate_guarantee(correct, confidences, n_calibration=1000, n_draws=FLAT_DRAWS,
                              target_accuracy=0.95, delta=DELTA, seed=1,
                              rules=("fallback", "fixed_sequence", "multistart", "hoeffding_bentkus", "naive_scan"))


@pytest.mark.parametrize("rule", ["fallback", "fixed_sequence", "multistart", "hoeffding_bentkus"])
def test_valid_rules_pass_the_check_where_every_threshold_is_a_true_null(flat, rule):
    assert within_guarantee(flat[rule]["failures"], FLAT_DRAWS)


def test_the_same_check_rejects_the_naive_scan(flat):
    # Testing every threshold at level delta: an invalid rule, and the check must say so.
    assert not within_guarantee(flat["naive_scan"]["failures"], FLAT_DRAWS)
    assert flat["naive_scan"]["failure_rate"] > 2 * DELTA


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: f"{s[0]}-{s[1]}-n{s[2]}")
@pytest.mark.parametrize("rule", ["fallback", "fixed_sequence", "multistart", "hoeffding_bentkus"])
def test_certified_thresholds_reach_the_target_in_1_minus_delta_of_draws(simulations, scenario, rule):
    result = scenario_result(simulations, scenario)[rule]
    assert within_guarantee(result["failures"], N_DRAWS)
    # The typical certified threshold clears the target in the population with room to spare.
    assert np.nanmedian(result["population_accuracy"]) >= scenario[1]


@pytest.mark.parametrize("scenario", LLAMA, ids=lambda s: f"{s[0]}-{s[1]}-n{s[2]}")
def test_fixed_sequence_automates_something_useful(simulations, scenario):
    result = scenario_result(simulations, scenario)["fixed_sequence"]
    assert result["certified_rate"] > 0.5
    assert np.mean(result["automation_share"]) > 0.1


@pytest.mark.parametrize("scenario", SMOLLM2_SCENARIOS, ids=lambda s: f"{s[0]}-{s[1]}-n{s[2]}")
def test_on_smollm2_fixed_sequence_often_certifies_nothing_and_multistart_does_better(simulations, scenario):
    # Errors among the few most confident items stop the walk at its first step.
    fixed = simulations[scenario]["fixed_sequence"]
    multistart = simulations[scenario]["multistart"]
    assert fixed["certified_rate"] < 0.7
    assert multistart["certified_rate"] > fixed["certified_rate"]


@pytest.mark.parametrize("scenario", SMOLLM2_SCENARIOS, ids=lambda s: f"{s[0]}-{s[1]}-n{s[2]}")
@pytest.mark.parametrize("rule", ["fallback", "multistart"])
def test_on_smollm2_the_fixed_start_walks_automate_something_useful(simulations, scenario, rule):
    result = simulations[scenario][rule]
    assert result["certified_rate"] > 0.6
    assert np.mean(result["automation_share"]) > 0.1


@pytest.mark.parametrize("target", [0.80, 0.85, 0.90])
def test_walks_from_the_calibrated_starts_keep_the_guarantee_on_calibrated_smollm2(target):
    # What a policy with a calibrator runs: starts around the target instead of DEFAULT_STARTS.
    confidences, correct = population("smollm2_calibrated")
    result = simulate_guarantee(correct, confidences, n_calibration=1000, n_draws=N_DRAWS, target_accuracy=target,
                                delta=DELTA, seed=2024, starts=calibrated_starts(target),
                                rules=("fallback", "multistart"))
    for rule in ("fallback", "multistart"):
        assert within_guarantee(result[rule]["failures"], N_DRAWS), rule
    assert np.all(result["fallback"]["automation_share"] >= result["multistart"]["automation_share"])


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: f"{s[0]}-{s[1]}-n{s[2]}")
def test_fallback_automates_at_least_what_multistart_does_in_every_draw(simulations, scenario):
    result = scenario_result(simulations, scenario)
    fallback, multistart = result["fallback"]["automation_share"], result["multistart"]["automation_share"]
    assert np.all(fallback >= multistart)


def test_the_naive_scan_fails_more_often_than_fixed_sequence(simulations):
    naive = sum(s["naive_scan"]["failures"] for s in simulations.values())
    fixed = sum(s["fixed_sequence"]["failures"] for s in simulations.values())
    assert naive > fixed


def test_picking_the_threshold_by_observed_accuracy_fails_about_half_the_time(simulations):
    for scenario, result in simulations.items():
        assert result["empirical"]["failure_rate"] > 0.3, scenario
