"""Local ``evaluate`` metric modules shipped with the package (load them by path, offline)."""

from pathlib import Path

VSIBENCH_METRIC_PATH = str(Path(__file__).resolve().parent / "vsibench")
"""Folder of the VSI-Bench metric: ``evaluate.load(VSIBENCH_METRIC_PATH)``."""
