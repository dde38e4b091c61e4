"""Prometheus metrics, correct across worker processes.

`files-service serve` points PROMETHEUS_MULTIPROC_DIR at a fresh directory
before the workers start, so every worker writes its samples there and any
worker's /metrics adds them all up. Without it (tests, embedding), the
process-local default registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

REQUESTS = Counter(
    "files_http_requests_total", "HTTP requests by route template, method and status.", ["route", "method", "status"]
)
LATENCY = Histogram(
    "files_http_request_duration_seconds",
    "Time from request start to the last byte of the response.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
BYTES_RECEIVED = Counter("files_bytes_received_total", "Upload bytes received in request bodies.")
BYTES_SERVED = Counter("files_bytes_served_total", "Content bytes sent in downloads.")
SESSIONS = Counter("files_sessions_total", "Upload sessions by what happened to them.", ["event"])
DEDUPLICATED = Counter("files_uploads_deduplicated_total", "Completed uploads whose content was stored already.")
BYTES_SAVED = Counter("files_dedup_bytes_saved_total", "Bytes not stored again thanks to deduplication.")
SWEEPS = Counter("files_sweeper_runs_total", "Sweeps run by this service.")


class BlobStoreStats:
    """The blob store's size as the last sweep counted it (kept in Redis, so every worker agrees)."""

    def __init__(self, blobs: int, bytes: int) -> None:
        self.blobs = blobs
        self.bytes = bytes

    def collect(self):
        yield GaugeMetricFamily("files_blob_store_blobs", "Blobs in the store at the last sweep.", value=self.blobs)
        yield GaugeMetricFamily(
            "files_blob_store_bytes", "Bytes of blobs in the store at the last sweep.", value=self.bytes
        )


def exposition(stats: BlobStoreStats) -> bytes:
    """The text format of every metric, summed over workers when running several."""
    registry = REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    store = CollectorRegistry()
    store.register(stats)
    return generate_latest(registry) + generate_latest(store)


class Counters:
    """The core's `Observer`: what the upload core reports, counted in the metrics above."""

    def session(self, event: str) -> None:
        SESSIONS.labels(event).inc()

    def deduplicated(self, size: int) -> None:
        DEDUPLICATED.inc()
        BYTES_SAVED.inc(size)
