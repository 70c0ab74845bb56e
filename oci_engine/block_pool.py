"""The physical KV blocks: reference counts, the free queue, and the prefix-cache index.

A block is a fixed number of token slots in every layer's KV cache. A block whose tokens are all
computed gets a key (see kv_cache_manager.block_key) and enters the index, so any sequence with the
same prefix can share it. When its last user lets go, the block goes to the back of the free queue
but keeps its key and contents: it is still a cache hit until the allocator reaches it at the front
of the queue. The free queue is therefore also the LRU eviction order, at no extra cost.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


class BlockAccountingError(RuntimeError):
    """A bug in the engine, never a user error: a block freed twice or allocated from an empty pool."""


@dataclass(slots=True)
class Block:
    block_id: int
    ref_count: int = 0
    key: bytes | None = None
    token_ids: tuple[int, ...] | None = None  # kept with the key so a hit is verified, not trusted


class BlockPool:
    def __init__(self, num_blocks: int):
        if num_blocks < 1:
            raise ValueError("the KV pool needs at least one block")
        self.blocks = [Block(i) for i in range(num_blocks)]
        # block_id -> None, front = next to reuse. OrderedDict gives O(1) removal from the middle,
        # which a cache hit on a free block needs.
        self._free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self._index: dict[bytes, int] = {}

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        """Blocks no sequence holds (some of them still hold cached prefixes)."""
        return len(self._free)

    @property
    def num_cached(self) -> int:
        """Blocks in the prefix-cache index, in use or not."""
        return len(self._index)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def allocate(self) -> Block:
        """Take the least recently used free block, evicting whatever prefix it cached."""
        if not self._free:
            raise BlockAccountingError("allocate() on an empty pool; callers must check num_free first")
        block_id, _ = self._free.popitem(last=False)
        block = self.blocks[block_id]
        if block.key is not None:
            del self._index[block.key]
            block.key = None
            block.token_ids = None
        block.ref_count = 1
        return block

    def lookup(self, key: bytes, token_ids: tuple[int, ...]) -> Block | None:
        block_id = self._index.get(key)
        if block_id is None:
            return None
        block = self.blocks[block_id]
        return block if block.token_ids == token_ids else None

    def touch(self, block: Block) -> None:
        """Take another reference to a block (a cache hit), pulling it out of the free queue."""
        if block.ref_count == 0:
            del self._free[block.block_id]
        block.ref_count += 1

    def release(self, block: Block) -> None:
        if block.ref_count <= 0:
            raise BlockAccountingError(f"block {block.block_id} released with ref_count {block.ref_count}")
        block.ref_count -= 1
        if block.ref_count == 0:
            self._free[block.block_id] = None
            if block.key is None:
                # Nothing worth keeping: reuse it before any block that still caches a prefix.
                self._free.move_to_end(block.block_id, last=False)

    def register(self, block: Block, key: bytes, token_ids: tuple[int, ...]) -> None:
        """Enter a fully computed block into the index. If an identical block is already there
        (two sequences prefilled the same prefix at once) the first one stays the cached copy."""
        if block.key is not None or key in self._index:
            return
        block.key = key
        block.token_ids = token_ids
        self._index[key] = block.block_id

    def reset_cache(self) -> int:
        """Forget every cached prefix held by free blocks; returns how many were dropped."""
        dropped = 0
        for block_id in self._free:
            block = self.blocks[block_id]
            if block.key is not None:
                del self._index[block.key]
                block.key = None
                block.token_ids = None
                dropped += 1
        return dropped

    def check_invariants(self) -> None:
        """Raise if the accounting is inconsistent (used by tests and debug runs)."""
        for block in self.blocks:
            in_free = block.block_id in self._free
            if block.ref_count < 0 or in_free != (block.ref_count == 0):
                raise BlockAccountingError(f"block {block.block_id}: ref_count {block.ref_count}, free={in_free}")
            if block.key is not None and self._index.get(block.key) != block.block_id:
                raise BlockAccountingError(f"block {block.block_id} has a key the index does not map to it")
        if len(self._index) != sum(b.key is not None for b in self.blocks):
            raise BlockAccountingError("prefix index and block keys disagree")
