import json

import pandas as pd
import pytest

from howsure.io.tables import read_table
from howsure.io.texts import extract_texts, read_texts
from howsure.errors import DataError

ROWS = [{"text": "good film", "label": "positive", "id": "a"}, {"text": "NA", "label": "negative", "id": "b"}]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_read_every_format(tmp_path, suffix):
    path = tmp_path / f"in{suffix}"
    frame = pd.DataFrame(ROWS)
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif suffix == ".json":
        path.write_text(json.dumps({"results": ROWS}))
    else:
        frame.to_parquet(path)
    table = read_table(path)
    assert table["text"].tolist() == ["good film", "NA"]  # "NA" stays a text, not a missing value
    rows = extract_texts(table, "text", "id", "label")
    assert rows.ids == ["a", "b"] and rows.labels == ["positive", "negative"]


def test_invalid_rows_are_reported_with_row_numbers(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "ok"}\n{"text": ""}\n{"text": 3}\n{"text": null}\n{"text": "   "}\n{"text": "fine"}\n')
    rows = read_texts(path)
    assert rows.texts == ["ok", "fine"] and rows.row_numbers == [0, 5]
    assert rows.invalid == [(1, "empty text"), (2, "not text: 3"), (3, "missing text"), (4, "empty text")]
    assert [rows.where(n) for n, _ in rows.invalid] == ["row 2 (line 2)", "row 3 (line 3)", "row 4 (line 4)", "row 5 (line 5)"]


@pytest.mark.parametrize(
    "content, name, texts, invalid",
    [
        # A one-column CSV: an empty line is an empty text, as is a line of spaces.
        ('text\n""\n   \nok\n', "in.csv", ["ok"], ["row 1 (line 2): empty text", "row 2 (line 3): empty text"]),
        # Several columns: a blank line is a row with no values, reported as an empty text.
        ("text,label\nhello,1\n\nworld,0", "in.csv", ["hello", "world"], ["row 2 (line 3): empty text"]),
        ("text\tlabel\nhello\t1\n\nworld\t0\n\n", "in.tsv", ["hello", "world"],
         ["row 2 (line 3): empty text", "row 4 (line 5): empty text"]),
        # Lines, not rows: a quoted text spans two lines; blank lines before the header are no rows.
        ('\n\ntext,label\n"two\nlines",1\n\nx,0\n', "in.csv", ["two\nlines", "x"], ["row 2 (line 6): empty text"]),
        # JSONL: a blank line holds no object, so rows and lines part ways.
        ('{"text": "a"}\n\n{"text": " "}\n', "in.jsonl", ["a"], ["row 2 (line 3): empty text"]),
    ],
)
def test_blank_rows_are_reported_by_row_and_line(tmp_path, content, name, texts, invalid):
    path = tmp_path / name
    path.write_text(content)
    rows = read_texts(path, label_column="label" if "label" in content else None)
    assert rows.texts == texts
    assert [f"{rows.where(n)}: {why}" for n, why in rows.invalid] == invalid


def test_rows_without_file_lines_are_named_by_row(tmp_path):
    path = tmp_path / "in.parquet"
    pd.DataFrame({"text": ["ok", None, "  "]}).to_parquet(path)
    rows = read_texts(path)
    assert [f"{rows.where(n)}: {why}" for n, why in rows.invalid] == ["row 2: missing text", "row 3: empty text"]


@pytest.mark.parametrize(
    "content, name, kwargs, match",
    [
        ("text\nhello\n", "in.csv", dict(text_column="body"), "text column 'body' is not in the input; columns are: text"),
        ("text\nhello\n", "in.csv", dict(label_column="gold"), "label column 'gold' is not in the input"),
        ("id,text\n1,a\n1,b\n", "in.csv", dict(id_column="id"), r"id '1' appears in row 1 \(line 2\) and row 2 \(line 3\)"),
        ('{"text": "a"}\nnot json\n', "in.jsonl", {}, "line 2 is not valid JSON"),
        ("[1, 2]", "in.json", {}, "expected a list of JSON objects"),
        ('{"a": [], "b": []}', "in.json", {}, "exactly one list of records"),
        ("x", "in.xlsx", {}, "cannot tell the format"),
    ],
)
def test_bad_inputs(tmp_path, content, name, kwargs, match):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=match):
        read_texts(path, **kwargs)


def test_missing_file():
    with pytest.raises(DataError, match="does not exist"):
        read_table("/no/such/file.csv")
