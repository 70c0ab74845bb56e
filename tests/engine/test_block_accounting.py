"""Block accounting under random mixes of arrivals, steps, aborts, finishes and preemptions."""
from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oci_engine.block_pool import BlockAccountingError, BlockPool
from oci_engine.kv_cache_manager import KVCacheManager
from oci_engine.scheduler import Scheduler
from oci_engine.sequence import Sequence

from fake_forward import fake_forward_for


class Params:
    logprobs = None
    prompt_logprobs = None


def run_to_completion(kv, sched, prompts, max_tokens, ops=(), rng=None):
    """Drives the scheduler with the fake forward; returns {request_id: output tokens}."""
    fwd = fake_forward_for(kv)
    seqs = {}
    pending = list(prompts.items())
    ops = list(ops)
    outputs = {}
    steps = 0
    if not ops:  # no script: everything arrives at once
        ops = ["add"] * len(pending)
    while pending or sched.has_unfinished():
        op = ops.pop(0) if ops else "step"
        if op == "add" and pending or not sched.has_unfinished():
            rid, prompt = pending.pop(0)
            seqs[rid] = Sequence(rid, prompt, Params())
            sched.add(seqs[rid])
            continue
        if op == "abort" and sched.has_unfinished():
            victim = rng.choice([*sched.running, *sched.waiting])
            sched.abort(victim.request_id)
            sched.kv.pool.check_invariants()
            continue
        if op == "finish" and sched.running:
            sched.finish(rng.choice(sched.running), "stop")
            continue
        batch = sched.schedule()
        steps += 1
        assert steps < 10_000, "scheduler made no progress"
        assert batch.num_tokens <= sched.max_num_batched_tokens
        assert len(sched.running) <= sched.max_num_seqs
        sampled = fwd(batch)
        sched.mark_computed(batch)
        for seq in list(batch.seqs):
            if seq.seq_id in sampled:
                seq.token_ids.append(sampled[seq.seq_id])
                if seq.num_output_tokens >= max_tokens or len(seq) >= kv.capacity_tokens:
                    sched.finish(seq, "length")
        kv.pool.check_invariants()
        held = sum(len(s.block_table) for s in sched.running)
        assert sum(b.ref_count for b in kv.pool.blocks) == held
    for rid, seq in seqs.items():
        assert seq.is_finished and not seq.block_table
        if seq.finish_reason == "length":
            outputs[rid] = seq.output_token_ids
    return outputs


def assert_all_released(kv):
    pool = kv.pool
    pool.check_invariants()
    assert pool.num_free == pool.num_blocks
    assert all(b.ref_count == 0 for b in pool.blocks)


prompt_st = st.lists(st.integers(0, 7), min_size=1, max_size=70)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prompts=st.lists(prompt_st, min_size=1, max_size=8),
    shared_prefix=st.lists(st.integers(0, 7), max_size=40),
    ops=st.lists(st.sampled_from(["add", "step", "step", "step", "abort", "finish"]), max_size=60),
    num_blocks=st.integers(6, 24),
    block_size=st.sampled_from([1, 4, 16]),
    max_num_seqs=st.integers(1, 6),
    budget=st.integers(1, 64),
    caching=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_random_workloads_release_every_block(prompts, shared_prefix, ops, num_blocks, block_size,
                                              max_num_seqs, budget, caching, seed):
    kv = KVCacheManager(num_blocks, block_size, caching)
    sched = Scheduler(kv, max_num_seqs=max_num_seqs, max_num_batched_tokens=budget)
    cap = kv.capacity_tokens
    reqs = {f"r{i}": (shared_prefix + p)[:cap] for i, p in enumerate(prompts)}
    run_to_completion(kv, sched, reqs, max_tokens=12, ops=ops, rng=random.Random(seed))
    assert_all_released(kv)


@settings(max_examples=80, deadline=None)
@given(prompts=st.lists(prompt_st, min_size=2, max_size=6), shared=st.lists(st.integers(0, 7), max_size=40),
       caching=st.booleans())
def test_preemption_does_not_change_outputs(prompts, shared, caching):
    reqs = {f"r{i}": shared + p for i, p in enumerate(prompts)}
    roomy = KVCacheManager(200, 4, caching)
    expected = run_to_completion(roomy, Scheduler(roomy, 8, 64), reqs, max_tokens=10)
    # A pool that holds about one sequence at a time forces preemption and recomputation.
    tight = KVCacheManager(max(len(p) for p in reqs.values()) // 4 + 4, 4, caching)
    sched = Scheduler(tight, 8, 64)
    got = run_to_completion(tight, sched, reqs, max_tokens=10)
    assert got == expected
    assert_all_released(tight)


def test_tight_pool_actually_preempts():
    reqs = {f"r{i}": [i] * 18 for i in range(4)}
    kv = KVCacheManager(12, 4)
    sched = Scheduler(kv, 8, 64)
    run_to_completion(kv, sched, reqs, max_tokens=10)
    assert sched.num_preemptions > 0
    assert_all_released(kv)


def test_prefix_cache_hit_covers_prompt_and_generated_tokens():
    kv = KVCacheManager(32, 4)
    sched = Scheduler(kv, 8, 64)
    prompt = list(range(20)) + [1, 2]
    out = run_to_completion(kv, sched, {"a": prompt}, max_tokens=6)["a"]
    # Round 2 repeats round 1's prompt and reply: 27 of its tokens were computed (the last sampled
    # token never is), i.e. 6 full blocks, two of them holding generated tokens.
    follow_up = Sequence("a2", prompt + out + [9], Params())
    sched.add(follow_up)
    batch = sched.schedule()
    assert follow_up.num_cached_tokens == 24
    assert batch.num_new_tokens == [len(follow_up) - 24]
    fake_forward_for(kv)(batch)  # checks the hit blocks hold exactly these tokens
    sched.mark_computed(batch)
    sched.abort("a2")
    assert follow_up.finish_reason == "abort"
    assert_all_released(kv)
    assert kv.hit_rate > 0


def test_cache_disabled_never_hits():
    kv = KVCacheManager(32, 4, enable_prefix_caching=False)
    sched = Scheduler(kv, 8, 64)
    run_to_completion(kv, sched, {"a": list(range(20)), "b": list(range(20))}, max_tokens=4)
    seq = Sequence("c", list(range(20)), Params())
    sched.add(seq)
    sched.schedule()
    assert seq.num_cached_tokens == 0 and kv.pool.num_cached == 0


def test_double_release_is_detected():
    pool = BlockPool(2)
    block = pool.allocate()
    pool.release(block)
    with pytest.raises(BlockAccountingError):
        pool.release(block)


def test_lru_evicts_oldest_cached_block_first():
    kv = KVCacheManager(4, 2)
    sched = Scheduler(kv, 4, 64)
    run_to_completion(kv, sched, {"old": [1, 1, 1, 1, 1]}, max_tokens=1)
    run_to_completion(kv, sched, {"new": [2, 2, 2, 2, 2]}, max_tokens=1)
    # Needs 2 blocks; with 4 in the pool the oldest cached prefix goes, the newest survives.
    run_to_completion(kv, sched, {"x": [3, 3, 3]}, max_tokens=1)
    probe_new, probe_old = Sequence("p", [2, 2, 2, 2, 2], Params()), Sequence("q", [1, 1, 1, 1, 1], Params())
    assert len(kv.find_cached_prefix(probe_new)) == 2
    assert len(kv.find_cached_prefix(probe_old)) < 2
