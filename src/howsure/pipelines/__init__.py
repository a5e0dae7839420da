"""Pipelines: whole jobs built from the layers below (evaluate, compare, demo)."""
