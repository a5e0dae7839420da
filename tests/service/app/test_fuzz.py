"""schemathesis against the service's own OpenAPI document: generated requests, valid and
invalid, to every operation, with an admin token and without one; no answer may be a 5xx.

Bounded for the test suite: a few dozen examples per operation and generation mode. On
PostgreSQL, whose text type refuses NUL characters, and on SQLite."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.timeout(240)]

EXAMPLES = 25


def test_no_server_errors(live_service):
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    env, url = live_service(threshold=0.5, audit_rate=0.5)
    env.classify(["something to queue", "and another"])  # so queue operations find items
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    tokens = {"admin": env.headers("ann"), "none": {}}
    failures: list[str] = []
    calls = 0
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for who, headers in tokens.items():
                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(max_examples=EXAMPLES if who == "admin" else 3, deadline=None, database=None,
                          phases=[Phase.generate], suppress_health_check=list(HealthCheck))
                def run(case):
                    nonlocal calls
                    calls += 1
                    response = case.call(base_url=url, headers=headers, timeout=30)
                    if response.status_code >= 500:
                        failures.append(f"{operation.label} ({mode.value}, {who}): {response.status_code} "
                                        f"{response.text[:200]} for {case.body!r:.200}")

                try:
                    run()
                except Unsatisfiable:
                    assert mode == GenerationMode.NEGATIVE  # no parameter to break (GET /healthz)
    assert not failures, "\n".join(failures[:10])
    assert calls > 10 * len(operations)
