"""Library entry points the command line and the service call: each runs one whole job
(evaluate, compare, demo, tune a task, certify thresholds, route) and returns what it made."""
