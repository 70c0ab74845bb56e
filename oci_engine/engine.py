"""LLMEngine: requests in, incremental outputs out, one scheduled forward pass per step().

    engine.add_request("r1", "def fib(n):", SamplingParams(max_tokens=64))
    while engine.has_unfinished():
        for out in engine.step():
            print(out.delta_text, end="")

The engine owns the KV pool (KVCacheManager), the Scheduler and the ModelRunner, and turns sampled
tokens into text: detokenization, stop conditions, and the RequestOutputs callers see.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from oci_engine.errors import ContextLengthError, InvalidRequestError
from oci_engine.kv_cache_manager import KVCacheManager
from oci_engine.metrics import EngineStats, RequestMetrics
from oci_engine.model_runner import ModelRunner
from oci_engine.outputs import CompletionOutput, RequestOutput
from oci_engine.scheduler import Scheduler
from oci_engine.sequence import Sequence
from oci_engine.stop_checker import find_stop_string, hold_back, token_stop


@dataclass(slots=True)
class _SeqState:
    seq: Sequence
    detokenizer: object | None
    text: str = ""
    sent_chars: int = 0
    sent_tokens: int = 0


@dataclass(slots=True)
class _Request:
    request_id: str
    prompt: str | None
    params: object
    states: list[_SeqState]
    metrics: RequestMetrics
    hold: int = 0
    touched: bool = field(default=False)


class LLMEngine:
    def __init__(self, model, config, tokenizer, kv_caches: list, num_blocks: int, *, block_size: int = 16,
                 enable_prefix_caching: bool = True, max_num_seqs: int = 64, max_num_batched_tokens: int = 2048,
                 max_model_len: int | None = None, eos_token_ids=(), device="cpu"):
        self.config = config
        self.tokenizer = tokenizer
        self.kv = KVCacheManager(num_blocks, block_size, enable_prefix_caching)
        self.scheduler = Scheduler(self.kv, max_num_seqs, max_num_batched_tokens)
        self.eos_token_ids = frozenset(eos_token_ids)
        self.runner = ModelRunner(model, self.kv, kv_caches, sorted(self.eos_token_ids), device)
        self.max_model_len = max_model_len or config.max_position_embeddings
        # A sequence must fit the pool on its own, or preempting everyone else would not save it.
        self.max_seq_len = min(self.max_model_len, self.kv.capacity_tokens)
        self._requests: dict[str, _Request] = {}
        self.load_seconds: float | None = None  # set by engine_args.create_engine
        self._ids = itertools.count()
        self.prompt_tokens_total = 0
        self.cached_tokens_total = 0
        self.generation_tokens_total = 0

    # ---- requests -------------------------------------------------------------------------
    def tokenize_prompt(self, prompt: str | None, prompt_token_ids=None) -> list[int]:
        """Token ids of a request, validated against the vocabulary, the context and the pool."""
        if prompt_token_ids is None:
            if prompt is None:
                raise InvalidRequestError("a request needs a prompt string or prompt_token_ids")
            if self.tokenizer is None:
                raise InvalidRequestError("this model has no tokenizer; pass prompt_token_ids instead of text")
            prompt_token_ids = self.tokenizer.encode(prompt)
        ids = [int(t) for t in prompt_token_ids]
        if not ids:
            raise InvalidRequestError("the prompt is empty; give at least one token")
        vocab = self.config.vocab_size
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise InvalidRequestError(f"prompt token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
        if len(ids) > self.max_seq_len:
            where = (f"the model's context of {self.max_model_len} tokens" if self.max_seq_len == self.max_model_len
                     else f"the KV cache of {self.kv.capacity_tokens} tokens")
            raise ContextLengthError(
                f"the prompt has {len(ids)} tokens, more than {where}; shorten the prompt"
                + ("" if self.max_seq_len == self.max_model_len else " or raise kv_cache_memory"))
        return ids

    def add_request(self, request_id: str | None, prompt: str | None, params=None, prompt_token_ids=None,
                    arrival_time: float | None = None) -> str:
        from oci_engine.sampling_params import SamplingParams

        params = SamplingParams() if params is None else params
        ids = self.tokenize_prompt(prompt, prompt_token_ids)
        request_id = str(next(self._ids)) if request_id is None else str(request_id)
        if request_id in self._requests:
            raise InvalidRequestError(f"request id {request_id!r} is already running; use a unique id")
        now = time.monotonic() if arrival_time is None else arrival_time
        states = []
        for i in range(params.n):
            seed = None if params.seed is None else params.seed + i
            seq = Sequence(request_id, ids, params, index=i, arrival_time=now, seed=seed)
            states.append(_SeqState(seq, self._detokenizer(ids, params)))
        self._requests[request_id] = _Request(request_id, prompt, params, states, RequestMetrics(now, len(ids)),
                                              hold=hold_back(params.stop))
        for st in states:
            self.scheduler.add(st.seq)
        self.prompt_tokens_total += len(ids)
        return request_id

    def _detokenizer(self, prompt_ids: list[int], params):
        if self.tokenizer is None:
            return None
        from oci_engine.detokenizer import IncrementalDetokenizer

        return IncrementalDetokenizer(self.tokenizer, prompt_ids, skip_special_tokens=params.skip_special_tokens)

    def abort(self, request_id: str) -> bool:
        """Stop a request now and release its KV blocks. False if it was not running."""
        req = self._requests.pop(request_id, None)
        if req is None:
            return False
        for seq in self.scheduler.abort(request_id):
            self.runner.release(seq)
        return True

    def has_unfinished(self) -> bool:
        return bool(self._requests)

    @property
    def num_requests(self) -> int:
        return len(self._requests)

    # ---- stepping -------------------------------------------------------------------------
    def step(self, final_only: bool = False) -> list[RequestOutput]:
        """One forward pass; returns an output for every request that produced tokens or ended
        (with final_only, for every request that ended: what a caller that does not stream needs)."""
        batch = self.scheduler.schedule()
        if batch.is_empty:
            return []
        result = self.runner.execute(batch)
        self.scheduler.mark_computed(batch)
        now = time.monotonic()
        touched: dict[str, _Request] = {}
        for seq in batch.seqs:
            sample = result.sampled.get(seq.seq_id)
            if sample is None:
                continue
            req = self._requests[seq.request_id]
            seq.token_ids.append(sample.token_id)
            if seq.logprobs is not None and sample.logprobs is not None:
                seq.logprobs.append(sample.logprobs)
                seq.cumulative_logprob += sample.logprobs.get(sample.token_id, 0.0)
            m = req.metrics
            if m.first_token_time is None:
                m.first_token_time = now
                m.first_scheduled_time = seq.first_scheduled_time
                m.num_cached_tokens = seq.num_cached_tokens or 0
                self.cached_tokens_total += m.num_cached_tokens
            m.last_token_time = now
            m.num_generation_tokens += 1
            self.generation_tokens_total += 1
            self._advance(req.states[seq.index], req)
            touched[req.request_id] = req
        if final_only:
            return [self._output(req) for req in touched.values() if all(st.seq.is_finished for st in req.states)]
        return [self._output(req) for req in touched.values()]

    def _advance(self, st: _SeqState, req: _Request) -> None:
        seq, params = st.seq, req.params
        stop = token_stop(seq, self.eos_token_ids, self.max_seq_len)
        if stop is not None and stop[0] == "stop":
            if st.detokenizer is not None:
                st.text += st.detokenizer.flush()
            self._finish(seq, *stop)  # a stop token's or EOS's text is never shown
            return
        if st.detokenizer is not None:
            delta = st.detokenizer.add(seq.token_ids[-1])
            st.text += delta
            if seq.num_output_tokens >= params.min_tokens:
                hit = find_stop_string(st.text, params.stop, len(delta))
                if hit is not None:
                    i, s = hit
                    st.text = st.text[: i + len(s)] if params.include_stop_str_in_output else st.text[:i]
                    self._finish(seq, "stop", s)
                    return
        if stop is not None:
            if st.detokenizer is not None:
                st.text += st.detokenizer.flush()
            self._finish(seq, *stop)

    def _finish(self, seq: Sequence, reason: str, stop_reason=None) -> None:
        self.scheduler.finish(seq, reason, stop_reason)
        self.runner.release(seq)

    def _output(self, req: _Request) -> RequestOutput:
        completions = []
        for st in req.states:
            seq = st.seq
            visible = len(st.text) if seq.is_finished else max(st.sent_chars, len(st.text) - req.hold)
            tokens = seq.output_token_ids
            completions.append(CompletionOutput(
                index=seq.index, text=st.text[:visible], token_ids=tokens, finish_reason=seq.finish_reason,
                stop_reason=seq.stop_reason, logprobs=seq.logprobs,
                cumulative_logprob=seq.cumulative_logprob if seq.logprobs is not None else None,
                delta_text=st.text[st.sent_chars:visible], delta_token_ids=tokens[st.sent_tokens:]))
            st.sent_chars, st.sent_tokens = visible, len(tokens)
        finished = all(st.seq.is_finished for st in req.states)
        first = req.states[0].seq
        if finished:
            req.metrics.finished_time = max(st.seq.finished_time for st in req.states)
            self._requests.pop(req.request_id, None)
        return RequestOutput(
            request_id=req.request_id, prompt=req.prompt, prompt_token_ids=first.prompt_token_ids,
            outputs=completions, finished=finished, num_cached_tokens=first.num_cached_tokens or 0,
            prompt_logprobs=first.prompt_logprobs, metrics=req.metrics)

    def stats(self) -> EngineStats:
        pool = self.kv.pool
        return EngineStats(
            num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting),
            num_blocks=pool.num_blocks, num_blocks_used=pool.num_used, num_blocks_free=pool.num_free,
            num_blocks_cached=pool.num_cached, block_size=self.kv.block_size,
            prefix_cache_hit_rate=self.kv.hit_rate, num_preemptions=self.scheduler.num_preemptions,
            prompt_tokens_total=self.prompt_tokens_total, cached_tokens_total=self.cached_tokens_total,
            generation_tokens_total=self.generation_tokens_total)

    def reset_prefix_cache(self) -> int:
        return self.kv.pool.reset_cache()
