"""`howsure.backends.openmp`: the calling thread's OpenMP pool is handed back, never a crash."""

import threading

import torch

from howsure.backends import openmp


def test_an_openmp_runtime_is_found_and_pauses_the_calling_threads_pool():
    torch.set_num_threads(2)
    x = torch.randn(512, 1024)
    (x * x).sum()  # a parallel region: this thread now has a pool
    assert any("gomp" in path or "omp" in path for path in openmp._openmp_libraries())
    assert openmp.release_thread_pool() is True
    # The runtime stays usable: parallel work on this thread and another one still computes.
    assert torch.equal(x * 2, x + x)
    results = []
    worker = threading.Thread(target=lambda: results.append(torch.equal(x * 3, x + x + x)))
    worker.start()
    worker.join()
    assert results == [True]


def test_without_a_runtime_nothing_is_released(monkeypatch):
    monkeypatch.setattr(openmp, "_openmp_libraries", lambda: [])
    assert openmp.release_thread_pool() is False
    monkeypatch.setattr(openmp, "_openmp_libraries", lambda: ["/nonexistent/libgomp.so.1"])
    assert openmp.release_thread_pool() is False
