"""A model-free forward pass for accounting tests: the "KV cache" stores the token id written to
each slot, so every step can check that a sequence's block table really holds its own context
(prefix-cache hits included), and the "model" picks the next token as a function of the whole
context, so a recomputed sequence must produce exactly the tokens it would have without preemption."""
from __future__ import annotations

import hashlib

import numpy as np

from oci_engine.scheduler import ScheduledBatch


def next_token(context: list[int], vocab: int = 50) -> int:
    digest = hashlib.blake2b(np.asarray(context, dtype=np.int64).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % vocab


class FakeForward:
    def __init__(self, kv):
        self.kv = kv
        self.slots = np.full(kv.num_blocks * kv.block_size, -1, dtype=np.int64)

    def __call__(self, batch: ScheduledBatch) -> dict[int, int]:
        """Runs one step; returns {seq_id: sampled token} for sequences that reached their end."""
        sampled = {}
        for seq, n in zip(batch.seqs, batch.num_new_tokens):
            start = seq.num_computed_tokens
            for pos in range(start, start + n):
                self.slots[self.kv.slot(seq, pos)] = seq.token_ids[pos]
            ctx = start + n
            held = [int(self.slots[self.kv.slot(seq, p)]) for p in range(ctx)]
            assert held == seq.token_ids[:ctx], f"{seq}: KV blocks do not hold the sequence's context"
            if ctx == len(seq):
                sampled[seq.seq_id] = next_token(seq.token_ids)
        return sampled


def fake_forward_for(kv) -> FakeForward:
    """One fake KV store per pool, so cached blocks keep their contents across runs."""
    if not hasattr(kv, "_fake_forward"):
        kv._fake_forward = FakeForward(kv)
    return kv._fake_forward
