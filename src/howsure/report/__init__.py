"""The report room: plots of confidence (`howsure.report.plots`, drawing what the metrics and
decisions computed) and the self-contained HTML report with its JSON summary
(`howsure.report.html`, re-exported here)."""

from howsure.report.html import (
    REQUIRED_KEYS,
    SUMMARY_FORMAT,
    SUMMARY_VERSION,
    check_summary,
    format_interval,
    json_ready,
    load_summary,
    png_data_uri,
    render_html,
    write_html,
    write_report,
    write_summary,
)

__all__ = [
    "REQUIRED_KEYS",
    "SUMMARY_FORMAT",
    "SUMMARY_VERSION",
    "check_summary",
    "format_interval",
    "json_ready",
    "load_summary",
    "png_data_uri",
    "render_html",
    "write_html",
    "write_report",
    "write_summary",
]
