"""The engine on a tiny random-weight Llama (torch backend, fp32): batching, preemption, chunked
prefill and the prefix cache never change what a request generates."""
from __future__ import annotations

import pytest
import torch

from oci_engine import LLM, SamplingParams
from oci_engine.errors import ContextLengthError, InvalidRequestError

GREEDY = SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True)


def prompts16():
    # 16 different prompts of different lengths, some sharing a first block
    return [[(i * 7 + j * 3) % 250 + 3 for j in range(5 + i * 4)] for i in range(16)]


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return tiny_checkpoint()


def make_llm(path, **kw):
    kw.setdefault("kv_cache_memory", 0.002)
    return LLM(str(path), backend="torch", dtype="float32", **kw)


@pytest.fixture(scope="module")
def alone(tiny):
    llm = make_llm(tiny, enable_prefix_caching=False)
    return [llm.generate(prompt_token_ids=p, sampling_params=GREEDY)[0].token_ids for p in prompts16()]


def hf_greedy(path, prompt, n):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(n):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids[0, len(prompt):].tolist()


def test_single_request_matches_transformers(tiny, alone):
    assert alone[5] == hf_greedy(tiny, prompts16()[5], GREEDY.max_tokens)


def test_batch_of_16_equals_each_alone(tiny, alone):
    llm = make_llm(tiny)
    outs = llm.generate(prompt_token_ids=prompts16(), sampling_params=GREEDY, use_tqdm=False)
    assert [o.token_ids for o in outs] == alone
    assert all(o.finish_reason == "length" and len(o.token_ids) == 24 for o in outs)
    stats = llm.stats
    assert stats.num_blocks_used == 0 and stats.num_running == stats.num_waiting == 0


def test_tiny_pool_preempts_and_outputs_stay_the_same(tiny, alone):
    # 12 blocks of 8 tokens: the longest request (89 tokens) fills it on its own.
    per_block = 2 * 2 * 2 * 16 * 4 * 8  # k+v, layers, kv heads, head_dim, fp32, block
    llm = make_llm(tiny, kv_cache_memory=12 * per_block / 2**30, block_size=8)
    assert llm.engine.kv.num_blocks == 12
    outs = llm.generate(prompt_token_ids=prompts16(), sampling_params=GREEDY, use_tqdm=False)
    assert llm.stats.num_preemptions > 0
    assert [o.token_ids for o in outs] == alone
    assert llm.stats.num_blocks_used == 0


def test_chunked_prefill_equals_whole_prefill(tiny, alone):
    llm = make_llm(tiny, max_num_batched_tokens=7, max_num_seqs=3)
    outs = llm.generate(prompt_token_ids=prompts16()[-4:], sampling_params=GREEDY, use_tqdm=False)
    assert [o.token_ids for o in outs] == alone[-4:]


def test_prefix_cache_hit_gives_same_tokens_and_counts_cached(tiny, alone):
    llm = make_llm(tiny)
    p = prompts16()[-1]  # 65 tokens
    first = llm.generate(prompt_token_ids=p, sampling_params=GREEDY)[0]
    again = llm.generate(prompt_token_ids=p, sampling_params=GREEDY)[0]
    assert first.num_cached_tokens == 0 and again.num_cached_tokens == 64
    assert first.token_ids == again.token_ids == alone[-1]
    # Round 2 (prompt + reply + more) finds the reply's blocks cached too.
    follow = p + first.token_ids + [5, 6, 7]
    r2 = llm.generate(prompt_token_ids=follow, sampling_params=GREEDY)[0]
    assert r2.num_cached_tokens == (len(p) + len(first.token_ids) - 1) // 16 * 16
    assert r2.token_ids == hf_greedy(tiny, follow, 24)
    assert 0 < llm.stats.prefix_cache_hit_rate < 1


def test_cache_off_reports_nothing_cached(tiny):
    llm = make_llm(tiny, enable_prefix_caching=False)
    p = prompts16()[-1]
    outs = [llm.generate(prompt_token_ids=p, sampling_params=GREEDY)[0] for _ in range(2)]
    assert [o.num_cached_tokens for o in outs] == [0, 0]
    assert llm.stats.num_blocks_cached == 0


def test_abort_frees_blocks_at_once(tiny):
    llm = make_llm(tiny)
    engine = llm.engine
    engine.add_request("a", None, SamplingParams(max_tokens=100, ignore_eos=True), prompt_token_ids=prompts16()[-1])
    engine.add_request("b", None, SamplingParams(max_tokens=100, ignore_eos=True), prompt_token_ids=prompts16()[-2])
    engine.step()
    engine.step()
    assert engine.stats().num_blocks_used > 0
    assert engine.abort("a") and engine.abort("b")
    assert engine.stats().num_blocks_used == 0 and not engine.has_unfinished()
    assert not engine.abort("a")
    engine.kv.pool.check_invariants()


def test_final_only_steps_return_just_finished_requests(tiny, alone):
    engine = make_llm(tiny).engine
    engine.add_request("short", None, SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True),
                       prompt_token_ids=prompts16()[0])
    engine.add_request("long", None, GREEDY, prompt_token_ids=prompts16()[1])
    seen = []
    while engine.has_unfinished():
        seen += engine.step(final_only=True)
    assert [o.request_id for o in seen] == ["short", "long"] and all(o.finished for o in seen)
    assert seen[1].token_ids == seen[1].outputs[0].delta_token_ids == alone[1]
    assert engine.stats().num_blocks_used == 0


def test_stream_cancel_frees_blocks(tiny):
    llm = make_llm(tiny)
    it = llm.stream(prompt_token_ids=prompts16()[3], sampling_params=SamplingParams(max_tokens=50, ignore_eos=True))
    got = [next(it) for _ in range(3)]
    assert [len(o.delta_token_ids) for o in got] == [1, 1, 1] and not got[-1].finished
    it.close()
    assert llm.stats.num_blocks_used == 0 and not llm.engine.has_unfinished()


def test_seeded_sampling_is_independent_of_the_batch(tiny):
    llm = make_llm(tiny)
    sp = SamplingParams(temperature=1.0, top_p=0.9, seed=1234, max_tokens=16, ignore_eos=True)
    alone = llm.generate(prompt_token_ids=prompts16()[2], sampling_params=sp)[0].token_ids
    noise = SamplingParams(temperature=1.0, max_tokens=16, ignore_eos=True)
    batch = llm.generate(prompt_token_ids=prompts16()[:6], sampling_params=[noise, noise, sp, noise, noise, noise],
                         use_tqdm=False)
    assert batch[2].token_ids == alone


def test_n_samples_share_the_prompt(tiny):
    llm = make_llm(tiny)
    out = llm.generate(prompt_token_ids=prompts16()[4],
                       sampling_params=SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=10, ignore_eos=True))[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert all(len(c.token_ids) == 10 for c in out.outputs)
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1


def test_stop_token_ids_min_tokens_and_max_tokens(tiny, alone):
    llm = make_llm(tiny)
    p, ref = prompts16()[0], alone[0]
    stop_tok = ref[5]
    first = ref.index(stop_tok)
    out = llm.generate(prompt_token_ids=p, sampling_params=SamplingParams(
        temperature=0, max_tokens=24, stop_token_ids=[stop_tok], ignore_eos=True))[0]
    assert out.token_ids == ref[:first + 1] and out.finish_reason == "stop" and out.stop_reason == stop_tok
    out = llm.generate(prompt_token_ids=p, sampling_params=SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))[0]
    assert out.token_ids == ref[:3] and out.finish_reason == "length"
    # min_tokens keeps a stop token from ending the request before 8 tokens are out
    out = llm.generate(prompt_token_ids=p, sampling_params=SamplingParams(
        temperature=0, max_tokens=24, min_tokens=8, stop_token_ids=[stop_tok], ignore_eos=True))[0]
    assert len(out.token_ids) >= 8 and stop_tok not in out.token_ids[:7]


def test_eos_stops_unless_ignored(tiny_checkpoint, alone):
    ref = alone[0]
    path = tiny_checkpoint(eos_token_id=ref[3])  # same weights, a different EOS id
    llm = make_llm(path)
    sp = SamplingParams(temperature=0, max_tokens=24)
    out = llm.generate(prompt_token_ids=prompts16()[0], sampling_params=sp)[0]
    assert out.finish_reason == "stop" and out.token_ids == ref[:ref.index(ref[3]) + 1]
    out = llm.generate(prompt_token_ids=prompts16()[0], sampling_params=GREEDY)[0]
    assert out.token_ids == ref


def test_prompt_logprobs_match_a_full_forward(tiny):
    from transformers import AutoModelForCausalLM

    llm = make_llm(tiny, max_num_batched_tokens=16)  # chunked: 3 chunks for 41 tokens
    p = prompts16()[9]
    out = llm.generate(prompt_token_ids=p, sampling_params=SamplingParams(
        temperature=0, max_tokens=2, prompt_logprobs=2, logprobs=1, ignore_eos=True))[0]
    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(p)
    model = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32).eval()
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([p])).logits[0], -1)
    for j in range(1, len(p)):
        d = out.prompt_logprobs[j]
        assert p[j] in d and abs(d[p[j]] - float(ref[j - 1, p[j]])) < 1e-4
        assert len(d) <= 3
    assert len(out.logprobs) == 2 and out.token_ids[0] in out.logprobs[0]


def test_context_length_errors_before_anything_is_allocated(tiny):
    llm = make_llm(tiny, max_model_len=64)
    with pytest.raises(ContextLengthError, match="65 tokens"):
        llm.generate(prompt_token_ids=[[5] * 10, [5] * 65], sampling_params=GREEDY)
    assert not llm.engine.has_unfinished() and llm.stats.num_blocks_used == 0
    small = make_llm(tiny, kv_cache_memory=4 * 2 * 2 * 2 * 16 * 4 * 16 / 2**30)  # 4 blocks of 16 tokens
    with pytest.raises(ContextLengthError, match="KV cache"):
        small.generate(prompt_token_ids=[5] * 65)
    # At the limit a request still runs, and ends with "length" when the context is full.
    out = llm.generate(prompt_token_ids=[5] * 60, sampling_params=SamplingParams(max_tokens=50, ignore_eos=True))[0]
    assert out.finish_reason == "length" and len(out.token_ids) == 4  # 60 + 4 = the context


def test_bad_requests_are_typed_errors(tiny):
    llm = make_llm(tiny)
    with pytest.raises(InvalidRequestError):
        llm.generate(prompt_token_ids=[[]])
    with pytest.raises(InvalidRequestError, match="vocabulary"):
        llm.generate(prompt_token_ids=[3, 999])
    with pytest.raises(InvalidRequestError, match="tokenizer"):
        llm.generate("text needs a tokenizer")
    with pytest.raises(InvalidRequestError, match="one per prompt"):
        llm.generate(prompt_token_ids=[[3], [4]], sampling_params=[GREEDY] * 3)


def test_request_metrics_and_engine_stats(tiny):
    llm = make_llm(tiny)
    p = prompts16()[-1]
    out = llm.generate(prompt_token_ids=p, sampling_params=GREEDY)[0]
    m = out.metrics
    assert m.num_prompt_tokens == len(p) and m.num_generation_tokens == 24
    assert 0 < m.time_to_first_token <= m.e2e_latency
    assert m.time_per_output_token > 0 and m.queue_time >= 0
    again = llm.generate(prompt_token_ids=p, sampling_params=GREEDY)[0]
    assert again.metrics.num_cached_tokens == again.num_cached_tokens == 64
    s = llm.stats
    assert s.generation_tokens_total == 48 and s.prompt_tokens_total == 2 * len(p) and s.cached_tokens_total == 64
    assert s.num_blocks_cached > 0 and s.num_blocks_used == 0 and s.num_blocks_free == s.num_blocks
    assert s.prefix_cache_hit_rate == 64 / (2 * len(p))
    g = s.as_gauges()
    assert g["oci_kv_blocks_cached"] == s.num_blocks_cached and g["oci_num_requests_running"] == 0


def test_vllm_style_prompt_dicts(tiny, alone):
    llm = make_llm(tiny)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts16()[:3]], GREEDY, use_tqdm=False)
    assert [o.token_ids for o in outs] == alone[:3]


def test_kv_pool_reads_as_zeros_over_reused_memory(tiny):
    """The torch reference gives a last block's unwritten slots probability 0; stale NaNs there would
    still poison 0 * NaN. A small pool carved from freed, NaN-filled heap memory must read as zeros
    (before this was fixed, greedy outputs turned into token 0 after other tests freed such memory)."""
    for _ in range(3):
        junk = [torch.full((1 << 18,), float("nan")) for _ in range(16)]  # 1 MiB each, heap-sized
        del junk
        llm = make_llm(tiny)
        assert all(not k.any() and not v.any() for k, v in llm.engine.runner.kv_caches)
