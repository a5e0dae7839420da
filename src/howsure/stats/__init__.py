"""Layer 3: numbers about predictions (metrics, binning, reliability, intervals, drift, splits).

Deliberately empty: importing one room must not import the others (the decision modules must
load without scipy.stats), so import the submodule you need, e.g. ``howsure.stats.metrics``."""
