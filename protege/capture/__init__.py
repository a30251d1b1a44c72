"""Capture: build traces from calls, write them off the hot path."""

from __future__ import annotations

from protege.capture.extract import build_trace, tools_called, tools_offered
from protege.capture.stream import StreamAccumulator
from protege.capture.writer import CaptureWriter, WriterConfig

__all__ = [
    "CaptureWriter",
    "StreamAccumulator",
    "WriterConfig",
    "build_trace",
    "tools_called",
    "tools_offered",
]
