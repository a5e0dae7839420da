"""Failed token attempts are throttled per client address: after the allowed failures in the
window every attempt from that address is 429 with Retry-After (a right token too), on the API
and on the sign-in form, until the window frees up."""

from __future__ import annotations

import pytest

from howsure.errors import DataError
from howsure.service.throttle import FailureThrottle, Throttled, address_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_refused_after_its_failures_until_the_oldest_ages_out():
    clock = FakeClock()
    throttle = FailureThrottle(3, 60, clock=clock)
    key = [address_key("10.0.0.7")]
    for step in range(3):
        throttle.check(key)
        throttle.failed(key)
        clock.now += 10  # failures at 1000, 1010, 1020
    with pytest.raises(Throttled, match=r"from this address \(3 in the last 60 s\); try again in 30 s") as refused:
        throttle.check(key)
    assert refused.value.retry_after_s == pytest.approx(30) and refused.value.retry_after_header == "30"
    throttle.check([address_key("10.0.0.8")])  # another address is not affected
    clock.now = 1060.5  # the failure at 1000 has aged out: one more try is allowed
    throttle.check(key)
    throttle.failed(key)
    with pytest.raises(Throttled):
        throttle.check(key)


def test_the_throttle_forgets_the_oldest_keys_beyond_its_bound():
    throttle = FailureThrottle(1, 60, max_keys=2, clock=FakeClock())
    for host in ("a", "b", "c"):
        throttle.failed([address_key(host)])
    throttle.check([address_key("a")])  # forgotten
    with pytest.raises(Throttled):
        throttle.check([address_key("c")])


@pytest.mark.parametrize("kwargs, match", [({"max_failures": 0}, "max_failures must be an integer >= 1, got 0"),
                                           ({"window_s": 0}, "window_s must be > 0, got 0")])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(DataError, match=match):
        FailureThrottle(**kwargs)


def test_wrong_bearer_tokens_are_throttled_with_retry_after(make_service):
    env = make_service(auth_failures=5, auth_window_s=60)
    wrong = {"Authorization": "Bearer hs_guess"}
    for _ in range(5):
        assert env.client.get("/v1/stats", headers=wrong).status_code == 401
    refused = env.client.get("/v1/stats", headers=wrong)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "too_many_requests"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # The right token from the same address waits too: else one lucky guess would get through.
    assert env.client.get("/v1/stats", headers=env.headers("rita")).status_code == 429
    assert env.client.post("/v1/classify", json={"text": "x"}, headers=env.headers("cody")).status_code == 429


def test_right_tokens_do_not_count_against_the_address(make_service):
    env = make_service(auth_failures=2)
    for _ in range(10):
        assert env.client.get("/v1/stats", headers=env.headers("rita")).status_code == 200


def test_wrong_tokens_on_the_sign_in_form_are_throttled(make_service):
    env = make_service(auth_failures=3)
    for _ in range(3):
        assert env.post_login("hs_wrong").status_code == 401
    refused = env.post_login(env.tokens["rita"])
    assert refused.status_code == 429
    assert "too many failed authentication attempts" in refused.text
    assert int(refused.headers["Retry-After"]) >= 1
