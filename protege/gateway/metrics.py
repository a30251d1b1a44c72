"""Prometheus metrics of one gateway instance (its own registry, so several
gateways in one process, as in tests, do not collide). Writer counters are
read at scrape time, so the hot path pays only for one counter and one
histogram observation."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _WriterCollector:
    def __init__(self, writer_ref: Any) -> None:
        self._writer_ref = writer_ref

    def collect(self) -> Any:
        writer = self._writer_ref()
        if writer is None:
            return
        s = writer.stats
        yield GaugeMetricFamily("protege_capture_queue_depth", "Traces waiting for the writer thread",
                                value=writer.queue_depth())
        for name, value, doc in (
            ("protege_capture_submitted", s.submitted, "Traces handed to the writer"),
            ("protege_capture_written", s.written, "Traces written to the store"),
            ("protege_capture_spooled", s.spooled, "Traces written to the spool file (store down or slow)"),
            ("protege_capture_replayed", s.replayed, "Spooled traces replayed into the store"),
            ("protege_capture_dropped", s.dropped, "Traces lost because the spool was full"),
            ("protege_capture_build_errors", s.build_errors, "Captures that failed to build a trace"),
            ("protege_capture_store_errors", s.store_errors, "Failed store writes"),
            ("protege_capture_dead_lettered", s.dead_lettered,
             "Traces the store refused, kept alone in the dead-letter file"),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily("protege_capture_store_up", "1 when the last store write succeeded",
                                value=1 if s.store_ok else 0)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "protege_gateway_requests", "Requests answered, by HTTP status, who served them and endpoint",
            ["status", "served_by", "endpoint"], registry=self.registry,
        )
        self.latency = Histogram(
            "protege_gateway_request_latency_seconds", "Time from request to last byte, as seen by the gateway",
            ["stream"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.ttft = Histogram(
            "protege_gateway_ttft_seconds", "Time to the first streamed byte from the teacher",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        # The metric keeps its name: dashboards scrape it.
        self.teacher_errors = Counter(
            "protege_gateway_upstream_errors", "Teacher failures by kind", ["kind"], registry=self.registry,
        )
        self.fallbacks = Counter(
            "protege_gateway_fallbacks", "Student answers replaced by the teacher's, by reason",
            ["reason"], registry=self.registry,
        )
        self.decisions = Counter(
            "protege_router_decisions", "Router decisions by target and reason", ["target", "reason"],
            registry=self.registry,
        )
        self.decision_time = Histogram(
            "protege_router_decision_seconds", "Time the router takes to pick a model",
            buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 5e-3, 1e-2, 5e-2), registry=self.registry,
        )
        self.student_latency = Histogram(
            "protege_student_latency_seconds", "Student generation time (validated or not)",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.tokens = Counter(
            "protege_tokens", "Tokens by who produced them and kind", ["served_by", "kind"], registry=self.registry,
        )
        # Pre-create the hot label sets so the first requests do not pay for it.
        self._children: dict[tuple[int, str, str], Any] = {}
        self._lat = {True: self.latency.labels("true"), False: self.latency.labels("false")}

    def observe(self, status: int, served_by: str, endpoint: str, stream: bool, seconds: float) -> None:
        key = (status, served_by, endpoint)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(str(status), served_by, endpoint)
        child.inc()
        self._lat[stream].observe(seconds)

    def watch_writer(self, writer_ref: Any) -> None:
        self.registry.register(_WriterCollector(writer_ref))

    def render(self) -> bytes:
        return generate_latest(self.registry)
