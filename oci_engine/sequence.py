"""One sequence being generated: its tokens, its place in the KV pool, and its progress.

A request with SamplingParams.n > 1 becomes n sequences sharing the prompt (the prefix cache lets
them share its blocks too).
"""
from __future__ import annotations

import enum
import itertools
import time
from typing import Any

_ids = itertools.count()


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    __slots__ = (
        "seq_id", "request_id", "index", "token_ids", "num_prompt_tokens", "params", "status",
        "block_table", "block_keys", "num_registered_blocks", "num_computed_tokens",
        "num_cached_tokens", "num_preemptions", "finish_reason", "stop_reason", "arrival_time",
        "first_scheduled_time", "first_token_time", "finished_time", "logprobs", "prompt_logprobs",
        "cumulative_logprob", "seed",
    )

    def __init__(self, request_id: str, prompt_token_ids: list[int], params: Any, index: int = 0,
                 arrival_time: float | None = None, seed: int | None = None):
        self.seq_id = next(_ids)
        self.request_id = request_id
        self.index = index
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.seed = seed
        self.status = SequenceStatus.WAITING
        self.block_table: list[int] = []
        self.block_keys: list[bytes] = []  # chained keys of full blocks, computed as tokens arrive
        self.num_registered_blocks = 0  # leading blocks of block_table already in the prefix index
        self.num_computed_tokens = 0  # tokens whose K/V are in the pool
        self.num_cached_tokens: int | None = None  # prompt tokens served by the prefix cache (first admission)
        self.num_preemptions = 0
        self.finish_reason: str | None = None  # "stop" | "length" | "abort"
        self.stop_reason: int | str | None = None
        self.arrival_time = time.monotonic() if arrival_time is None else arrival_time
        self.first_scheduled_time: float | None = None
        self.first_token_time: float | None = None
        self.finished_time: float | None = None
        self.logprobs: list[dict[int, Any]] | None = [] if getattr(params, "logprobs", None) is not None else None
        self.prompt_logprobs: list[dict[int, Any] | None] | None = None
        self.cumulative_logprob = 0.0

    def __len__(self) -> int:
        return len(self.token_ids)

    def __repr__(self) -> str:
        return (f"Sequence({self.request_id}#{self.index}, {self.status.value}, len={len(self)}, "
                f"computed={self.num_computed_tokens}, blocks={len(self.block_table)})")

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.token_ids[: self.num_prompt_tokens]

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def wants_prompt_logprobs(self) -> bool:
        return getattr(self.params, "prompt_logprobs", None) is not None
