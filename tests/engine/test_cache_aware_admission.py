"""Cache-aware admission: a request whose prefix another request is computing right now waits one
step and then reuses those blocks instead of computing them a second time."""
from __future__ import annotations

from fake_forward import fake_forward_for
from test_block_accounting import Params, assert_all_released, run_to_completion

from oci_engine.kv_cache_manager import KVCacheManager
from oci_engine.scheduler import Scheduler
from oci_engine.sequence import Sequence

SYSTEM = list(range(40))  # ten 4-token blocks shared by every request


def _admit_together(cache_aware: bool):
    kv = KVCacheManager(64, 4)
    sched = Scheduler(kv, 8, 256)
    sched.cache_aware = cache_aware
    seqs = [Sequence(f"r{i}", SYSTEM + [100 + i, 7, 7], Params()) for i in range(3)]
    for s in seqs:
        sched.add(s)
    fwd = fake_forward_for(kv)
    first = sched.schedule()
    waiting_after_first = list(sched.waiting)
    for seq_id, token in fwd(first).items():
        next(s for s in seqs if s.seq_id == seq_id).token_ids.append(token)
    sched.mark_computed(first)
    second = sched.schedule()
    return waiting_after_first, seqs, first, second


def test_shared_prefix_is_computed_once_then_hit():
    waiting, seqs, first, second = _admit_together(cache_aware=True)
    assert first.seqs == [seqs[0]] and first.num_new_tokens == [43]
    assert waiting == seqs[1:]
    # next step: the other two find all ten shared blocks cached and compute only their own tail
    assert second.seqs[1:] == seqs[1:]
    assert [s.num_cached_tokens for s in seqs[1:]] == [40, 40]
    assert second.num_new_tokens == [1, 3, 3]


def test_plain_fcfs_computes_the_shared_prefix_per_request():
    waiting, seqs, first, second = _admit_together(cache_aware=False)
    assert not waiting and first.seqs == seqs and first.num_new_tokens == [43, 43, 43]
    assert [s.num_cached_tokens for s in seqs] == [0, 0, 0]


def test_unrelated_requests_are_not_held_back():
    kv = KVCacheManager(64, 4)
    sched = Scheduler(kv, 8, 256)
    a = Sequence("a", SYSTEM + [1], Params())
    b = Sequence("b", SYSTEM + [2], Params())
    c = Sequence("c", [9] * 30, Params())  # shares nothing: admitted in arrival order, at once
    for s in (a, b, c):
        sched.add(s)
    batch = sched.schedule()
    assert batch.seqs == [a, c]
    assert list(sched.waiting) == [b]


def test_samples_of_one_request_share_a_long_prompt_across_chunks():
    # The prompt needs three steps of a 16-token budget: its twin waits through all of them and
    # then takes every full block from the cache.
    kv = KVCacheManager(64, 4)
    sched = Scheduler(kv, 8, 16)
    prompt = list(range(40)) + [5, 5]
    twins = {"t0": prompt, "t1": list(prompt)}
    out = run_to_completion(kv, sched, twins, max_tokens=5)
    assert out["t0"] == out["t1"]
    assert_all_released(kv)
    assert kv.num_hit_tokens == 40


def test_outputs_match_plain_fcfs():
    prompts = {f"r{i}": SYSTEM + [i] * (i + 1) for i in range(6)}
    results = []
    for aware in (False, True):
        kv = KVCacheManager(128, 4)
        sched = Scheduler(kv, 4, 24)
        sched.cache_aware = aware
        results.append(run_to_completion(kv, sched, prompts, max_tokens=8))
        assert_all_released(kv)
    assert results[0] == results[1]
