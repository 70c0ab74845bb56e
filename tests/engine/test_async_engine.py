"""The async engine streams requests concurrently, and a consumer that goes away frees its blocks."""
from __future__ import annotations

import asyncio
import time

import pytest

from oci_engine import LLM, SamplingParams
from oci_engine.async_engine import AsyncLLMEngine
from oci_engine.engine_args import EngineArgs, create_engine
from oci_engine.errors import ContextLengthError


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    eng = AsyncLLMEngine(create_engine(EngineArgs(model=tiny_checkpoint(), backend="torch", dtype="float32",
                                                  kv_cache_memory=0.002, max_model_len=256)))
    yield eng
    eng.shutdown()


def wait_idle(engine, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = engine.stats()
        if s.num_running == s.num_waiting == 0:
            return s
        time.sleep(0.01)
    raise AssertionError("engine did not go idle")


def test_streams_match_offline_generation(engine, tiny_checkpoint):
    sp = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    prompts = [[3 + i, 40, 50 + i, 7] * (i + 1) for i in range(4)]

    async def collect(p):
        return [o async for o in engine.generate(prompt_token_ids=p, sampling_params=sp)]

    async def main():
        return await asyncio.gather(*(collect(p) for p in prompts))

    results = asyncio.run(main())
    for outs in results:
        assert outs[-1].finished and not any(o.finished for o in outs[:-1])
        assert len(outs) > 1  # streamed, not one final blob
        deltas = [t for o in outs for t in o.delta_token_ids]
        assert deltas == outs[-1].token_ids and len(deltas) == 12
    sync = LLM(str(tiny_checkpoint()), backend="torch", dtype="float32", kv_cache_memory=0.002)
    expected = sync.generate(prompt_token_ids=prompts, sampling_params=sp, use_tqdm=False)
    assert [outs[-1].token_ids for outs in results] == [o.token_ids for o in expected]


def test_consumer_going_away_aborts_and_frees_blocks(engine):
    sp = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)

    async def main():
        gen = engine.generate(prompt_token_ids=list(range(3, 60)), sampling_params=sp)
        got = 0
        async for _ in gen:
            got += 1
            if got == 3:
                break
        await gen.aclose()
        # a cancelled task is a consumer going away too
        async def consume():
            async for _ in engine.generate(prompt_token_ids=list(range(3, 40)), sampling_params=sp):
                pass
        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return got

    assert asyncio.run(main()) == 3
    stats = wait_idle(engine)
    assert stats.num_blocks_used == 0
    engine.engine.kv.pool.check_invariants()


def test_bad_request_raises_in_the_caller(engine):
    async def main():
        async for _ in engine.generate(prompt_token_ids=[5] * 300):
            pass

    with pytest.raises(ContextLengthError):
        asyncio.run(main())
    assert wait_idle(engine).num_blocks_used == 0
