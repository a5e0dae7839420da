"""Commands that need no model: thresholds, route, plan.

They read scored items (``howsure score`` JSONL, or any JSON/JSONL/CSV/TSV/Parquet table with
a probability column and a gold-label or correctness column) and start in about a second:
nothing on their import path loads torch, transformers, scikit-learn or pandas. Each parses its
options, makes one call to `howsure.pipelines` and prints what came back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from howsure.cli.app import command, console, err_console
from howsure.cli.format import certificate_line, format_money, format_threshold, print_manager_table
from howsure.errors import PolicyError
from howsure.io.records import write_records


def _parse_label_costs(items: list[str]) -> dict[str, float]:
    costs: dict[str, float] = {}
    for item in items:
        label, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            costs[label.strip()] = float(value)
        except ValueError:
            raise PolicyError(f"--cost-error-label expects LABEL=COST, got {item!r}") from None
    return costs


@command("thresholds")
def thresholds(
    input: Path = typer.Argument(..., help="Scored items: howsure score JSONL or a table."),
    target: float = typer.Option(0.95, help="Accuracy the automated items must reach."),
    delta: float = typer.Option(0.05, help="Chance the guarantee may fail (0.05: holds with 95 %)."),
    out: Path = typer.Option(Path("policy.json"), "--out", help="Where to write the policy JSON."),
    method: str = typer.Option("fallback", help="fallback (default; needs iid only), multistart, or fixed_sequence (also assumes no small top slice misses the target)."),
    p_value: str = typer.Option("binomial", "--p-value", help="binomial or hoeffding_bentkus."),
    per_class: bool = typer.Option(
        False, "--per-class",
        help="One threshold per predicted label, certified jointly. On two labels this IS the "
             "two-sided policy: auto-positive above one threshold, auto-negative below another, "
             "review the middle.",
    ),
    calibrator: Optional[Path] = typer.Option(None, help="Fitted calibrator JSON (fitted on OTHER items; checked against its recorded fitting items)."),
    fit_calibrator: Optional[str] = typer.Option(
        None, "--fit-calibrator",
        help="Fit this calibrator (auto, temperature, platt, isotonic, beta, histogram, venn_abers) on "
             "part of the items and certify on the rest (needs per-label probabilities and gold labels).",
    ),
    certify_share: float = typer.Option(0.5, "--certify-share", help="With --fit-calibrator: share of the items that certifies."),
    seed: int = typer.Option(0, help="With --fit-calibrator: seed of the split and of auto's folds."),
    allow_overlap: bool = typer.Option(
        False, "--allow-overlap",
        help="Certify even on items the --calibrator was fitted on or the --adapter trained on (the guarantee "
             "then does not hold; the policy file says so).",
    ),
    adapter: Optional[Path] = typer.Option(
        None, "--adapter",
        help="LoRA adapter directory the scores came from (default: the one `howsure score --adapter` recorded); "
             "items it trained on are refused.",
    ),
    task: Optional[str] = typer.Option(None, help="Task TOML or bundled task name; fixes the labels."),
    model_id: Optional[str] = typer.Option(None, "--model-id", help="Model the scores came from."),
    cost_review: Optional[float] = typer.Option(None, "--cost-review", help="Cost of one human review."),
    cost_error: Optional[float] = typer.Option(None, "--cost-error", help="Cost of one wrong automated decision."),
    cost_error_label: list[str] = typer.Option([], "--cost-error-label", help="LABEL=COST: error cost per predicted label (repeatable)."),
    volume: Optional[float] = typer.Option(None, help="Items per day."),
    policy_version: int = typer.Option(1, "--policy-version", help="Your version number of this policy."),
    prob_column: Optional[str] = typer.Option(None, "--prob-column", help="Column of label probabilities (object) or the predicted label's confidence (number)."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Column of gold labels (default: label or expected)."),
    correct_column: Optional[str] = typer.Option(None, "--correct-column", help="Column of 0/1 correctness (when no gold labels)."),
    prediction_column: str = typer.Option("prediction", "--prediction-column", help="Predicted label, when --prob-column is a number."),
) -> None:
    """Certify a confidence threshold and write the policy file."""
    # The pipelines load scipy and numpy: imported when a command runs, not when the CLI starts.
    from howsure.pipelines.thresholds import DEFAULT_VOLUME, run_thresholds

    result = run_thresholds(
        input, target=target, delta=delta, method=method, p_value=p_value, per_class=per_class,
        calibrator=calibrator, fit_calibrator=fit_calibrator, certify_share=certify_share, seed=seed,
        allow_overlap=allow_overlap, adapter=adapter, task=task, model_id=model_id, cost_review=cost_review, cost_error=cost_error,
        cost_error_by_label=_parse_label_costs(cost_error_label), volume=volume, policy_version=policy_version,
        prob_column=prob_column, label_column=label_column, correct_column=correct_column,
        prediction_column=prediction_column,
    )
    policy, items, overlap = result.policy, result.items, result.overlap
    policy.save(out)

    console.print(f"[bold]{items.n_items}[/] labelled items from {escape(str(input))}; "
                  f"labels {escape(', '.join(items.label_names))}")
    if result.split is not None:
        fit = policy.guarantee["calibrator_fit"]
        chosen = f" -> {fit['chosen']}" if fit.get("chosen") else ""
        console.print(f"calibrator {escape(fit_calibrator)}{escape(chosen)} fitted on {fit['n_fit']} items, "
                      f"threshold certified on the other {fit['n_certify']}", highlight=False)
    elif result.raw_note is not None:
        _warn(result.raw_note)
    elif overlap is not None and not overlap["checked"]:
        _warn(f"{calibrator} records no fitting items matching this input's text or id column, so howsure "
              "cannot check that it was fitted on other items")
    elif overlap is not None and overlap["n_overlap"]:
        _warn(f"{overlap['n_overlap']} items were among the calibrator's fitting items (--allow-overlap): "
              "the certificate does not hold")
    if result.adapter_overlap is not None:
        words = result.adapter_overlap["words"]
        if result.adapter_overlap["n_overlap"] == 0:
            console.print(escape(words), highlight=False)
        else:  # overlapping or unchecked items, let through by --allow-overlap
            _warn(words)
    if policy.rule == "top_label":
        console.print(certificate_line(policy.guarantee), highlight=False)
        if result.top_slice_miss is not None:
            slice_items, accuracy, m0 = result.top_slice_miss
            _warn(f"the {slice_items} most confident items are only {accuracy:.1%} right: fixed_sequence assumes "
                  f"no top slice of fewer than {m0} items misses the target {target:.1%}, and these items "
                  "suggest one does; --method fallback needs no such condition")
        per = f"per day at {volume:,.0f} items/day" if volume is not None else f"per {DEFAULT_VOLUME:,} items"
        print_manager_table(result.rows, with_cost=result.cost is not None, volume_label=per)
        if result.cost is not None:
            chosen = policy.cost["chosen"]
            console.print(
                f"cost-optimal certified threshold: {format_threshold(chosen['threshold'])}, expected cost "
                f"{format_money(chosen['cost_per_day'])} per day (review everything: "
                f"{format_money(policy.cost['review_everything']['cost_per_day'])})", highlight=False,
            )
    else:
        for label, cert in policy.guarantee["classes"].items():
            console.print(f"[bold]{escape(label)}[/]: " + (certificate_line(cert) if cert else "never predicted"),
                          highlight=False)
        two_sided = policy.two_sided()
        if two_sided is not None:
            console.print(f"two-sided: {two_sided.text(calibrated=policy.calibrator is not None)}", highlight=False)
    console.print(f"policy {policy.policy_id} written to {escape(str(out))}")


def _warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


@command("route")
def route(
    input: Path = typer.Argument(..., help="Scored items: howsure score JSONL or a table."),
    policy: Path = typer.Option(..., "--policy", help="Policy JSON written by howsure thresholds."),
    output: Path = typer.Option(..., "--output", help="Where to write the routed items (.jsonl, .csv, .tsv)."),
    prob_column: Optional[str] = typer.Option(None, "--prob-column", help="Column of label probabilities (object) or the predicted label's confidence (number)."),
    prediction_column: str = typer.Option("prediction", "--prediction-column", help="Predicted label, when --prob-column is a number."),
) -> None:
    """Add a decision column (auto or review) to scored items, following a policy."""
    from howsure.pipelines.route import route_items

    routed = route_items(input, policy, prob_column=prob_column, prediction_column=prediction_column)
    write_records(routed.records, output)
    n, n_auto = len(routed.records), int(routed.automated.sum())
    console.print(
        f"{n_auto:,} of {n:,} items automated ({routed.automated.mean():.1%}), "
        f"{n - n_auto:,} to review; policy {escape(routed.policy.policy_id)}: {escape(routed.policy.summary())}",
        highlight=False,
    )
    console.print(f"written to {escape(str(output))}")


@command("plan")
def plan(
    input: Path = typer.Argument(..., help="A pilot set of scored, labelled items."),
    target: float = typer.Option(0.95, help="Accuracy the automated items must reach."),
    delta: float = typer.Option(0.05, help="Chance the guarantee may fail."),
    rates: str = typer.Option("0.1,0.2,0.3,0.5", help="Automation rates to plan for, comma-separated."),
    draws: int = typer.Option(100, help="Bootstrap draws per calibration-set size for the curve."),
    chart: Optional[Path] = typer.Option(None, help="Also draw automation share vs labelled items to this PNG."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    prob_column: Optional[str] = typer.Option(None, "--prob-column"),
    label_column: Optional[str] = typer.Option(None, "--label-column"),
    correct_column: Optional[str] = typer.Option(None, "--correct-column"),
    prediction_column: str = typer.Option("prediction", "--prediction-column"),
) -> None:
    """How many labelled items a certified threshold needs, at each automation rate."""
    from howsure.pipelines.plan import draw_sample_size_chart, plan_labels

    try:
        wanted = [float(r) for r in rates.split(",") if r.strip()]
    except ValueError:
        raise PolicyError(f"--rates expects numbers like 0.1,0.3, got {rates!r}") from None
    planned = plan_labels(input, target=target, delta=delta, rates=wanted, draws=draws, seed=seed,
                          prob_column=prob_column, label_column=label_column, correct_column=correct_column,
                          prediction_column=prediction_column)
    table = Table(title=f"Labelled items needed for accuracy >= {target:.0%} with probability >= {1 - delta:.0%}")
    table.add_column("automation rate", justify="right")
    table.add_column("labelled items needed", justify="right")
    for rate, needed in planned.needed:
        table.add_row(f"{rate:.0%}", "not reachable" if needed is None else f"{needed:,}")
    console.print(table)
    curve = planned.curve
    table = Table(title=f"Certified automation share by calibration-set size (pilot of {planned.items.n_items} items)")
    for name in ("labelled items", "plug-in", "bootstrap median", "10-90 %", "certified in"):
        table.add_column(name, justify="right")
    for i, size in enumerate(curve["n_labels"]):
        table.add_row(
            f"{size:,}", f"{curve['planned_share'][i]:.1%}", f"{curve['median_share'][i]:.1%}",
            f"{curve['low_share'][i]:.1%} - {curve['high_share'][i]:.1%}",
            f"{curve['certified_fraction'][i]:.0%} of draws",
        )
    console.print(table)
    if chart is not None:
        draw_sample_size_chart(curve, chart, target=target, delta=delta)
        console.print(f"chart written to {escape(str(chart))}")
