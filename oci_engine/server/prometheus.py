"""Server metrics in Prometheus' text exposition format (no client library needed for a handful of
counters and histograms)."""
from __future__ import annotations

import bisect
import threading

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    def __init__(self, name: str, help_text: str, buckets=LATENCY_BUCKETS):
        self.name, self.help, self.buckets = name, help_text, tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        running = 0
        for bound, count in zip(self.buckets, self.counts):
            running += count
            lines.append(f'{self.name}_bucket{{le="{bound}"}} {running}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.n}')
        lines.append(f"{self.name}_sum {self.total:.6f}")
        lines.append(f"{self.name}_count {self.n}")
        return lines


class ServerMetrics:
    """Counters and histograms the server updates; gauges are read from the engine at scrape time."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counters = {
            "oci_requests_total": 0,
            "oci_request_errors_total": 0,
            "oci_prompt_tokens_total": 0,
            "oci_cached_prompt_tokens_total": 0,
            "oci_generation_tokens_total": 0,
            "oci_sandbox_executions_total": 0,
            "oci_sandbox_failures_total": 0,
        }
        self.ttft = Histogram("oci_time_to_first_token_seconds", "Time from request arrival to its first token.")
        self.tpot = Histogram("oci_time_per_output_token_seconds", "Mean time between output tokens of a request.")
        self.sandbox = Histogram("oci_sandbox_execution_seconds", "Wall time of one sandboxed cell.")

    def inc(self, name: str, by: int = 1) -> None:
        with self._lock:
            self.counters[name] += by

    def observe(self, hist: Histogram, value: float) -> None:
        with self._lock:
            hist.observe(value)

    def render(self, gauges: dict[str, float]) -> str:
        lines = []
        with self._lock:
            for name, value in self.counters.items():
                lines += [f"# TYPE {name} counter", f"{name} {value}"]
            for hist in (self.ttft, self.tpot, self.sandbox):
                lines += hist.render()
        for name, value in gauges.items():
            lines += [f"# TYPE {name} gauge", f"{name} {float(value):.6g}"]
        return "\n".join(lines) + "\n"
