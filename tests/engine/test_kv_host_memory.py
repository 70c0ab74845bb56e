"""The cpu backend's KV pool memory: zeros on first read (the torch reference attends over whole
blocks, and 0 * NaN from stale memory would be NaN), lazily mapped, and large pools advised to be
transparent huge pages, aligned to them, where Linux offers them."""
from __future__ import annotations

import mmap
import sys

import pytest
import torch

from oci_engine.kv_host_memory import HUGE_PAGE, zeroed_host_bytes


@pytest.mark.parametrize("nbytes", [4096, HUGE_PAGE - 64, 3 * HUGE_PAGE + 4096])
def test_pool_memory_reads_as_zeros_and_is_writable(nbytes):
    t = zeroed_host_bytes(nbytes)
    assert t.dtype == torch.uint8 and t.numel() == nbytes and t.is_contiguous()
    assert int(t.count_nonzero()) == 0
    t[-1] = 7
    t.view(-1)[:16].fill_(1)
    assert int(t.sum()) == 7 + 16


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * mmap.PAGESIZE


@pytest.mark.skipif(sys.platform != "linux" or not hasattr(mmap, "MADV_HUGEPAGE"), reason="Linux THP advice")
def test_a_large_pool_starts_on_a_huge_page_and_is_mapped_lazily():
    before = _resident_bytes()
    t = zeroed_host_bytes(256 << 20)
    assert t.data_ptr() % HUGE_PAGE == 0
    assert _resident_bytes() - before < 16 << 20  # 256 MiB reserved, nothing touched yet
    every_mib = t[:: 1 << 20]
    every_mib.fill_(1)
    assert int(every_mib.sum()) == 256 and int(t[1:4096].sum()) == 0


def test_engine_pool_tensors_are_views_of_one_region(smollm2_gguf):
    from oci_engine import LLM

    llm = LLM(str(smollm2_gguf), backend="cpu", kv_cache_memory=0.05)
    kv = llm.engine.runner.kv_caches
    assert all(k.is_contiguous() and v.is_contiguous() and k.dtype == torch.bfloat16 for k, v in kv)
    ptrs = sorted(t.data_ptr() for pair in kv for t in pair)
    size = kv[0][0].numel() * kv[0][0].element_size()
    assert all(b - a == size for a, b in zip(ptrs, ptrs[1:]))  # disjoint, back to back
    assert all(int(t.float().abs().sum()) == 0 for pair in kv for t in pair)
