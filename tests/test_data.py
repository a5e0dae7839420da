import json

import pandas as pd
import pytest

from howsure.data import extract_texts, read_table
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
    rows = extract_texts(read_table(path))
    assert rows.texts == ["ok", "fine"] and rows.row_numbers == [0, 5]
    assert rows.invalid == [(1, "empty text"), (2, "not text: 3"), (3, "missing text"), (4, "empty text")]


@pytest.mark.parametrize(
    "content, name, kwargs, match",
    [
        ("text\nhello\n", "in.csv", dict(text_column="body"), "text column 'body' is not in the input; columns are: text"),
        ("text\nhello\n", "in.csv", dict(label_column="gold"), "label column 'gold' is not in the input"),
        ("id,text\n1,a\n1,b\n", "in.csv", dict(id_column="id"), "id '1' appears in rows 0 and 1"),
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
        extract_texts(read_table(path), **kwargs)


def test_missing_file():
    with pytest.raises(DataError, match="does not exist"):
        read_table("/no/such/file.csv")
