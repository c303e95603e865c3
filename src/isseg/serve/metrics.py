"""Prometheus metrics of one app, in a registry of its own (several apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Requests, latency, queue depth, in-flight inferences and errors per model and endpoint."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("isseg_requests", "HTTP requests answered", ["model", "endpoint", "code"],
                                registry=r)
        self.latency = Histogram("isseg_request_latency_seconds", "time from request to answer",
                                 ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference = Histogram("isseg_inference_seconds", "time of one inference (queue wait excluded)",
                                   ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("isseg_queue_depth", "requests admitted and not finished (waiting + running)",
                                 ["model"], registry=r)
        self.in_flight = Gauge("isseg_inferences_running", "inferences running now", ["model"], registry=r)
        self.errors = Counter("isseg_errors", "requests that failed, by kind", ["model", "kind"], registry=r)
        self.rejected = Counter("isseg_rejected", "requests refused because the model's queue was full",
                                ["model"], registry=r)
        self.unauthorized = Counter("isseg_unauthorized", "requests refused for a missing or invalid API key",
                                    registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
