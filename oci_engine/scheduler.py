"""Continuous batching: which tokens of which sequences go into the next forward pass.

Each step has a token budget. Running sequences come first, in arrival order, so decoding never
waits behind a long prompt: a prompt that does not fit the remaining budget is prefilled in chunks
over several steps (chunked prefill). Waiting sequences are admitted first-come first-served while
budget, sequence slots and KV blocks last. When the pool runs out, the most recently admitted
running sequence is preempted: its blocks are released (they stay in the prefix cache) and it goes
back to the front of the queue, to be recomputed from its prompt and the tokens it has already
produced, so its output is unchanged.

Cache-aware admission: a waiting sequence whose next uncached block is being computed in this very
step by another sequence (the same system prompt in a batch of requests, or the n samples of one
request) is passed over for one step instead of computing the same prefix a second time; the next
step finds those blocks cached. Everyone else is still admitted in arrival order.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from oci_engine.kv_cache_manager import KVCacheManager
from oci_engine.sequence import Sequence, SequenceStatus


@dataclass(slots=True)
class ScheduledBatch:
    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.seqs

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)


class Scheduler:
    def __init__(self, kv: KVCacheManager, max_num_seqs: int = 256, max_num_batched_tokens: int = 2048):
        if max_num_seqs < 1 or max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be positive")
        self.kv = kv
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self.cache_aware = True  # False: plain FCFS admission (bench/throughput --shared-prefix compares)

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.max_num_batched_tokens
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_uncomputed_tokens, budget)
            while not self.kv.allocate(seq, n):
                victim = self.running.pop()
                self._preempt(victim)
                batch.preempted.append(victim)
                if victim is seq:
                    break
            else:
                batch.seqs.append(seq)
                batch.num_new_tokens.append(n)
                budget -= n
                i += 1
        # Admitting while preempting would hand the freed blocks straight back to a newcomer.
        if not self.waiting or batch.preempted:
            return batch
        pending = self._pending_keys(batch) if self.kv.enable_prefix_caching and self.cache_aware else None
        w = 0
        while w < len(self.waiting) and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[w]
            cached = self.kv.find_cached_prefix(seq)
            if pending and self._computing_next_block(seq, len(cached), pending):
                w += 1
                continue
            n = min(len(seq) - len(cached) * self.kv.block_size, budget)
            if not self.kv.allocate(seq, n, cached):
                break
            del self.waiting[w]
            if pending is not None:
                pending.update(self._new_full_keys(seq, n))
            seq.status = SequenceStatus.RUNNING
            if seq.num_cached_tokens is None:
                seq.num_cached_tokens = min(len(cached) * self.kv.block_size, seq.num_prompt_tokens)
                seq.first_scheduled_time = time.monotonic()
            self.running.append(seq)
            batch.seqs.append(seq)
            batch.num_new_tokens.append(n)
            budget -= n
        return batch

    def _new_full_keys(self, seq: Sequence, n: int) -> list[bytes]:
        """Keys of the blocks that computing n more tokens of seq completes."""
        bs = self.kv.block_size
        first, end = seq.num_computed_tokens // bs, (seq.num_computed_tokens + n) // bs
        return self.kv.block_keys(seq, end)[first:end] if end > first else []

    def _pending_keys(self, batch: ScheduledBatch) -> set[bytes]:
        keys: set[bytes] = set()
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            keys.update(self._new_full_keys(seq, n))
        return keys

    def _computing_next_block(self, seq: Sequence, num_cached: int, pending: set[bytes]) -> bool:
        """Whether the first block of seq past its cached prefix is being computed this step."""
        if seq.wants_prompt_logprobs or num_cached >= (len(seq) - 1) // self.kv.block_size:
            return False  # it would not use the cache, or only its always-computed last block is left
        return self.kv.block_keys(seq, num_cached + 1)[num_cached] in pending

    def _preempt(self, seq: Sequence) -> None:
        self.kv.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def mark_computed(self, batch: ScheduledBatch) -> None:
        """After the forward pass: the scheduled tokens' K/V are in the pool."""
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            seq.num_computed_tokens += n
            self.kv.cache_computed_blocks(seq)

    def finish(self, seq: Sequence, reason: str, stop_reason: int | str | None = None) -> None:
        if seq.is_finished:
            return
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self.kv.cache_computed_blocks(seq)
        self.kv.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        seq.stop_reason = stop_reason
        seq.finished_time = time.monotonic()

    def abort(self, request_id: str) -> list[Sequence]:
        """Finish every sequence of a request now, releasing its blocks."""
        seqs = [s for s in (*self.running, *self.waiting) if s.request_id == request_id]
        for seq in seqs:
            self.finish(seq, "abort")
        return seqs
