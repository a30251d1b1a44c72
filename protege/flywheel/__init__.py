"""The flywheel: curate -> tasks -> pick -> dataset -> train -> evaluate ->
gate -> shadow -> promote or retire, incremental and resumable."""

from __future__ import annotations

from protege.flywheel.config import FlywheelConfig
from protege.flywheel.run import run_flywheel, run_status
from protege.flywheel.steps import FlywheelReport

__all__ = ["FlywheelConfig", "FlywheelReport", "run_flywheel", "run_status"]
