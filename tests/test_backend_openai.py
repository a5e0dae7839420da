"""The OpenAI-compatible backend against a REAL server: llama-cpp-python's OpenAI-compatible
server, started here on a free loopback port with the bundled GGUF (SmolLM2-135M Q4_1), behind
an API key. Faults come from a small loopback proxy in front of it (429 with Retry-After, 503,
dropped connections, answers without logprobs, a server that goes down), never from a mock.
tests/test_backend_openai_units.py covers the pieces that need no server."""

import http.server
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from howsure.backends.labels import LowLabelMassWarning
from howsure.backends.openai import OpenAIBackend
from howsure.backends.openai_server import free_loopback_port, llama_cpp_server
from howsure.cli import app
from howsure.core.task import Task, load_task
from howsure.errors import ModelError
from howsure.io.texts import TextRows
from howsure.models import DEFAULT_MODEL, PRESETS, preset_file, resolve_model
from howsure.pipelines.score_job import meta_path, score_rows

pytestmark = [pytest.mark.model,
              pytest.mark.filterwarnings("ignore::howsure.backends.labels.LowLabelMassWarning")]

KEY = "sk-howsure-test-" + secrets.token_hex(12)
MODEL = DEFAULT_MODEL  # the name the server serves the GGUF under (--model_alias)
TEXTS = ["A gorgeous, witty, seductive movie.", "Dull, lifeless and far too long.",
         "The plot is thin but the actors are wonderful.", "I want my two hours back.",
         "An instant classic.", "Neither funny nor moving.", "It was fine, I guess.", "A total mess."]
runner = CliRunner()


@pytest.fixture(scope="session")
def llama_server(bundled_model_ready):
    """Base URL of llama-cpp-python's server on the bundled GGUF, behind ``KEY``; stopped after
    the session."""
    pytest.importorskip("llama_cpp.server.app", reason="llama-cpp-python[server] is not installed")
    with llama_cpp_server(preset_file(PRESETS[MODEL]), alias=MODEL, api_key=KEY, n_ctx=1024) as url:
        yield url


class FaultProxy:
    """A threaded loopback HTTP proxy in front of the server. ``plan`` is a cycle of what to do
    with each POST: "ok" (forward), "429" (Retry-After: 1), "503", "drop" (close the connection
    without an answer), "strip" (forward, then delete the logprobs), "down" (503 for ever)."""

    def __init__(self, upstream: str, plan=("ok",)):
        self.upstream, self.plan, self.log, self.lock = upstream.rstrip("/"), list(plan), [], threading.Lock()
        self.http = httpx.Client(timeout=120)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                proxy.handle(self, "ok")

            def do_POST(self):
                with proxy.lock:
                    posts = sum(1 for _, method, _ in proxy.log if method == "POST")
                    action = proxy.plan[posts % len(proxy.plan)]
                    proxy.log.append((time.monotonic(), "POST", action))
                proxy.handle(self, action)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.handle_error = lambda request, address: None  # a dropped connection is the point
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, handler, action):
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        if action == "drop":
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)
            return
        if action == "slow":
            time.sleep(0.5)
        if action in ("429", "503", "down"):
            handler.send_response(429 if action == "429" else 503)
            if action == "429":
                handler.send_header("Retry-After", "1")
            handler.send_header("Content-Type", "application/json")
            handler.end_headers()
            handler.wfile.write(b'{"error": {"message": "busy"}}')
            return
        path = handler.path[len("/v1"):] if handler.path.startswith("/v1") else handler.path
        headers = {k: v for k, v in handler.headers.items() if k.lower() in ("authorization", "content-type")}
        answer = self.http.request(handler.command, self.upstream + path, content=body, headers=headers)
        content = answer.content
        if action == "strip" and answer.status_code == 200:
            data = answer.json()
            for choice in data.get("choices", []):
                choice["logprobs"] = None
            content = json.dumps(data).encode()
        handler.send_response(answer.status_code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        handler.wfile.write(content)

    def reset(self, plan):
        with self.lock:
            self.plan, self.log = list(plan), []

    def posts(self, action=None):
        return [entry for entry in self.log if entry[1] == "POST" and (action is None or entry[2] == action)]

    def close(self):
        self.server.shutdown()
        self.http.close()


@pytest.fixture
def proxy(llama_server):
    made = []

    def make(plan=("ok",)):
        made.append(FaultProxy(llama_server, plan))
        return made[-1]

    yield make
    for one in made:
        one.close()


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


def text_rows(texts):
    return TextRows(list(range(len(texts))), list(texts), [f"id{i}" for i in range(len(texts))],
                    [None] * len(texts))


def test_chat_top_logprobs_agree_with_transformers_and_intervals_hold_below_the_top_k(llama_server, key,
                                                                                       bundled_backend):
    task = load_task("sentiment")
    reference = bundled_backend.label_scores(task, TEXTS)
    wide = OpenAIBackend(MODEL, base_url=llama_server, top_logprobs=20).label_scores(task, TEXTS)
    inside = [(w, r) for w, r in zip(wide, reference) if np.all(w.label_mass > 0)]
    assert len(inside) >= 6, [w.top_tokens[:5] for w in wide]
    for w, r in inside:  # both labels among the returned 20: the Q4_1 server agrees with float32
        assert np.abs(w.probabilities - r.probabilities).max() < 0.05, (w.probabilities, r.probabilities)
        # the exact rule's one answer per label was returned whole: nothing of it is unknown
        np.testing.assert_allclose(w.label_mass_bounds[:, 0], w.label_mass_bounds[:, 1])
    narrow = OpenAIBackend(MODEL, base_url=llama_server, top_logprobs=2).label_scores(task, TEXTS)
    unseen = 0
    for n, w, r in zip(narrow, wide, reference):
        for j in range(len(task.labels)):
            low, high = n.label_mass_bounds[j]
            if low == 0:  # below the top 2: the interval still holds the transformers mass
                unseen += 1
                assert 0 < high <= n.top_tokens[-1][1] + 1e-9
                assert low <= r.label_mass[j] <= high, (n.label_mass_bounds, r.label_mass)
            else:  # seen: what the wider answer saw
                assert low == pytest.approx(w.label_mass[j], rel=1e-6)
    assert unseen >= len(TEXTS)  # small top_logprobs really pushed labels out


def test_labels_outside_the_returned_mass_warn_once_per_backend(llama_server, key):
    task = Task(instruction="Is this review positive or negative?\n\n{text}",
                labels={"zebra": ["zebra"], "xylophone": ["xylophone"]}, variant_rule="exact")
    backend = OpenAIBackend(MODEL, base_url=llama_server, top_logprobs=5)
    with pytest.warns(LowLabelMassWarning, match="median 0.000 of the probability the server returned in its top 5"):
        [scores] = backend.label_scores(task, TEXTS[:1])
    assert scores.label_mass.tolist() == [0.0, 0.0] and np.all(scores.label_mass_bounds[:, 1] > 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend.label_scores(task, TEXTS[1:2])
    assert not [w for w in caught if issubclass(w.category, LowLabelMassWarning)]


def test_completions_echo_scores_multi_token_verbalizers_by_the_chain_rule(llama_server, key, bundled_backend):
    # A short prompt: llama-cpp-python's server sorts the whole vocabulary at every echoed position.
    task = Task(instruction="Review: {text}\nThumbs up or thumbs down?", system="Answer in two words.",
                labels={"positive": ["thumbs up"], "negative": ["thumbs down"]}, variant_rule="exact")
    echo = OpenAIBackend(MODEL, base_url=llama_server, endpoint="completions", tokenizer=MODEL, top_logprobs=5)
    assert echo.prompt(task, TEXTS[0]) == bundled_backend.prompt(task, TEXTS[0])  # the same prompt, as text
    [server], [reference] = echo.label_scores(task, TEXTS[:1], details=True), bundled_backend.label_scores(task, TEXTS[:1])
    assert reference.label_mass.min() > 0 and server.label_mass.min() > 0
    # Q4_1 against float32 differs a few percent per token, and three tokens' differences multiply
    # (0.064 on this text), so the chain rule is held to 0.1 and each mass to a factor e^0.5.
    assert np.abs(server.probabilities - reference.probabilities).max() < 0.1, (server.probabilities,
                                                                               reference.probabilities)
    np.testing.assert_allclose(np.log(server.label_mass), np.log(reference.label_mass), atol=0.5)
    assert server.variants["positive"][0][0] == "thumbs up"
    # the chat endpoint sees only the first token, which both answers share: no lower mass at all
    [chat] = OpenAIBackend(MODEL, base_url=llama_server, endpoint="chat").label_scores(task, TEXTS[:1])
    assert chat.label_mass.tolist() == [0.0, 0.0] and np.all(chat.label_mass_bounds[:, 1] >= server.label_mass)


def test_an_echo_paired_one_position_late_is_read_realigned(llama_server, key, bundled_model_ready):
    """Without a BOS token first, llama-cpp-python 0.3 pairs each echoed token with the next
    position's log-probabilities; the backend finds that and reads the echo accordingly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    task = Task(instruction="Is this movie review positive or negative?\n\nReview: {text}",
                labels={"positive": ["positive"], "negative": ["negative"]}, variant_rule="exact")
    echo = OpenAIBackend(MODEL, base_url=llama_server, endpoint="completions", top_logprobs=20)
    [server] = echo.label_scores(task, TEXTS[:1])
    assert echo._echo_shift == 1
    path, _ = resolve_model(bundled_model_ready)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    ids = tokenizer.encode(task.plain_prompt(TEXTS[0]), add_special_tokens=False)  # no BOS, as the server
    with torch.inference_mode():
        log_probs = model(torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)
    reference = np.array([log_probs[tokenizer.encode(" " + word, add_special_tokens=False)].sum().exp().item()
                          for word in ("positive", "negative")])
    for (low, high), expected in zip(server.label_mass_bounds, reference):
        if low == high:  # the answer token was among the 20 echoed at its position: read, not bounded
            assert abs(np.log(low) - np.log(expected)) < 0.25, (server.label_mass_bounds, reference)
        else:
            assert low <= expected <= high, (server.label_mass_bounds, reference)
    assert server.label_mass_bounds[:, 0].max() > 0  # one was read, so the check above compared values


def test_scoring_through_429_503_and_dropped_connections_writes_every_row_once(llama_server, key, proxy, tmp_path):
    task = load_task("sentiment")
    texts = TEXTS[:5]
    direct = OpenAIBackend(MODEL, base_url=llama_server).label_scores(task, texts)
    faulty = proxy(("ok", "429", "503", "drop"))
    backend = OpenAIBackend(MODEL, base_url=faulty.url, concurrency=1, backoff_s=0.05)
    out = tmp_path / "out.jsonl"
    summary = score_rows(backend, task, text_rows(texts), out, chunk_rows=2)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary.scored_now == 5 and [r["id"] for r in records] == [f"id{i}" for i in range(5)]
    for record, expected in zip(records, direct):
        # llama.cpp reuses the previous prompt's cache, so the same prompt can differ in the 4th digit
        assert record["probabilities"]["positive"] == pytest.approx(expected.probabilities[0], abs=5e-3)
    assert len(faulty.posts("ok")) == 5 and backend.client.retries == 3 * 4
    assert {"429", "503", "drop"} <= {action for _, _, action in faulty.posts()}
    log = faulty.posts()
    after_429 = [log[i + 1][0] - log[i][0] for i in range(len(log) - 1) if log[i][2] == "429"]
    assert len(after_429) == 4 and min(after_429) >= 0.95  # Retry-After: 1 waited, one request at a time


def test_a_run_that_fails_midway_resumes_without_rescoring_or_duplicating(llama_server, key, proxy, tmp_path):
    task = load_task("sentiment")
    failing = proxy(("ok",) * 4 + ("down",) * 1000)
    out = tmp_path / "out.jsonl"
    backend = OpenAIBackend(MODEL, base_url=failing.url, concurrency=2, max_retries=1, backoff_s=0.01)
    with pytest.raises(ModelError, match="did not answer POST /chat/completions after 2 tries"):
        score_rows(backend, task, text_rows(TEXTS), out, chunk_rows=3)
    kept = out.read_text().splitlines()
    assert len(kept) == 3  # the first chunk was written; the failed one left nothing half-done
    healthy = failing  # the same server, back up: a resume against another URL would be refused
    healthy.reset(("ok",))
    summary = score_rows(OpenAIBackend(MODEL, base_url=healthy.url), task, text_rows(TEXTS), out, chunk_rows=3)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert out.read_text().splitlines()[:3] == kept
    assert summary.already_done == 3 and summary.scored_now == len(TEXTS) - 3
    assert len(healthy.posts()) == len(TEXTS) - 3  # nothing already written was sent again
    assert [r["id"] for r in records] == [f"id{i}" for i in range(len(TEXTS))]
    assert json.loads(meta_path(out).read_text())["server"]["base_url"] == healthy.url


def test_a_killed_run_resumes_without_rescoring_or_duplicating(llama_server, key, proxy, tmp_path):
    slow = proxy(("slow",))
    out = tmp_path / "out.jsonl"
    script = f"""
from howsure.backends.openai import OpenAIBackend
from howsure.core.task import load_task
from howsure.io.texts import TextRows
from howsure.pipelines.score_job import score_rows
texts = {TEXTS!r}
rows = TextRows(list(range(len(texts))), texts, [f"id{{i}}" for i in range(len(texts))], [None] * len(texts))
score_rows(OpenAIBackend({MODEL!r}, base_url={slow.url!r}, concurrency=1), load_task("sentiment"), rows,
           {str(out)!r}, chunk_rows=2)
"""
    run = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while not (out.exists() and len(out.read_text().splitlines()) >= 2) and run.poll() is None:
        assert time.monotonic() < deadline, "the scoring run wrote nothing"
        time.sleep(0.05)
    run.send_signal(signal.SIGKILL)
    run.wait()
    kept = out.read_bytes().count(b"\n")  # whole lines: a torn last one is cut on resume
    assert 2 <= kept < len(TEXTS), "killed too late to test a resume"
    slow.reset(("ok",))
    summary = score_rows(OpenAIBackend(MODEL, base_url=slow.url), load_task("sentiment"), text_rows(TEXTS), out,
                         chunk_rows=2)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [f"id{i}" for i in range(len(TEXTS))]
    assert summary.already_done == kept and len(slow.posts()) == len(TEXTS) - kept


def flat(output: str) -> str:
    return " ".join(output.split())


def score_cli(tmp_path, url, *extra, model=MODEL, env=None, texts=TEXTS[:2]):
    source = tmp_path / "in.csv"
    source.write_text("text\n" + "".join(f'"{t}"\n' for t in texts))
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["score", "-i", str(source), "-o", str(out), "--backend", "openai",
                                 "--base-url", url, "-m", model, *extra], env=env)
    return result, out


def test_bad_inputs_are_one_clear_line_and_exit_2(llama_server, proxy, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    nowhere = f"http://127.0.0.1:{free_loopback_port()}/v1"
    cases = [
        ((nowhere,), {"OPENAI_API_KEY": KEY}, ["did not answer GET /models", nowhere]),
        ((llama_server,), {"OPENAI_API_KEY": KEY, "model": "no-such-model"},
         ["model 'no-such-model' is not served", f"'{MODEL}'"]),
        ((llama_server,), {}, ["needs an API key", "$OPENAI_API_KEY"]),
        ((llama_server,), {"OPENAI_API_KEY": "sk-wrong-key"}, ["refused the API key from $OPENAI_API_KEY"]),
        ((llama_server, "--api-key-env", "HOWSURE_NO_SUCH_KEY"), {}, ["'HOWSURE_NO_SUCH_KEY'", "not set"]),
    ]
    for (url, *extra), env, expected in cases:
        model = env.pop("model", MODEL)
        result, out = score_cli(tmp_path, url, *extra, model=model, env=env)
        assert result.exit_code == 2, result.output
        assert flat(result.output).startswith("error:") and all(e in flat(result.output) for e in expected), result.output
        assert "sk-wrong-key" not in result.output and KEY not in result.output
        assert not out.exists()  # refused at open, before anything was written
    # a server that answers without logprobs, after part of the file was scored: that part stays
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = proxy(("ok",))
    result, out = score_cli(tmp_path, server.url, texts=TEXTS[:1])
    assert result.exit_code == 0, result.output
    written = out.read_text()
    server.reset(("strip",))
    result, out = score_cli(tmp_path, server.url, texts=TEXTS[:2])
    assert result.exit_code == 2 and "returned no logprobs from /chat/completions" in flat(result.output), result.output
    assert out.read_text() == written


def test_the_key_is_never_written_and_bounds_survive_the_cache(llama_server, key, tmp_path):
    cache = tmp_path / "scores.sqlite"
    result, out = score_cli(tmp_path, llama_server, "--cache", str(cache), "--top-logprobs", "3")
    assert result.exit_code == 0, result.output
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(set(r["label_mass_bounds"]) == {"positive", "negative"} for r in first)
    assert "score cache: 0 text(s)" in flat(result.output)
    again = tmp_path / "again"
    again.mkdir()
    result, out2 = score_cli(again, llama_server, "--cache", str(cache), "--top-logprobs", "3")
    assert "score cache: 2 text(s)" in flat(result.output)
    assert [json.loads(line) for line in out2.read_text().splitlines()] == first
    inspected = runner.invoke(app, ["inspect", TEXTS[0], "--backend", "openai", "--base-url", llama_server,
                                    "-m", MODEL, "--top-logprobs", "3", "--show-prompt"])
    assert inspected.exit_code == 0 and "label mass bounds: positive [" in flat(inspected.output), inspected.output
    for path in (out, meta_path(out), cache, out2, meta_path(out2)):
        assert KEY.encode() not in Path(path).read_bytes()
    for output in (result.output, inspected.output):
        assert KEY not in output
    assert KEY not in os.environ.get("HOWSURE_CACHE", "")
