"""Moved to howsure.io.tables and howsure.io.texts; these names stay importable."""

from howsure.io.tables import FORMATS, read_table, read_table_with_lines
from howsure.io.texts import TextRows, extract_texts, read_texts, require_column, sample_path

__all__ = ["FORMATS", "TextRows", "extract_texts", "read_table", "read_table_with_lines", "read_texts",
           "require_column", "sample_path"]
