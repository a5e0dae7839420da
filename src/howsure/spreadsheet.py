"""Moved to howsure.io.spreadsheet; these names stay importable."""

from howsure.io.spreadsheet import FORMULA_PREFIXES, formula_safe

__all__ = ["FORMULA_PREFIXES", "formula_safe"]
