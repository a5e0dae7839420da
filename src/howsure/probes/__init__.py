"""Linear probes on a model's hidden states: cross-validated per layer with grouped folds, saved
as JSON with the model and task they read (see `howsure.probes.crossval`, `howsure.probes.probe`)."""

from howsure.probes.probe import LinearProbe, load_probe, save_probe

__all__ = ["LinearProbe", "load_probe", "save_probe"]
