"""Commands that run the model: score, inspect, models."""

from howsure.cli.app import app, command  # noqa: F401
