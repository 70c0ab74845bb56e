"""Latency of each request and the state of the engine, as the server exposes them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RequestMetrics:
    arrival_time: float  # time.monotonic() clock throughout
    num_prompt_tokens: int
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    finished_time: float | None = None
    num_generation_tokens: int = 0
    num_cached_tokens: int = 0

    @property
    def time_to_first_token(self) -> float | None:
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def queue_time(self) -> float | None:
        return None if self.first_scheduled_time is None else self.first_scheduled_time - self.arrival_time

    @property
    def time_per_output_token(self) -> float | None:
        """Mean gap between output tokens after the first (None with fewer than two tokens)."""
        if self.num_generation_tokens < 2 or self.first_token_time is None or self.last_token_time is None:
            return None
        return (self.last_token_time - self.first_token_time) / (self.num_generation_tokens - 1)

    @property
    def e2e_latency(self) -> float | None:
        return None if self.finished_time is None else self.finished_time - self.arrival_time


@dataclass(slots=True)
class EngineStats:
    num_running: int
    num_waiting: int
    num_blocks: int
    num_blocks_used: int
    num_blocks_free: int
    num_blocks_cached: int  # blocks in the prefix index, in use or free
    block_size: int
    prefix_cache_hit_rate: float  # cached / looked-up prompt tokens since start
    num_preemptions: int
    prompt_tokens_total: int
    cached_tokens_total: int
    generation_tokens_total: int

    @property
    def kv_cache_usage(self) -> float:
        return self.num_blocks_used / self.num_blocks if self.num_blocks else 0.0

    def as_gauges(self, prefix: str = "oci_") -> dict[str, float]:
        """Flat name -> value, ready for a Prometheus exposition."""
        return {
            f"{prefix}num_requests_running": self.num_running,
            f"{prefix}num_requests_waiting": self.num_waiting,
            f"{prefix}kv_blocks_total": self.num_blocks,
            f"{prefix}kv_blocks_used": self.num_blocks_used,
            f"{prefix}kv_blocks_free": self.num_blocks_free,
            f"{prefix}kv_blocks_cached": self.num_blocks_cached,
            f"{prefix}kv_cache_usage_ratio": self.kv_cache_usage,
            f"{prefix}prefix_cache_hit_rate": self.prefix_cache_hit_rate,
            f"{prefix}num_preemptions": self.num_preemptions,
        }
