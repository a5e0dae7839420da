"""The p-values of one threshold's null hypothesis "its error rate exceeds alpha", and the
fewest calibration items that can certify a target at all."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import special

from howsure.core.validation import check_choice, check_delta, check_target

METHODS = ("fallback", "fixed_sequence", "multistart")
DEFAULT_METHOD = "fallback"  # valid for iid data with no further condition
P_VALUES = ("binomial", "hoeffding_bentkus")


def binomial_p_value(errors: Any, n: Any, alpha: float) -> np.ndarray:
    """Exact binomial p-value of ``H: error rate > alpha`` from ``errors`` out of ``n``.

    Parameters
    ----------
    errors, n : array-like, broadcastable
        Error counts and item counts. Non-integers are accepted (the regularised incomplete
        beta function extends the binomial CDF continuously); the sample-size planner uses it.
    alpha : float
        Largest tolerated error rate, ``1 - target accuracy``.

    Returns
    -------
    ndarray
        ``P(Binomial(n, alpha) <= errors)``; 1 where ``n == 0`` or ``errors >= n``.
    """
    errors = np.asarray(errors, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    errors, n = np.broadcast_arrays(errors, n)
    out = np.ones(errors.shape)
    live = errors < n
    # P(X <= k) = I_{1-alpha}(n - k, k + 1), the binomial CDF through the incomplete beta.
    out[live] = special.betainc(n[live] - errors[live], errors[live] + 1.0, 1.0 - alpha)
    return out


def hoeffding_bentkus_p_value(errors: Any, n: Any, alpha: float) -> np.ndarray:
    """Hoeffding-Bentkus p-value of ``H: error rate > alpha`` (Bates et al., RCPS, 2021).

    Valid for any loss in [0, 1], hence more conservative than `binomial_p_value` on 0/1
    errors; offered for comparison with the LTT literature.

    Parameters
    ----------
    errors, n : array-like, broadcastable
    alpha : float

    Returns
    -------
    ndarray
        ``min(exp(-n * kl(min(r, alpha), alpha)), e * P(Binomial(n, alpha) <= ceil(n r)))``
        with ``r = errors / n``; 1 where ``n == 0``.
    """
    errors = np.asarray(errors, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    errors, n = np.broadcast_arrays(errors, n)
    rate = np.divide(errors, n, out=np.ones(errors.shape), where=n > 0)
    a = np.minimum(rate, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = special.xlogy(a, a / alpha) + special.xlogy(1 - a, (1 - a) / (1 - alpha))
    hoeffding = np.exp(-n * kl)
    bentkus = math.e * binomial_p_value(np.ceil(errors), n, alpha)
    return np.where(n > 0, np.minimum(np.minimum(hoeffding, bentkus), 1.0), 1.0)


_P_VALUE_FUNCTIONS = {"binomial": binomial_p_value, "hoeffding_bentkus": hoeffding_bentkus_p_value}


def p_value_function(name: str) -> Callable[[Any, Any, float], np.ndarray]:
    """The p-value function called ``name`` (one of `P_VALUES`); `PolicyError` otherwise."""
    return _P_VALUE_FUNCTIONS[check_choice(name, P_VALUES, "p-value")]


def min_items_to_certify(target_accuracy: float, delta: float, p_value: str = "binomial") -> int:
    """Fewest automated calibration items that can certify ``target_accuracy`` at all.

    Reached with zero errors: for the binomial p-value, the smallest ``m`` with
    ``target_accuracy ** m <= delta`` (59 for 0.95 / 0.05).
    """
    alpha = 1 - check_target(target_accuracy)
    delta = check_delta(delta)
    p_func = p_value_function(p_value)
    m = max(1, int(math.floor(math.log(delta) / math.log1p(-alpha))))
    while p_func(0, m, alpha) > delta:
        m += 1
    while m > 1 and p_func(0, m - 1, alpha) <= delta:
        m -= 1
    return m
