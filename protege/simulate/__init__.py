"""Agent simulators that drive real workloads through the gateway."""

from __future__ import annotations

from protege.simulate.bfcl import SimulateConfig, SimulateReport, simulate_bfcl

__all__ = ["SimulateConfig", "SimulateReport", "simulate_bfcl"]
