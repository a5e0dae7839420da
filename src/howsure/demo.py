"""Moved to howsure.pipelines.demo; these names stay importable."""

from howsure.pipelines.demo import SAMPLE, STAGES, DemoConfig, DemoResult, StageClock, run_demo

__all__ = ["SAMPLE", "STAGES", "DemoConfig", "DemoResult", "StageClock", "run_demo"]
