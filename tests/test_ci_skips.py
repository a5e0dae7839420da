"""The CI guard of tests/conftest.py: in CI every skip but a ``cuda`` or ``cpu_isa`` one is a failure, elsewhere
skips stay skips. Run on small test files in a fresh pytest with this suite's conftest."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parent / "conftest.py"

SKIPPING_TESTS = """
import pytest

@pytest.fixture
def database():
    pytest.skip("no database server here")

def test_skips_in_its_body():
    pytest.skip("chromium is not installed")

@pytest.mark.skipif(True, reason="../shared is absent")
def test_skipped_by_a_marker():
    pass

def test_skips_in_a_fixture(database):
    pass

@pytest.mark.cuda
@pytest.mark.skipif(True, reason="needs a CUDA GPU")
def test_on_the_gpu():
    pass

@pytest.mark.cpu_isa
@pytest.mark.skipif(True, reason="oneDNN cannot pack bf16 weights on this CPU")
def test_on_a_newer_cpu():
    pass

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_to_fail():
    assert False

def test_passes():
    pass
"""

MODULE_SKIP = """
import pytest

pytest.importorskip("a_module_that_is_not_installed")

def test_never_collected():
    pass
"""


@pytest.fixture
def suite(pytester):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_skipping=SKIPPING_TESTS)
    return pytester


def outcomes(result) -> dict[str, str]:
    """test name -> outcome as pytest -v lists it (a test that fails in setup lists as ERROR)."""
    found = {}
    for line in result.outlines:
        words = line.split()
        if len(words) >= 2 and words[0].startswith("test_skipping.py::"):
            found[words[0].split("::")[-1]] = words[1]
    return found


def test_in_ci_a_skip_fails_unless_the_test_is_marked_cuda_or_cpu_isa(suite, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-v", "-p", "no:cacheprovider")
    assert outcomes(result) == {
        "test_skips_in_its_body": "FAILED",
        "test_skipped_by_a_marker": "ERROR",  # skipif skips in setup: a setup failure
        "test_skips_in_a_fixture": "ERROR",
        "test_on_the_gpu": "SKIPPED",
        "test_on_a_newer_cpu": "SKIPPED",
        "test_known_to_fail": "XFAIL",
        "test_passes": "PASSED",
    }
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # Each failure says why the test skipped, so CI's log names what is missing.
    text = result.stdout.str()
    for reason in ("chromium is not installed", "../shared is absent", "no database server here"):
        assert f"skipped in CI, where only tests marked 'cuda' or 'cpu_isa' may skip: {reason}" in text


@pytest.mark.parametrize("ci", [None, "", "0", "false"])
def test_outside_ci_skips_stay_skips(suite, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    result = suite.runpytest("-v", "-p", "no:cacheprovider")
    assert outcomes(result) == {
        "test_skips_in_its_body": "SKIPPED",
        "test_skipped_by_a_marker": "SKIPPED",
        "test_skips_in_a_fixture": "SKIPPED",
        "test_on_the_gpu": "SKIPPED",
        "test_on_a_newer_cpu": "SKIPPED",
        "test_known_to_fail": "XFAIL",
        "test_passes": "PASSED",
    }
    assert result.ret == pytest.ExitCode.OK


def test_in_ci_a_module_skipped_while_collected_fails(pytester, monkeypatch):
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_needs_a_module=MODULE_SKIP)
    monkeypatch.setenv("CI", "1")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret != pytest.ExitCode.OK
    assert "could not import 'a_module_that_is_not_installed'" in result.stdout.str()
    monkeypatch.delenv("CI")
    assert pytester.runpytest("-p", "no:cacheprovider").ret == pytest.ExitCode.NO_TESTS_COLLECTED


ROOT = CONFTEST.parents[1]


def test_ci_run_sets_ci_itself_and_runs_make_test(tmp_path):
    import os
    import subprocess

    fake_make = tmp_path / "make"
    fake_make.write_text('#!/bin/sh\necho "CI=$CI make $*"\nexit 5\n')
    fake_make.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    done = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "CI=true make test"
    assert done.returncode == 5  # make's status (here pytest's "no tests ran") is CI's


def test_make_test_lists_skip_reasons_and_runs_the_whole_suite():
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.fail("make is not installed")
    # -n prints the recipe without running it; BIN/howsure is made to look installed.
    done = subprocess.run(["make", "-n", "-o", ".venv/bin/howsure", "-o", "system-deps", "test"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    [command] = [line.split() for line in done.stdout.splitlines() if "pytest" in line]
    options = command[command.index("pytest") + 1:]
    assert "-rfEs" in options and "--strict-markers" in options
    # Nothing deselected, and nothing after it that could swallow pytest's exit status.
    assert not {"-m", "-k", "--deselect", "||", ";", "|"} & set(options)
