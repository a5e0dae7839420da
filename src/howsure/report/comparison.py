"""The before / after report as one self-contained HTML page, drawn from a comparison summary.

Images are base64 PNG data URIs and the CSS is inline: the page refers to no URL and opens
offline. Every number comes from the summary that `howsure.pipelines.compare.compare` returns.
"""

from __future__ import annotations

from typing import Any

from howsure.errors import DataError
from howsure.report.html import format_interval, metric_change, png_data_uri
from howsure.report.plots import display_from_dict, figure_png
from howsure.stats.metrics import METRICS

SIDES = ("base", "tuned")


def _picture(display_data: dict) -> str:
    display = display_from_dict(display_data).plot()
    return png_data_uri(figure_png(display.figure_, dpi=100))


def _metric_rows(sides: dict) -> list[dict]:
    columns = {key: {column["key"]: column["values"] for column in sides[key]["metrics"]} for key in SIDES}
    rows = []
    for name, info in METRICS.items():
        if not any(name in columns[key].get(view, {}) for key in SIDES for view in ("raw", "calibrated")):
            continue
        cells = []
        for view in ("raw", "calibrated"):
            before, after = columns["base"][view].get(name), columns["tuned"][view].get(name)
            cells.append({"base": format_interval(before), "tuned": format_interval(after),
                          "change": metric_change(name, before, after)})
        rows.append({"title": info.title, "cells": cells,
                     "hint": {True: "lower is better", False: "higher is better", None: ""}[info.lower_is_better]})
    return rows


def _share(entry: dict | None) -> str:
    if not entry or entry.get("automation_rate") is None:
        return "–"
    return f"{100 * entry['automation_rate']:.1f} %"


def _group_tables(summary: dict) -> list[dict]:
    labels = summary["items"].get("labels") or []
    tables = []
    for block in summary.get("groups", []):
        rows = []
        for row in block["rows"]:
            cells = []
            for key in SIDES:
                side = row.get(key)
                if side is None:
                    cells.append(None)
                    continue
                means = side.get("raw_mean_probability") or {}
                calibrated_means = side.get("calibrated_mean_probability") or {}
                cells.append({
                    "raw_accuracy": _number(side.get("raw_accuracy")),
                    "calibrated_accuracy": _number(side.get("calibrated_accuracy")),
                    "raw_p": [_number(means.get(label)) for label in labels],
                    "calibrated_p": [_number(calibrated_means.get(label)) for label in labels],
                })
            rows.append({"group": row["group"], "n": row["n"], "cells": cells})
        tables.append({"by": block["by"], "rows": rows})
    return tables


def _number(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render_comparison_html(summary: dict) -> str:
    """The comparison as one HTML string: inline CSS, images as data URIs, no external reference."""
    import jinja2

    if not isinstance(summary, dict) or summary.get("format") != "howsure.comparison":
        raise DataError("not a howsure comparison summary; write one with `howsure compare`")
    sides = summary["sides"]
    figures = [{"title": plot["title"], "caption": plot["caption"], "src": _picture(plot["display"])}
               for plot in summary["plots"]]
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return environment.from_string(_TEMPLATE).render(
        s=summary, sides=sides, side_keys=SIDES, css=_CSS, rows=_metric_rows(sides), figures=figures,
        share=_share, number=_number, fmt=format_interval, groups=_group_tables(summary),
        labels=summary["items"].get("labels") or [],
        headline=[(name, METRICS[name].title) for name in ("accuracy", "ece", "brier", "auroc")],
        change=metric_change,
    )


_CSS = """
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Roboto, Arial, sans-serif; color:#1f2933; }
main { max-width:1200px; margin:0 auto; padding:28px 32px 48px; }
h1 { font-size:25px; margin:0 0 4px; } h2 { font-size:19px; margin:34px 0 10px; border-bottom:1px solid #e3e7ec; }
.muted, figcaption, .hint { color:#5f6b7a; } .hint { display:block; font-size:11px; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin-top:18px; }
.card { flex:1 1 180px; background:#f7f9fb; border:1px solid #e3e7ec; border-radius:10px; padding:12px 14px; }
.card .label { font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:#5f6b7a; }
.card .value { font-size:21px; font-weight:600; font-variant-numeric:tabular-nums; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; margin:8px 0 14px; }
th, td { padding:6px 9px; border-bottom:1px solid #e3e7ec; text-align:right; vertical-align:top; }
th:first-child, td:first-child { text-align:left; } thead th { font-size:13px; color:#5f6b7a; }
.ci { color:#5f6b7a; font-size:12px; margin-left:4px; }
.better { color:#1b7f5f; font-weight:600; } .worse { color:#b3471b; font-weight:600; } .same, .neutral { color:#5f6b7a; }
.confusion { display:flex; flex-wrap:wrap; gap:24px; } .confusion table { width:auto; }
figure { margin:14px 0 26px; } figure img { max-width:100%; border:1px solid #e3e7ec; border-radius:8px; }
code { font-family:ui-monospace, Menlo, Consolas, monospace; font-size:12.5px; background:#f7f9fb; padding:1px 4px; }
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ s.title }}</title><style>{{ css | safe }}</style></head>
<body><main>
<header>
  <h1>{{ s.title }}</h1>
  <p class="muted">{{ s["items"].n_items }} held-out items scored by both models, matched by text hash ·
    {% for key in side_keys %}{{ sides[key].name }} <code>{{ sides[key].path }}</code>{% if sides[key].scoring %} (model <code>{{ sides[key].scoring.model }}</code>){% endif %} · {% endfor %}
    generated {{ s.created }} by howsure {{ s.howsure_version }}</p>
</header>

<section class="cards">
{% for name, title in headline %}{% set before = sides.base.headline.calibrated[name] %}{% set after = sides.tuned.headline.calibrated[name] %}
  <div class="card"><div class="label">{{ title }} (calibrated)</div>
    <div class="value">{{ fmt(before)[0] }} → {{ fmt(after)[0] }}</div>
    {% set c = change(name, before, after) %}<div class="{{ c[1] }}">{{ c[0] }}</div></div>
{% endfor %}
  <div class="card"><div class="label">Certified automation share</div>
    <div class="value">{{ share(sides.base.certificate) }} → {{ share(sides.tuned.certificate) }}</div>
    <div class="muted">at {{ (100 * s.settings.target) | round(1) }} % accuracy, delta {{ s.settings.delta }}</div></div>
</section>

<h2>Metrics</h2>
<table>
  <thead><tr><th>metric</th><th>base raw</th><th>fine-tuned raw</th><th>change</th>
    <th>base calibrated</th><th>fine-tuned calibrated</th><th>change</th></tr></thead>
  <tbody>{% for row in rows %}
    <tr><td>{{ row.title }}<span class="hint">{{ row.hint }}</span></td>
    {% for cell in row.cells %}<td>{{ cell.base[0] }}<span class="ci">{{ cell.base[1] }}</span></td>
      <td>{{ cell.tuned[0] }}<span class="ci">{{ cell.tuned[1] }}</span></td>
      <td class="{{ cell.change[1] }}">{{ cell.change[0] }}</td>{% endfor %}</tr>
  {% endfor %}</tbody>
</table>
<p class="muted">Raw: uncalibrated scores on all items. Calibrated: {{ sides.base.calibration.calibrator }} calibration, held out —
  {{ sides.base.calibration.scheme.description }}. Both sides use the same settings; intervals are
  {{ (100 * s.settings.level) | round(0) | int }} % bootstrap intervals ({{ s.settings.n_boot }} resamples).</p>

<h2>Certified automation</h2>
{% if sides.base.certificate %}
<table>
  <thead><tr><th>target accuracy (delta {{ s.settings.delta }})</th>{% for key in side_keys %}<th>{{ sides[key].name }}: threshold</th><th>{{ sides[key].name }}: automated</th>{% endfor %}</tr></thead>
  <tbody>{% for i in range(sides.base.targets | length) %}<tr><td>{{ (100 * sides.base.targets[i].target_accuracy) | round(1) }} %</td>
    {% for key in side_keys %}{% set t = sides[key].targets[i] %}<td>{{ number(t.threshold, 4) }}</td><td>{{ share(t) }}</td>{% endfor %}</tr>{% endfor %}
  </tbody>
</table>
<p class="muted">{% for key in side_keys %}{% set c = sides[key].certificate %}<b>{{ sides[key].name }}</b>:
  {% if c.certified %}confidence ≥ {{ number(c.threshold, 4) }} automates {{ c.n_automated }} of {{ c.n_calibration }} certification items ({{ c.n_errors }} errors seen){% else %}nothing certified{% if c.labels_needed %}; about {{ c.labels_needed }} labelled items would certify one{% endif %}{% endif %};
  {{ c.calibrator_fit.split if c.calibrator_fit else '' }}.{% if not loop.last %}<br>{% endif %}{% endfor %}</p>
{% else %}<p class="muted">Needs per-label probabilities (`howsure score` output).</p>{% endif %}

{% if sides.base.confusion %}
<h2>Confusion matrices</h2>
<div class="confusion">{% for key in side_keys %}{% for view in ("raw", "calibrated") %}{% set m = sides[key].confusion[view] %}
  <table><caption>{{ sides[key].name }}, {{ view }}</caption>
    <thead><tr><th>gold \\ predicted</th>{% for label in labels %}<th>{{ label }}</th>{% endfor %}</tr></thead>
    <tbody>{% for r in range(labels | length) %}<tr><td>{{ labels[r] }}</td>{% for count in m[r] %}<td>{{ count }}</td>{% endfor %}</tr>{% endfor %}</tbody>
  </table>{% endfor %}{% endfor %}</div>
{% endif %}

{% for table in groups %}
<h2>Per {{ table.by }}</h2>
<table>
  <thead><tr><th>{{ table.by }}</th><th>n</th>{% for key in side_keys %}<th>{{ sides[key].name }}: accuracy raw / calibrated</th>{% for label in labels %}<th>{{ sides[key].name }}: mean P({{ label }}) raw / calibrated</th>{% endfor %}{% endfor %}</tr></thead>
  <tbody>{% for row in table.rows %}<tr><td>{{ row.group }}</td><td>{{ row.n }}</td>
    {% for cell in row.cells %}{% if cell %}<td>{{ cell.raw_accuracy }} / {{ cell.calibrated_accuracy }}</td>{% for i in range(labels | length) %}<td>{{ cell.raw_p[i] }} / {{ cell.calibrated_p[i] }}</td>{% endfor %}{% else %}<td>–</td>{% for label in labels %}<td>–</td>{% endfor %}{% endif %}{% endfor %}</tr>
  {% endfor %}</tbody>
</table>
{% endfor %}

{% for f in figures %}
<h2>{{ f.title }}</h2>
<figure><img src="{{ f.src }}" alt="{{ f.title }}"><figcaption>{{ f.caption }}</figcaption></figure>
{% endfor %}

{% if s.notes or sides.base.notes or sides.tuned.notes %}
<h2>Notes</h2>
<ul>{% for note in s.notes %}<li>{{ note }}</li>{% endfor %}
{% for key in side_keys %}{% for note in sides[key].notes %}<li>{{ sides[key].name }}: {{ note }}</li>{% endfor %}{% endfor %}</ul>
{% endif %}
<footer class="muted">{% if s.command %}Made with <code>{{ s.command }}</code>. {% endif %}Every number shown is in <code>comparison.json</code>.</footer>
</main></body></html>
"""
