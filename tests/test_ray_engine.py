"""`--engine ray`: scoring on a local Ray cluster equals single-process scoring, row for row and
byte for byte; a killed actor loses and duplicates no row; a killed driver resumes; a head node
started with `ray start` serves `--address ray://` (Ray Client) with the same output.

One Ray cluster (loopback, started once for the session: start-up is slow on 2 cores) serves
every test but the Ray Client one; each run starts its own actor pool on it."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from typer.testing import CliRunner

from howsure.backends import load_backend
from howsure.backends.openai_server import background_server, free_loopback_port
from howsure.cli import app
from howsure.core.task import load_task
from howsure.errors import DataError, ModelError
from howsure.io.texts import TextRows
from howsure.pipelines import ray_engine
from howsure.pipelines.score_job import meta_path, score_rows

pytest.importorskip("ray.data", reason="ray[data] is the `ray` extra (make venv installs it)")
pytestmark = pytest.mark.filterwarnings("ignore::howsure.backends.labels.LowLabelMassWarning")

SRC = Path(__file__).resolve().parents[1] / "src"
TEXTS = [f"review number {i}: " + ("good " * (i % 7)) + ("bad " * (i % 3)) + "movie" * (i % 5) for i in range(500)]
OPTIONS = {"batch_size": 16}


def rows(texts=TEXTS) -> TextRows:
    return TextRows(list(range(len(texts))), list(texts), [f"id{i}" for i in range(len(texts))],
                    ["positive" if i % 2 else "negative" for i in range(len(texts))])


@pytest.fixture(scope="session")
def cluster():
    """A local cluster for the whole session; yields its address for other drivers."""
    import ray

    ray_engine.connect(None, num_cpus=4)  # logical CPUs: 2 actors, a describe task, a second driver's
    yield ray.get_runtime_context().gcs_address
    ray_engine.disconnect()


@pytest.fixture(scope="module")
def single_process(tiny_model_dir, tmp_path_factory):
    """The reference: `score_rows` in this process, same model, options and chunks."""
    out = tmp_path_factory.mktemp("single") / "scores.jsonl"
    score_rows(load_backend(str(tiny_model_dir), **OPTIONS), load_task("sentiment"), rows(), out, chunk_rows=50)
    return out


class CrashOnce:
    """A real backend whose ``nth`` scoring call ends its process (``os._exit``, as a crashed or
    killed actor does) the first time any actor gets there; the marker file says it happened."""

    def __init__(self, backend, marker: str, nth: int) -> None:
        self.backend, self.marker, self.nth, self.calls = backend, marker, nth, 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def label_scores(self, task, texts, **kwargs):
        self.calls += 1
        if self.calls == self.nth:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(17)
        return self.backend.label_scores(task, texts, **kwargs)


def crash_once_loader(marker: str, nth: int, model: str, options: dict):
    return CrashOnce(load_backend(model, **options), marker, nth)


def test_cli_unreachable_address_is_one_line(tmp_path):
    """First in the file: the session cluster is not up yet, so the command really connects."""
    import ray

    assert not ray.is_initialized()
    source = tmp_path / "texts.csv"
    source.write_text("text\nfine\n")
    result = CliRunner().invoke(app, ["score", "-i", str(source), "-o", str(tmp_path / "o.jsonl"),
                                      "--engine", "ray", "--address", "127.0.0.1:9"])
    assert result.exit_code == 2
    assert "could not reach the Ray cluster at --address '127.0.0.1:9'" in " ".join(result.output.split())
    assert not (tmp_path / "o.jsonl").exists()


def test_two_actors_equal_single_process_byte_for_byte(cluster, tiny_model_dir, single_process, tmp_path):
    out = tmp_path / "ray.jsonl"
    seen = []
    summary = ray_engine.score_rows_on_ray(str(tiny_model_dir), "transformers", OPTIONS, load_task("sentiment"),
                                           rows(), out, actors=2, chunk_rows=50,
                                           progress=lambda done, total: seen.append(done))
    assert summary.scored_now == 500 and summary.already_done == 0
    assert seen == list(range(0, 501, 50))  # the bar moves chunk by chunk, in order
    assert out.read_bytes() == single_process.read_bytes()
    assert meta_path(out).read_bytes() == meta_path(single_process).read_bytes()


def test_a_killed_actor_loses_and_duplicates_no_row(cluster, tiny_model_dir, single_process, tmp_path):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors cannot import this file
    marker = tmp_path / "actor-killed"
    load = functools.partial(crash_once_loader, str(marker), 2, str(tiny_model_dir), OPTIONS)
    out = tmp_path / "ray.jsonl"
    summary = ray_engine.score_rows_on_ray(str(tiny_model_dir), "transformers", OPTIONS, load_task("sentiment"),
                                           rows(), out, actors=2, chunk_rows=50, load=load)
    assert marker.exists(), "no actor was killed: the test proved nothing"
    assert summary.scored_now == 500
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == [f"id{i}" for i in range(500)]  # each row once, in input order
    assert out.read_bytes() == single_process.read_bytes()


def test_killed_driver_resumes_without_rescoring(cluster, tiny_model_dir, tmp_path):
    """`howsure score --engine ray --address` in a subprocess, SIGKILLed once its first chunk is
    on disk; the same job again (in this process, to spare a second start-up) finishes the file
    and rescores nothing."""
    # 3,000 rows, 12 chunks of 256 (the last 184): the tiny model scores 600 rows between two
    # looks at the file on an idle machine, so fewer rows let the driver finish before the kill.
    texts = TEXTS * 6
    total = len(texts)
    source = tmp_path / "texts.csv"
    source.write_text("text\n" + "".join(f"{t}\n" for t in texts))
    out = tmp_path / "ray.jsonl"
    command = [sys.executable, "-m", "howsure", "score", "-i", str(source), "-o", str(out), "-m", str(tiny_model_dir),
               "--engine", "ray", "--address", cluster, "--actors", "2"]
    driver = subprocess.Popen(command, env=dict(os.environ, PYTHONPATH=str(SRC)), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 256:
            break
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    log = driver.communicate()[0].decode(errors="replace")
    written = out.read_bytes().count(b"\n") if out.exists() else 0
    assert 256 <= written < total, f"killed with {written} rows written; the driver said:\n{log}"

    as_the_cli = dict(source=str(source), columns={"text": "text", "id": None, "label": None})
    the_rows = TextRows(list(range(total)), texts, [str(i) for i in range(total)], [None] * total)
    settings = dict(dtype="float32", threads=None, batch_size=32, install=False, device="auto", adapter=None, cache=None)
    summary = ray_engine.score_rows_on_ray(str(tiny_model_dir), "transformers", settings, load_task("sentiment"),
                                           the_rows, out, actors=2, **as_the_cli)
    assert (summary.already_done, summary.scored_now) == (written, total - written)
    reference = tmp_path / "single.jsonl"
    score_rows(load_backend(str(tiny_model_dir)), load_task("sentiment"), the_rows, reference, **as_the_cli)
    assert out.read_bytes() == reference.read_bytes()


def test_clear_errors_without_ray_or_cluster(monkeypatch):
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "ray", None)  # what `import ray` meets where it is not installed
        with pytest.raises(ModelError, match=r"needs Ray Data.*howsure\[ray\]"):
            ray_engine.connect("auto")
    with pytest.raises(ModelError, match=r"could not reach the Ray cluster at --address '127.0.0.1:9'"):
        ray_engine._check_reachable("127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(ModelError, match=r"could not reach the Ray cluster at --address 'ray://127.0.0.1:9'"):
        ray_engine._check_reachable("ray://127.0.0.1:9")
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "grpc", None)  # ray without its client extra
        with pytest.raises(ModelError, match=r"'ray://127.0.0.1:9' is a Ray Client address, which needs grpcio"):
            ray_engine.connect("ray://127.0.0.1:9")
    with pytest.raises(DataError, match="--actors must be a whole number >= 1, got 0"):
        ray_engine.score_rows_on_ray("m", "transformers", {}, load_task("sentiment"), rows(), "x.jsonl", actors=0)


@pytest.mark.model
def test_bundled_model_on_ray_equals_single_process(cluster, bundled_model_ready, tmp_path):
    texts = ["A gorgeous, witty, seductive movie.", "The worst film of the year, dull and stupid.",
             "It was fine, I suppose.", "An absolute triumph of acting and craft."] * 10
    task = load_task("sentiment")
    single = tmp_path / "single.jsonl"
    score_rows(load_backend(bundled_model_ready, threads=1), task, rows(texts), single, chunk_rows=10)
    out = tmp_path / "ray.jsonl"
    ray_engine.score_rows_on_ray(bundled_model_ready, "transformers", {"threads": 1}, task, rows(texts), out,
                                 actors=1, chunk_rows=10)
    assert out.read_bytes() == single.read_bytes()


def test_backend_errors_arrive_as_themselves(cluster, tiny_model_dir, tmp_path):
    """A bad option fails in the first load on the cluster, a text too long for the model in an
    actor: either way the backend's own typed error, and nothing is written for the bad chunk."""
    task = load_task("sentiment")
    with pytest.raises(ModelError, match="dtype 'float64' is not one of"):
        ray_engine.score_rows_on_ray(str(tiny_model_dir), "transformers", {"dtype": "float64"}, task, rows(TEXTS[:4]),
                                     tmp_path / "bad-option.jsonl", actors=1)
    long = TEXTS[:10] + ["good " * 600]  # the tiny model has 512 positions
    out = tmp_path / "too-long.jsonl"
    with pytest.raises(DataError, match="more than the model's 512"):
        ray_engine.score_rows_on_ray(str(tiny_model_dir), "transformers", OPTIONS, task, rows(long), out,
                                     actors=1, chunk_rows=5)
    written = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert written == [f"id{i}" for i in range(len(written))] and len(written) in (0, 5, 10)  # whole chunks


@pytest.fixture(scope="module")
def head_node():
    """`ray start --head` on loopback with a Ray Client server, as a user starts an existing
    cluster (docs/backends.md); yields the client port. ``--block`` keeps the command in the
    foreground, so SIGTERM to it ends this node's processes and no other cluster's (`ray stop`
    would end every Ray process on the machine). Its own temp dir keeps `auto` of other
    clusters unchanged."""
    pytest.importorskip("grpc", reason="Ray Client needs ray[client], part of the `ray` extra")
    gcs, client = free_loopback_port(), free_loopback_port()
    temp = tempfile.mkdtemp(prefix="hs-ray-")  # short: Ray's socket paths live under it
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
               "--node-ip-address", "127.0.0.1", "--port", str(gcs), "--ray-client-server-port", str(client),
               "--num-cpus", "3", "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp]
    # Workers import this checkout's howsure; no 30 s drain on SIGTERM (nothing to drain).
    env = dict(os.environ, PYTHONPATH=str(SRC), RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")

    def serving() -> bool:
        try:
            socket.create_connection(("127.0.0.1", client), timeout=1).close()
            return True
        except OSError:
            return False

    try:
        with background_server(command, ready=serving, timeout_s=240, env=env, stop_timeout_s=60,
                               what=f"ray start --head (client port {client})"):
            yield client
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_client_address_equals_single_process(head_node, tiny_model_dir, tmp_path):
    """`howsure score --engine ray --address ray://127.0.0.1:PORT` against the head node above:
    Ray Data cannot run its executor in a Ray Client process, so the pipeline runs in an actor
    of the cluster and the driver fetches the chunks; the file equals single-process scoring."""
    texts = TEXTS[:300]  # two chunks of the CLI's 256
    source = tmp_path / "texts.csv"
    source.write_text("text\n" + "".join(f"{t}\n" for t in texts))
    out = tmp_path / "client.jsonl"
    command = [sys.executable, "-m", "howsure", "score", "-i", str(source), "-o", str(out), "-m", str(tiny_model_dir),
               "--engine", "ray", "--address", f"ray://127.0.0.1:{head_node}", "--actors", "2"]
    done = subprocess.run(command, env=dict(os.environ, PYTHONPATH=str(SRC)), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "scored 300 text(s), 0 already done" in done.stdout
    reference = tmp_path / "single.jsonl"
    the_rows = TextRows(list(range(len(texts))), texts, [str(i) for i in range(len(texts))], [None] * len(texts))
    score_rows(load_backend(str(tiny_model_dir)), load_task("sentiment"), the_rows, reference,
               source=str(source), columns={"text": "text", "id": None, "label": None})
    assert out.read_bytes() == reference.read_bytes()
    assert json.loads(meta_path(out).read_text())["model"] == json.loads(meta_path(reference).read_text())["model"]
