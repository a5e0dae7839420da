"""The score cache (howsure.backends.cache): a real SQLite file around a real tiny backend. Texts
already scored come back without the backend being called; anything in the key that changes
misses; a file that is not a score cache is refused by name; concurrent writers lose no row."""

from __future__ import annotations

import multiprocessing
import sqlite3

import numpy as np
import pytest

from howsure.backends import load_backend
from howsure.backends.cache import CachedBackend, CacheIdentity, ScoreCache, model_checksum
from howsure.errors import DataError
from howsure.models import DEFAULT_MODEL, PRESETS
from howsure.core.task import Task

TEXTS = ["a gorgeous, witty film", "dull", "the worst film of the year", "dull", "ünïcödé ✓"]


def sentiment_task(**overrides) -> Task:
    fields = dict(instruction="Positive or negative?\n\nText: {text}",
                  labels={"positive": ["positive"], "negative": ["negative"]})
    fields.update(overrides)
    return Task(**fields)


class SpyBackend:
    """The real tiny backend underneath, counting the calls and texts that reach it."""

    def __init__(self, backend):
        self.backend = backend
        self.model_id = backend.model_id
        self.calls: list[list[str]] = []

    def label_scores(self, task, texts, **kwargs):
        self.calls.append(list(texts))
        return self.backend.label_scores(task, texts, **kwargs)

    def prompt(self, task, text):
        return self.backend.prompt(task, text)


@pytest.fixture(scope="module")
def tiny_backend(tiny_model_dir):
    return load_backend(str(tiny_model_dir), batch_size=4)


def cached(spy, path, model=None, **identity):
    fields = {"backend": "transformers", "model": model or spy.model_id} | identity
    return CachedBackend(spy, path, CacheIdentity.of(**fields))


def assert_same_scores(a, b):
    assert a.labels == b.labels
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    np.testing.assert_array_equal(a.label_mass, b.label_mass)
    assert a.other_mass == b.other_mass and a.top_tokens == b.top_tokens and a.variants == b.variants


def test_a_second_run_on_the_same_texts_never_calls_the_backend(tmp_path, tiny_backend):
    path = tmp_path / "scores.sqlite"
    task = sentiment_task()
    first_spy = SpyBackend(tiny_backend)
    first = cached(first_spy, path).label_scores(task, TEXTS)
    # One batch of the distinct texts: "dull" twice is scored once.
    assert first_spy.calls == [["a gorgeous, witty film", "dull", "the worst film of the year", "ünïcödé ✓"]]
    direct = tiny_backend.label_scores(task, TEXTS)
    for got, want in zip(first, direct):
        np.testing.assert_allclose(got.probabilities, want.probabilities, atol=1e-6)

    second_spy = SpyBackend(tiny_backend)
    second_backend = cached(second_spy, path)  # a new wrapper on the same file: as a second run
    done = []
    second = second_backend.label_scores(task, TEXTS, progress=done.append)
    assert second_spy.calls == []
    assert sum(done) == len(TEXTS) and second_backend.hits == len(TEXTS) and second_backend.scored == 0
    for got, want in zip(second, first):
        assert_same_scores(got, want)
    assert len(ScoreCache(path)) == 4


def test_only_the_missing_texts_reach_the_backend(tmp_path, tiny_backend):
    path = tmp_path / "scores.sqlite"
    task = sentiment_task()
    cached(SpyBackend(tiny_backend), path).label_scores(task, ["dull", "fine"])
    spy = SpyBackend(tiny_backend)
    backend = cached(spy, path)
    result = backend.label_scores(task, ["fine", "new text", "dull", "another"])
    assert spy.calls == [["new text", "another"]]
    assert (backend.hits, backend.scored) == (2, 2)
    assert [r.labels for r in result] == [["positive", "negative"]] * 4


@pytest.mark.parametrize("change", [
    {"task": sentiment_task(instruction="Is this positive or negative?\n\nText: {text}")},
    {"task": sentiment_task(labels={"positive": ["positive", "good"], "negative": ["negative"]})},
    {"task": sentiment_task(variant_rule="exact")},
    {"identity": {"model": "another-model"}},
    {"adapter": b"lora weights"},
    {"identity": {"options": {"dtype": "mixed"}}},
    {"top_k": 3},
])
def test_a_changed_task_model_adapter_or_option_misses(tmp_path, tiny_backend, change):
    path = tmp_path / "scores.sqlite"
    cached(SpyBackend(tiny_backend), path, options={"dtype": "float32"}).label_scores(sentiment_task(), TEXTS[:2])
    spy = SpyBackend(tiny_backend)
    identity = {"options": {"dtype": "float32"}} | change.get("identity", {})
    if "adapter" in change:  # a LoRA adapter directory, keyed by its weights' checksum
        (tmp_path / "lora").mkdir()
        (tmp_path / "lora" / "adapter_model.safetensors").write_bytes(change["adapter"])
        identity["adapter"] = str(tmp_path / "lora")
    backend = cached(spy, path, **identity)
    backend.label_scores(change.get("task", sentiment_task()), TEXTS[:2], top_k=change.get("top_k", 10))
    assert spy.calls == [TEXTS[:2]]


def test_the_model_key_is_a_presets_checksum_or_a_local_models_file_listing(tmp_path):
    assert model_checksum(DEFAULT_MODEL) == f"sha256:{PRESETS[DEFAULT_MODEL].file_sha256}"
    assert model_checksum("org/some-hub-model") == "id:org/some-hub-model"
    weights = tmp_path / "model" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"one")
    before = model_checksum(str(weights.parent))
    assert before.startswith("files:") and model_checksum(str(weights.parent)) == before
    weights.write_bytes(b"other weights")  # re-written weights: another key
    assert model_checksum(str(weights.parent)) != before


def test_only_score_changing_options_are_part_of_the_identity():
    identity = CacheIdentity.of("transformers", "org/m", {"dtype": "mixed", "threads": 2, "batch_size": 8})
    assert identity.options == {"dtype": "mixed"}


@pytest.mark.parametrize("content, message", [
    (b"text,label\nhello,1\n", "is not a readable SQLite file"),
    (b"SQLite format 3\x00" + b"\x07" * 200, "is not a readable SQLite file"),
])
def test_a_corrupt_cache_file_is_refused_by_name(tmp_path, tiny_backend, content, message):
    path = tmp_path / "broken.sqlite"
    path.write_bytes(content)
    spy = SpyBackend(tiny_backend)
    with pytest.raises(DataError, match=message) as caught:
        cached(spy, path)
    assert str(path) in str(caught.value) and spy.calls == []
    assert path.read_bytes() == content  # never overwritten


def test_another_programs_sqlite_file_is_refused_and_left_alone(tmp_path, tiny_backend):
    path = tmp_path / "theirs.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    with pytest.raises(DataError, match=r"is an SQLite database of something else \(tables: invoices\)"):
        cached(SpyBackend(tiny_backend), path)
    with sqlite3.connect(path) as db:
        assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["invoices"]


def test_a_cache_of_another_format_version_is_refused(tmp_path, tiny_backend):
    path = tmp_path / "scores.sqlite"
    ScoreCache(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE howsure_score_cache SET value = '99' WHERE name = 'version'")
    with pytest.raises(DataError, match="version '99', expected 'howsure-score-cache' version '1'"):
        ScoreCache(path)


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        ScoreCache(tmp_path)


def _write_rows(path: str, worker: int, rows: int) -> None:
    from howsure.backends.cache import ScoreCache
    from howsure.core.scores import LabelScores

    cache = ScoreCache(path)
    for i in range(rows):  # one transaction per row: as many lock hand-overs as possible
        scores = LabelScores(["a", "b"], np.array([0.25, 0.75]), np.array([0.1, 0.3]), 0.6, [("b", 0.3)])
        cache.put_many({f"{worker}-{i}": scores})
    cache.close()


def test_concurrent_writers_lose_no_row(tmp_path):
    path = str(tmp_path / "scores.sqlite")
    workers, rows = 4, 50
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_write_rows, args=(path, w, rows)) for w in range(workers)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=120)
    assert [p.exitcode for p in processes] == [0] * workers
    cache = ScoreCache(path)
    assert len(cache) == workers * rows
    found = cache.get_many([f"{w}-{i}" for w in range(workers) for i in range(rows)])
    assert len(found) == workers * rows
    np.testing.assert_array_equal(found["3-49"].probabilities, [0.25, 0.75])


def test_the_model_loads_only_when_a_text_misses(tmp_path, tiny_backend):
    path = tmp_path / "scores.sqlite"
    task = sentiment_task()
    loads = []

    def load():
        loads.append(1)
        return SpyBackend(tiny_backend)

    identity = CacheIdentity.of("transformers", tiny_backend.model_id)
    CachedBackend(load, path, identity, model_id=tiny_backend.model_id).label_scores(task, ["dull"])
    assert loads == [1]
    again = CachedBackend(load, path, identity, model_id=tiny_backend.model_id)
    again.label_scores(task, ["dull"])
    assert loads == [1] and again.model_id == tiny_backend.model_id
    assert again.prompt(task, "x") == tiny_backend.prompt(task, "x")  # other attributes load it
    assert loads == [1, 1]


def test_load_backend_applies_the_cache(tmp_path, tiny_model_dir):
    path = tmp_path / "scores.sqlite"
    backend = load_backend(str(tiny_model_dir), cache=path, batch_size=4)
    assert isinstance(backend, CachedBackend) and backend.model_id == str(tiny_model_dir)
    backend.label_scores(sentiment_task(), ["dull"])
    assert len(ScoreCache(path)) == 1
