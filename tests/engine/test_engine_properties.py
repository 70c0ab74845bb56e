"""Random mixes of arrivals, steps and aborts on the real engine (tiny Llama, tight pool): blocks
are always accounted for, and every request that finishes produced what it produces alone."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oci_engine import LLM, SamplingParams

SP = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
PROMPTS = [[(i * 11 + j * 5) % 250 + 3 for j in range(3 + i * 7)] for i in range(8)]
SHARED = [7, 8, 9, 10] * 6  # a common 24-token prefix, so requests share cached blocks


@pytest.fixture(scope="module")
def llms(tiny_checkpoint):
    path = str(tiny_checkpoint())
    per_block = 2 * 2 * 2 * 16 * 4 * 8
    tight = LLM(path, backend="torch", dtype="float32", kv_cache_memory=11 * per_block / 2**30, block_size=8,
                max_num_batched_tokens=24, max_num_seqs=4)
    roomy = LLM(path, backend="torch", dtype="float32", kv_cache_memory=0.002, enable_prefix_caching=False)
    alone = {i: roomy.generate(prompt_token_ids=SHARED + p, sampling_params=SP)[0].token_ids
             for i, p in enumerate(PROMPTS)}
    return tight, alone


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.one_of(st.tuples(st.just("add"), st.integers(0, 7)), st.just(("step", 0)),
                              st.tuples(st.just("abort"), st.integers(0, 20))), max_size=40))
def test_random_add_step_abort(llms, ops):
    llm, alone = llms
    engine = llm.engine
    live: dict[str, int] = {}
    added: dict[str, int] = {}
    done: dict[str, list[int]] = {}
    n = 0

    def step():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out.token_ids
                live.pop(out.request_id)
        engine.kv.pool.check_invariants()

    for op, arg in ops:
        if op == "add":
            rid = f"r{n}"
            n += 1
            engine.add_request(rid, None, SP, prompt_token_ids=SHARED + PROMPTS[arg])
            live[rid] = added[rid] = arg
        elif op == "abort" and live:
            rid = sorted(live)[arg % len(live)]
            engine.abort(rid)
            live.pop(rid)
            engine.kv.pool.check_invariants()
        else:
            step()
    while engine.has_unfinished():
        step()
    assert set(done) | set(live) <= set(added) and not live
    for rid, tokens in done.items():
        assert tokens == alone[added[rid]], rid
    pool = engine.kv.pool
    assert pool.num_free == pool.num_blocks and all(b.ref_count == 0 for b in pool.blocks)


def test_the_tight_pool_preempts(llms):
    llm, alone = llms
    ids = [llm.engine.add_request(None, None, SP, prompt_token_ids=SHARED + p) for p in PROMPTS[4:]]
    before = llm.engine.scheduler.num_preemptions
    finals = {}
    while llm.engine.has_unfinished():
        finals.update({o.request_id: o.token_ids for o in llm.engine.step() if o.finished})
    assert llm.engine.scheduler.num_preemptions > before
    assert [finals[r] for r in ids] == [alone[i] for i in range(4, 8)]
