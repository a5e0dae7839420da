"""CSV cells a spreadsheet shows as text, for every CSV howsure writes from user-supplied values
(`howsure export`, `howsure route`)."""

from __future__ import annotations

from typing import Any

# What a spreadsheet (Excel, LibreOffice, Google Sheets) runs as a formula when a cell starts
# with it: a text like "=HYPERLINK(...)" sent to the service must not run on the exporter's machine.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def formula_safe(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string starting with ``= + - @``, a tab or a
    carriage return gets a leading apostrophe (OWASP's advice against CSV injection); other
    values are returned as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value
