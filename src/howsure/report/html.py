"""One self-contained HTML report and its JSON summary.

The JSON summary holds every number the report shows, including each plot's numbers (as
`howsure.report.plots` displays' ``to_dict``), so ``howsure report summary.json`` redraws the same
report without the data. The HTML embeds its images as base64 PNG data URIs and its CSS
inline; it refers to no URL at all and opens offline.

Summary layout (``format = "howsure.evaluation"``)::

    title, created, howsure_version, command
    input        {path, kind, n_items, columns, labels, n_unique_texts}
    calibration  {mode, mode_description, calibrator, chosen, reason, scheme{..., description}}
    settings     {n_bins, beta, n_boot, seed, level, target}
    metrics      [{key, title, description, values{name: {value, low, high}}}, ...]
    plots        [{key, title, caption, display{kind, ...}}, ...]
    notes        [str, ...]
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from howsure.errors import DataError
from howsure.report.plots import display_from_dict, figure_png
from howsure.stats.metrics import METRICS

SUMMARY_FORMAT = "howsure.evaluation"
SUMMARY_VERSION = 1
REQUIRED_KEYS = ("title", "input", "calibration", "settings", "metrics", "plots")


def json_ready(value: Any) -> Any:
    """Turn numpy values into JSON types and non-finite floats into null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def check_summary(summary: Any, source: str = "summary") -> dict:
    """Return ``summary`` if it is an evaluation summary this version can draw, else raise.

    Raises
    ------
    DataError
        Not a JSON object, another format or version, or a required key missing.
    """
    if not isinstance(summary, dict) or summary.get("format") != SUMMARY_FORMAT:
        found = summary.get("format") if isinstance(summary, dict) else type(summary).__name__
        raise DataError(
            f"{source} is not a howsure evaluation summary (format {found!r}, expected "
            f"{SUMMARY_FORMAT!r}); write one with `howsure evaluate`"
        )
    if summary.get("version") != SUMMARY_VERSION:
        raise DataError(
            f"{source} has summary version {summary.get('version')!r}; this howsure reads version {SUMMARY_VERSION}"
        )
    missing = [key for key in REQUIRED_KEYS if key not in summary]
    if missing:
        raise DataError(f"{source} lacks {', '.join(missing)}; expected keys {', '.join(REQUIRED_KEYS)}")
    return summary


def load_summary(path: str | Path) -> dict:
    """Read and check a summary written by `write_report`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"summary file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"summary file {str(path)!r} is not valid JSON: {exc}") from None
    return check_summary(data, repr(str(path)))


def write_summary(summary: dict, path: str | Path) -> Path:
    """Write the summary as JSON (NaN as null) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_ready(summary), indent=1, allow_nan=False) + "\n", "utf-8")
    return path


def write_html(summary: dict, path: str | Path) -> Path:
    """Render the summary to a self-contained HTML file and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(summary), "utf-8")
    return path


def write_report(summary: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``summary.json`` and ``report.html`` into ``out_dir``.

    Returns
    -------
    (html_path, json_path)
    """
    out_dir = Path(out_dir)
    summary = check_summary(json_ready(summary))
    json_path = write_summary(summary, out_dir / "summary.json")
    html_path = write_html(summary, out_dir / "report.html")
    return html_path, json_path


# --------------------------------------------------------------------------- rendering


def png_data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _draw(display_data: dict) -> str:
    display = display_from_dict(display_data).plot()
    return png_data_uri(figure_png(display.figure_, dpi=110))


def format_interval(entry: dict | None, digits: int = 3) -> tuple[str, str]:
    """Value and '[low, high]' of a metric entry as text ('–' where undefined)."""
    if not entry or entry.get("value") is None:
        return "–", ""
    value = f"{entry['value']:.{digits}f}"
    if entry.get("low") is None or entry.get("high") is None:
        return value, ""
    return value, f"[{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"


def metric_change(name: str, before: dict | None, after: dict | None) -> tuple[str, str]:
    """Text and CSS class of the change from one column to the next."""
    if not before or not after or before.get("value") is None or after.get("value") is None:
        return "", ""
    delta = after["value"] - before["value"]
    if abs(delta) < 5e-4:
        return "±0", "same"
    arrow = "▼" if delta < 0 else "▲"
    lower_is_better = METRICS[name].lower_is_better if name in METRICS else None
    if lower_is_better is None:
        return f"{arrow} {abs(delta):.3f}", "neutral"
    return f"{arrow} {abs(delta):.3f}", "better" if (delta < 0) == lower_is_better else "worse"


def _metric_rows(columns: list[dict]) -> list[dict]:
    names = [name for name in METRICS if any(name in column["values"] for column in columns)]
    rows = []
    for name in names:
        cells = [format_interval(column["values"].get(name)) for column in columns]
        change = metric_change(name, columns[-2]["values"].get(name), columns[-1]["values"].get(name)) if len(columns) > 1 else ("", "")
        info = METRICS[name]
        rows.append({
            "title": info.title,
            "hint": {True: "lower is better", False: "higher is better", None: "compare with accuracy"}[info.lower_is_better],
            "cells": cells,
            "change": change,
        })
    return rows


def _headline(columns: list[dict]) -> list[dict]:
    # The last two columns measure the same items (raw and calibrated), so compare those.
    columns = columns[-2:]
    cards = []
    for name in ("accuracy", "ece", "auroc", "brier"):
        entries = [column["values"].get(name) for column in columns]
        if not any(entries):
            continue
        values = [format_interval(e)[0] for e in entries]
        change = metric_change(name, entries[0], entries[-1]) if len(entries) > 1 else ("", "")
        cards.append({"title": METRICS[name].title, "values": values, "change": change})
    return cards


def render_html(summary: dict) -> str:
    """The report as one HTML string: inline CSS, images as data URIs, no external reference."""
    import jinja2

    summary = check_summary(summary)
    columns = summary["metrics"]
    figures = [
        {"title": plot.get("title", ""), "caption": plot.get("caption", ""), "src": _draw(plot["display"])}
        for plot in summary["plots"]
    ]
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = environment.from_string(_TEMPLATE)
    return template.render(
        s=summary,
        css=_CSS,
        columns=columns,
        rows=_metric_rows(columns),
        cards=_headline(columns),
        card_columns=columns[-2:],
        figures=figures,
        glossary=[(METRICS[n].title, METRICS[n].description) for n in METRICS if any(n in c["values"] for c in columns)],
        escape=html.escape,
    )


_CSS = """
:root { --ink:#1f2933; --muted:#5f6b7a; --line:#e3e7ec; --panel:#f7f9fb; --accent:#2c5d8f;
        --good:#1b7f5f; --bad:#b3471b; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color:var(--ink); background:#fff; }
main { max-width:1180px; margin:0 auto; padding:28px 32px 48px; }
header h1 { font-size:26px; margin:0 0 4px; letter-spacing:-0.01em; }
header p { margin:0; color:var(--muted); }
h2 { font-size:19px; margin:36px 0 12px; padding-bottom:6px; border-bottom:1px solid var(--line); }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(200px, 1fr)); gap:14px; margin-top:22px; }
.card { background:var(--panel); border:1px solid var(--line); border-radius:10px; padding:14px 16px; }
.card .label { font-size:13px; color:var(--muted); text-transform:uppercase; letter-spacing:0.04em; }
.card .value { font-size:24px; font-weight:600; margin-top:4px; font-variant-numeric:tabular-nums; }
.card .value .arrow { color:var(--muted); font-weight:400; margin:0 6px; }
.card .sub { font-size:12px; color:var(--muted); }
.method { display:grid; grid-template-columns:200px 1fr; gap:6px 18px; background:var(--panel);
          border:1px solid var(--line); border-radius:10px; padding:16px 20px; margin:0; }
.method dt { font-weight:600; color:var(--muted); }
.method dd { margin:0; }
table { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
th, td { padding:7px 10px; border-bottom:1px solid var(--line); text-align:right; vertical-align:top; }
th:first-child, td:first-child { text-align:left; }
thead th { font-size:13px; color:var(--muted); font-weight:600; border-bottom:2px solid var(--line); }
td .ci { color:var(--muted); font-size:12px; margin-left:6px; }
td .hint { display:block; color:var(--muted); font-size:11px; }
.better { color:var(--good); font-weight:600; }
.worse { color:var(--bad); font-weight:600; }
.same, .neutral { color:var(--muted); }
figure { margin:18px 0 28px; }
figure img { max-width:100%; height:auto; display:block; border:1px solid var(--line); border-radius:8px; }
figcaption { color:var(--muted); font-size:13.5px; margin-top:8px; max-width:900px; }
figcaption b { color:var(--ink); }
.notes li { margin-bottom:4px; }
.glossary { display:grid; grid-template-columns:220px 1fr; gap:4px 18px; font-size:14px; }
.glossary dt { font-weight:600; }
.glossary dd { margin:0; color:var(--muted); }
footer { margin-top:40px; color:var(--muted); font-size:12.5px; border-top:1px solid var(--line); padding-top:12px; }
code { font-family:ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size:12.5px;
       background:var(--panel); padding:1px 4px; border-radius:4px; overflow-wrap:anywhere; }
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ s.title }}</title>
<style>{{ css | safe }}</style>
</head>
<body>
<main>
<header>
  <h1>{{ s.title }}</h1>
  <p>{{ s.input.n_items }} labelled items from <code>{{ s.input.path }}</code>
     · {{ s.calibration.mode }} calibration · {{ s.calibration.scheme.kind }}
     · generated {{ s.created }} by howsure {{ s.howsure_version }}</p>
</header>

<section class="cards">
{% for card in cards %}
  <div class="card">
    <div class="label">{{ card.title }}</div>
    <div class="value">{% for v in card["values"] %}{% if not loop.first %}<span class="arrow">→</span>{% endif %}{{ v }}{% endfor %}</div>
    <div class="sub">{% for c in card_columns %}{% if not loop.first %} → {% endif %}{{ c.short }}{% endfor %}
      {% if card.change[0] %}<span class="{{ card.change[1] }}">{{ card.change[0] }}</span>{% endif %}</div>
  </div>
{% endfor %}
</section>

<h2>How these numbers were made</h2>
<dl class="method">
  <dt>Calibration mode</dt><dd><b>{{ s.calibration.mode }}</b> — {{ s.calibration.mode_description }}</dd>
  <dt>Calibrator</dt><dd><b>{{ s.calibration.calibrator }}</b>{% if s.calibration.get('chosen') %} → {{ s.calibration.chosen }}{% endif %}{% if s.calibration.get('reason') %}. {{ s.calibration.reason }}{% endif %}</dd>
  <dt>Honest evaluation</dt><dd>{{ s.calibration.scheme.description }}. Calibrated numbers come only from items the calibrator was not fitted on; raw numbers need no fitting.</dd>
  <dt>Duplicates</dt><dd>{{ s.input.get('duplicates') or 'not checked' }}</dd>
  <dt>Metrics</dt><dd>{{ s.settings.n_bins }} bins for ECE and MCE, bins of {{ s.settings.beta }} items for RMS calibration error;
      {{ (100 * s.settings.level) | round(0) | int }}% intervals from {{ s.settings.n_boot }} bootstrap resamples of the items (seed {{ s.settings.seed }}): percentile intervals, except for the binned calibration errors (ECE, RMS, MCE).
      Those run high on a finite sample, and higher on a resample, so their interval is the percentile interval of the resampled values minus the bootstrap bias (their mean minus the estimate): the estimate's sampling spread around itself. The bias is in <code>summary.json</code>; the estimate minus it is the bias-corrected one.</dd>
  <dt>Input</dt><dd>{{ s.input.kind }}{% if s.input.get('labels') %}; labels {{ s.input.labels | join(", ") }}{% endif %}{% if s.input.get('columns') %}; columns {% for k, v in s.input.columns.items() %}{{ k }} = <code>{{ v }}</code>{% if not loop.last %}, {% endif %}{% endfor %}{% endif %}</dd>
</dl>

<h2>Metrics</h2>
<table>
  <thead><tr><th>metric</th>{% for c in columns %}<th title="{{ c.description }}">{{ c.title }}</th>{% endfor %}{% if columns | length > 1 %}<th>{{ columns[-2].short }} → {{ columns[-1].short }}</th>{% endif %}</tr></thead>
  <tbody>
  {% for row in rows %}
    <tr><td>{{ row.title }}<span class="hint">{{ row.hint }}</span></td>
      {% for cell in row.cells %}<td>{{ cell[0] }}<span class="ci">{{ cell[1] }}</span></td>{% endfor %}
      {% if columns | length > 1 %}<td class="{{ row.change[1] }}">{{ row.change[0] }}</td>{% endif %}</tr>
  {% endfor %}
  </tbody>
</table>
<p class="sub">{% for c in columns %}<b>{{ c.title }}</b>: {{ c.description }}{% if not loop.last %} · {% endif %}{% endfor %}</p>

{% for f in figures %}
<h2>{{ f.title }}</h2>
<figure>
  <img src="{{ f.src }}" alt="{{ f.title }}">
  <figcaption>{{ f.caption }}</figcaption>
</figure>
{% endfor %}

{% if s.get('notes') %}
<h2>Notes</h2>
<ul class="notes">{% for note in s.notes %}<li>{{ note }}</li>{% endfor %}</ul>
{% endif %}

<h2>What the metrics mean</h2>
<dl class="glossary">{% for title, text in glossary %}<dt>{{ title }}</dt><dd>{{ text }}</dd>{% endfor %}</dl>

<footer>
  {% if s.get('command') %}Made with <code>{{ s.command }}</code>. {% endif %}
  Summary with every number shown here: <code>summary.json</code> (redraw with <code>howsure report summary.json</code>).
</footer>
</main>
</body>
</html>
"""
