"""Per-sequence block tables over the shared BlockPool, with automatic prefix caching.

A full block's key is a digest of its parent block's key and its own token ids, so a key names the
whole prefix up to and including that block. Admission walks a sequence's full blocks from the
start and takes every block already in the pool (verified token by token); only the rest is
computed. Blocks are entered into the cache as soon as their K/V are written, whether they hold
prompt or generated tokens, so the next round of a conversation (history + reply + new message)
finds the reply cached as well.
"""
from __future__ import annotations

import hashlib
from array import array

from oci_engine.block_pool import Block, BlockPool
from oci_engine.sequence import Sequence


def block_key(parent: bytes | None, token_ids) -> bytes:
    # A 128-bit digest makes accidental chain collisions negligible; the token check on lookup
    # covers the block itself.
    h = hashlib.blake2b(digest_size=16)
    if parent is not None:
        h.update(parent)
    h.update(array("q", token_ids).tobytes())
    return h.digest()


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int = 16, enable_prefix_caching: bool = True):
        if block_size < 1:
            raise ValueError("block_size must be positive")
        self.pool = BlockPool(num_blocks)
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.num_query_tokens = 0  # prompt tokens looked up in the cache at admission
        self.num_hit_tokens = 0

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def capacity_tokens(self) -> int:
        return self.pool.num_blocks * self.block_size

    @property
    def hit_rate(self) -> float:
        return self.num_hit_tokens / self.num_query_tokens if self.num_query_tokens else 0.0

    def block_keys(self, seq: Sequence, num_full_blocks: int) -> list[bytes]:
        """The chained keys of seq's first num_full_blocks blocks (computed once, kept on seq)."""
        keys, bs = seq.block_keys, self.block_size
        for i in range(len(keys), num_full_blocks):
            keys.append(block_key(keys[i - 1] if i else None, seq.token_ids[i * bs:(i + 1) * bs]))
        return keys

    def find_cached_prefix(self, seq: Sequence) -> list[Block]:
        """Blocks holding the longest cached prefix of a sequence being admitted. At least one token
        is always left to compute: its logits are what the next token is sampled from."""
        if not self.enable_prefix_caching or seq.wants_prompt_logprobs:
            return []  # prompt logprobs need every prompt position's logits, so nothing is skipped
        bs = self.block_size
        n = (len(seq) - 1) // bs
        keys = self.block_keys(seq, n)
        hits = []
        for i in range(n):
            block = self.pool.lookup(keys[i], tuple(seq.token_ids[i * bs:(i + 1) * bs]))
            if block is None:
                break
            hits.append(block)
        return hits

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def allocate(self, seq: Sequence, num_new_tokens: int, cached: list[Block] = ()) -> bool:
        """Give `seq` room for `num_new_tokens` more tokens beyond those computed (and beyond the
        `cached` prefix blocks, for a sequence being admitted). Returns False, changing nothing,
        when the pool cannot provide the blocks."""
        pool = self.pool
        total = seq.num_computed_tokens + len(cached) * self.block_size + num_new_tokens
        need = self.blocks_for(total) - len(seq.block_table) - len(cached)
        reclaimed = sum(1 for b in cached if b.ref_count == 0)
        if need > pool.num_free - reclaimed:
            return False
        if not seq.block_table:
            self.num_query_tokens += len(seq)
            self.num_hit_tokens += len(cached) * self.block_size
        for block in cached:
            pool.touch(block)
            seq.block_table.append(block.block_id)
        if cached:
            seq.num_computed_tokens += len(cached) * self.block_size
            seq.num_registered_blocks = len(seq.block_table)
        for _ in range(max(need, 0)):
            seq.block_table.append(pool.allocate().block_id)
        return True

    def cache_computed_blocks(self, seq: Sequence) -> None:
        """Enter the sequence's newly completed blocks into the prefix index."""
        n_full = min(seq.num_computed_tokens // self.block_size, len(seq.block_table))
        if not self.enable_prefix_caching or n_full <= seq.num_registered_blocks:
            return
        keys, bs = self.block_keys(seq, n_full), self.block_size
        for i in range(seq.num_registered_blocks, n_full):
            block = self.pool.blocks[seq.block_table[i]]
            self.pool.register(block, keys[i], tuple(seq.token_ids[i * bs:(i + 1) * bs]))
        seq.num_registered_blocks = n_full

    def free(self, seq: Sequence) -> None:
        # Tail first: the free queue is the eviction order, and a prefix's last blocks are the ones
        # least likely to be shared, so they should be evicted before its first blocks.
        for block_id in reversed(seq.block_table):
            self.pool.release(self.pool.blocks[block_id])
        seq.block_table = []
        seq.num_registered_blocks = 0

    def slot(self, seq: Sequence, position: int) -> int:
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size
