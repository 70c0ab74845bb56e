"""Host memory for the `cpu` KV pool: one region of fresh anonymous pages, read as zeros and mapped
lazily (a 1 GiB pool costs only the blocks a run touches), advised to be 2 MiB transparent huge
pages where Linux offers them.

The pool must read as zeros: the torch reference attends over whole blocks and gives padding slots
probability 0, and 0 * NaN from stale memory is NaN. Huge pages matter because decode touches every
running sequence's blocks in every layer, scattered over the pool: with 4 KiB pages a 16-sequence
SmolLM2 step walked the page tables for about a thousand pages just to write its new K/V rows (on
this VM a miss costs a nested walk); in 2 MiB pages a layer's whole pool is a handful of entries."""
from __future__ import annotations

import mmap

import numpy as np
import torch

HUGE_PAGE = 2 << 20


def zeroed_host_bytes(nbytes: int) -> torch.Tensor:
    """A uint8 tensor of nbytes zeros, its pages faulted in on first touch."""
    if nbytes < HUGE_PAGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        # numpy's zeros: calloc, whose large allocations are fresh zero pages too, and a small
        # one, carved from reused heap memory, is cleared (cheaply)
        return torch.from_numpy(np.zeros(nbytes, dtype=np.uint8))
    region = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    whole = torch.frombuffer(region, dtype=torch.uint8)  # keeps the mapping alive
    start = -whole.data_ptr() % HUGE_PAGE  # a page multiple: the mapping is page-aligned
    try:
        region.madvise(mmap.MADV_HUGEPAGE, start, nbytes - nbytes % HUGE_PAGE)
    except OSError:  # transparent huge pages off or unsupported: 4 KiB pages, same contents
        pass
    return whole[start:start + nbytes]
