"""Printing shared by the command modules: numbers, thresholds, certificates and the manager's
table of thresholds."""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.table import Table

from howsure.cli.app import console


def format_money(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.0f}"


def format_count(value: float) -> str:
    return f"{value:,.0f}"


def format_pct(value: float) -> str:
    """97.5 for 0.975; 100 rather than 100.0, to keep the interval column narrow."""
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}".replace("100.0", "100")


def format_short(value: float) -> str:
    """Compact number for interval ends: 950, 2.5k, 126k."""
    if value is None or math.isnan(value):
        return "-"
    if abs(value) < 1000:
        return f"{value:.0f}"
    if abs(value) < 10_000:
        return f"{value / 1000:.1f}k"
    if abs(value) < 1_000_000:
        return f"{value / 1000:.0f}k"
    return f"{value / 1e6:.1f}M"


def print_manager_table(rows: list, *, with_cost: bool, volume_label: str) -> None:
    """The table a manager reads: one row per candidate threshold, strict to loose."""
    table = Table(
        title=f"Thresholds, {volume_label}",
        caption="auto: items automated, review: items sent to people; second lines: share "
                "automated and 95 % bootstrap intervals of the expected "
                "values; * inside the certified range",
        title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
        collapse_padding=True, padding=(0, 1),
    )
    table.add_column("", no_wrap=True, min_width=10)
    for name in ("threshold", "auto", "review", "accuracy %", "errors"):
        table.add_column(name, justify="right", no_wrap=True)
    if with_cost:
        table.add_column("cost", justify="right", no_wrap=True)
    for row in rows:
        # Intervals go on a second line so the table fits an 80-column terminal.
        acc = row.accuracy_interval
        cells = [
            row.note,
            ("none" if row.threshold is None else f"{row.threshold:.6g}") + ("*" if row.certified else " "),
            f"{format_count(row.automated_per_day)}\n{row.automation_rate:.0%}",
            format_count(row.reviewed_per_day),
            "-" if row.accuracy is None else f"{format_pct(row.accuracy)}\n{format_pct(acc[0])}-{format_pct(acc[1])}",
            f"{format_count(row.errors_per_day)}\n{format_short(row.errors_interval[0])}-{format_short(row.errors_interval[1])}",
        ]
        if with_cost:
            cells.append(f"{format_money(row.cost_per_day)}\n{format_short(row.cost_interval[0])}-{format_short(row.cost_interval[1])}")
        table.add_row(*cells, style="bold" if row.note.startswith(("certified", "cheapest certified")) else None)
    console.print(table)


def format_percent(share: float) -> str:
    """95% for 0.95, 97.5% for 0.975 (a per-label share of delta must not round to 98%)."""
    return f"{100 * share:.4g}%"


def format_threshold(value: float | None) -> str:
    return "none (review everything)" if value is None else f"{value:.6g}"


def certificate_line(cert: dict[str, Any]) -> str:
    if cert.get("certified"):
        return (
            f"[green]certified[/]: confidence >= {cert['threshold']:.6g} automates {cert['n_automated']} of "
            f"{cert['n_calibration']} ({cert['automation_rate']:.1%}); accuracy >= "
            f"{cert['target_accuracy']:.1%} with probability >= {format_percent(1 - cert['delta'])} "
            f"({cert['n_errors']} errors seen; {cert['method']}, {cert['p_value']} p-values)"
        )
    needed = cert.get("labels_needed")
    more = (
        f"about {needed - cert['n_calibration']:,} more labelled items ({needed:,} in all) would "
        "certify one if the observed accuracy profile holds"
        if needed is not None
        else "the observed accuracy never reaches the target, so more labels alone will not help"
    )
    return (
        f"[yellow]nothing certified[/] at accuracy >= {cert['target_accuracy']:.1%} with probability >= "
        f"{format_percent(1 - cert['delta'])} from {cert['n_calibration']} items: every item goes to review; {more}"
    )
