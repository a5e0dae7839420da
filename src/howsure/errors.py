"""Typed exceptions. The library raises these and never prints; the CLI turns them into one
clear line and a non-zero exit, the service into an HTTP 4xx.

Every message names the offending value and what was expected instead."""


class HowsureError(Exception):
    """Base class of every error howsure raises on purpose."""


class TaskError(HowsureError, ValueError):
    """The task definition is invalid (template, labels, verbalizers, examples)."""


class ModelError(HowsureError):
    """A model could not be found, verified or loaded."""


class DataError(HowsureError, ValueError):
    """Input data is malformed: missing column, empty text, bad probability, ..."""


class CalibrationError(HowsureError, ValueError):
    """A calibrator got input it cannot be fitted or evaluated on."""


class NotFittedError(CalibrationError):
    """predict/transform was called before fit."""


class PolicyError(HowsureError, ValueError):
    """A decision policy could not be certified, loaded or applied."""


class ScoresError(DataError, PolicyError, CalibrationError):
    """An array of scores, confidences, correctness or labels is malformed (wrong shape, NaN,
    outside [0, 1], mismatched lengths). One type for every validator in `howsure.core.validation`;
    it is a DataError, a PolicyError and a CalibrationError at once, so a caller that catches
    any of the three for its own inputs still catches it."""


class ResumeError(HowsureError):
    """An existing output file does not belong to the run being resumed."""


class StoreError(HowsureError):
    """The review store (SQLite / PostgreSQL) refused an operation: unknown item, user or
    policy version, a bad database URL."""


class DatabaseUnavailable(StoreError):
    """The database itself failed (connection lost, disk full, server down): the server's
    trouble, not the request's (the service answers 503 and logs the driver's message)."""


class ClaimError(StoreError):
    """A review conflicts with the queue's state: the item is claimed by someone else, its lease
    was taken over, or it is already reviewed (the service answers 409)."""


class AuthError(HowsureError):
    """A token is missing, unknown or revoked (401), or its role may not do this (403)."""
