"""The ``howsure`` command line. Each module registers its commands on `howsure.cli.app.app`;
importing this package imports them all, so `app` here has every command.

Imports here stay light: commands import torch and the heavy libraries inside their bodies, so
``howsure thresholds`` and ``howsure route`` start quickly.
"""

from howsure.cli.app import app, fail
from howsure.cli import scoring  # noqa: F401  score, inspect, models, tune-task
from howsure.cli import evaluation  # noqa: F401  evaluate, report
from howsure.cli import decisions  # noqa: F401  thresholds, route, plan
from howsure.cli import demo  # noqa: F401  demo
from howsure.cli import service  # noqa: F401  serve, users, tokens
from howsure.cli import feedback  # noqa: F401  recalibrate, policy, drift, export
from howsure.cli import datasets  # noqa: F401  datasets seed-sentiment, datasets seed-cwc
from howsure.cli import compare  # noqa: F401  compare
from howsure.cli import finetune  # noqa: F401  finetune
from howsure.cli import probe  # noqa: F401  probe fit
from howsure.cli import qa_report  # noqa: F401  qa-report
from howsure.cli import finetune_verbal  # noqa: F401  finetune-verbal
from howsure.cli import qa  # noqa: F401  qa, datasets closed-qa
from howsure.errors import HowsureError

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point (``howsure``): every command is registered by the imports above."""
    try:
        app(standalone_mode=True)
    except HowsureError as exc:  # pragma: no cover - typer's standalone mode re-raises
        raise SystemExit(fail(str(exc)).exit_code) from None
