"""The ``howsure`` command line. Each module registers its commands on `howsure.cli.app.app`.

Imports here stay light: commands import torch and the heavy libraries inside their bodies, so
``howsure thresholds`` and ``howsure route`` start in about a second.
"""

from howsure.cli.app import app, main
from howsure.cli import scoring  # noqa: F401  score, inspect, models, tune-task
from howsure.cli import evaluation  # noqa: F401  evaluate, report
from howsure.cli import decisions  # noqa: F401  thresholds, route, plan
from howsure.cli import demo  # noqa: F401  demo
from howsure.cli import service  # noqa: F401  serve, users, tokens
from howsure.cli import feedback  # noqa: F401  recalibrate, policy, drift, export

__all__ = ["app", "main"]
