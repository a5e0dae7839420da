import json

import numpy as np
import pandas as pd
import pytest

from howsure.core.scored import ScoredItems
from howsure.errors import DataError
from howsure.io.records import read_records
from howsure.io.scored import parse_correctness, read_scored
from howsure.io.tables import read_table
from howsure.io.texts import extract_texts, read_texts

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


# ------------------------------------------------------------------ one parser of JSON records
@pytest.mark.parametrize(
    "document, expected",
    [
        # The only list-valued key, whatever its name.
        ({"data": [{"text": "a"}], "model": "m"}, ["a"]),
        # Several lists: the conventional name wins.
        ({"results": [{"text": "b"}], "labels": ["x", "y"]}, ["b"]),
    ],
)
def test_both_readers_unwrap_a_json_object_by_the_same_rule(tmp_path, document, expected):
    path = tmp_path / "in.json"
    path.write_text(json.dumps(document))
    assert read_table(path)["text"].tolist() == expected
    assert [r["text"] for r in read_records(path)] == expected


def test_both_readers_refuse_a_jsonl_line_that_is_no_object(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"in.jsonl: line 2 is a JSON list, expected an object"):
        read_table(path)
    with pytest.raises(DataError, match=r"in.jsonl:2 is a JSON list, expected an object"):
        read_records(path)


def test_read_scored_returns_scored_items_with_the_records(tmp_path):
    path = tmp_path / "in.csv"
    path.write_text("id,prediction,confidence,correct\na,x,0.9,yes\nb,y,0.6,0\nc,x,0.7,1.0\n")
    items = read_scored(path)
    assert isinstance(items, ScoredItems)
    assert items.correct.tolist() == [1.0, 0.0, 1.0] and items.confidence.tolist() == [0.9, 0.6, 0.7]
    assert items.predicted == ["x", "y", "x"] and items.label_names == ["x", "y"]
    assert items.real_ids == ["a", "b", "c"] and items.records[1]["prediction"] == "y"
    # Two labels: the predicted label's confidence gives the whole distribution.
    assert items.probabilities.tolist() == [[0.9, pytest.approx(0.1)], [pytest.approx(0.4), 0.6], [0.7, pytest.approx(0.3)]]
    routed = read_scored(path, read_truth=False)
    assert routed.correct is None and routed.labels is None


def test_correctness_is_parsed_alike_for_evaluation_and_thresholds():
    values = [True, False, 1, 0, 1.0, "yes", "No", " t ", "1.00", np.True_]
    assert [parse_correctness(v, i, "correct") for i, v in enumerate(values)] == [1, 0, 1, 0, 1, 1, 0, 1, 1, 1]
    with pytest.raises(DataError, match=r"column 'correct' row 3: 'maybe' is not a correctness; expected true/false or 1/0"):
        parse_correctness("maybe", 3, "correct")
    with pytest.raises(DataError, match="is not a correctness"):
        parse_correctness(2, 0, "correct")
