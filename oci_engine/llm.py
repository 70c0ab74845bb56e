"""The offline API: `LLM(model).generate(prompts, SamplingParams(...))` and `.chat(conversations)`.

All prompts of a call go into one LLMEngine at once, so they are batched continuously and share
cached prefixes; outputs come back in the order of the prompts.
"""
from __future__ import annotations

import threading
from typing import Iterator, Sequence

from oci_engine.engine_args import EngineArgs, create_engine
from oci_engine.errors import InvalidRequestError
from oci_engine.model_cache import DEFAULT_MODEL
from oci_engine.outputs import RequestOutput


class LLM:
    def __init__(self, model: str = DEFAULT_MODEL, backend: str | None = None, dtype=None,
                 kv_cache_memory: float | None = None, block_size: int = 16, enable_prefix_caching: bool = True,
                 max_num_seqs: int = 64, max_num_batched_tokens: int = 2048, max_model_len: int | None = None,
                 seed: int | None = None, device: str | None = None, enforce_eager: bool = False,
                 kv_cache_dtype="auto"):
        self.engine = create_engine(EngineArgs(
            model=model, backend=backend, dtype=dtype, kv_cache_memory=kv_cache_memory, block_size=block_size,
            enable_prefix_caching=enable_prefix_caching, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len, seed=seed, device=device,
            enforce_eager=enforce_eager, kv_cache_dtype=kv_cache_dtype))
        self.tokenizer = self.engine.tokenizer
        self._lock = threading.Lock()  # one caller drives the engine at a time

    def get_tokenizer(self):
        return self.tokenizer

    @property
    def stats(self):
        return self.engine.stats()

    def generate(self, prompts: str | Sequence[str] | None = None, sampling_params=None,
                 prompt_token_ids: Sequence[int] | Sequence[Sequence[int]] | None = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        """One finished RequestOutput per prompt, in order. `sampling_params`: one for all or one
        per prompt. Every prompt is checked (context length included) before any work starts."""
        requests = self._requests(prompts, prompt_token_ids)
        params = self._params(sampling_params, len(requests))
        return self._run(requests, params, use_tqdm)

    def chat(self, messages, sampling_params=None, chat_template: str | None = None,
             add_generation_prompt: bool = True, use_tqdm: bool = True, **template_kwargs) -> list[RequestOutput]:
        """`messages`: one conversation (a list of {"role", "content"}) or a list of them."""
        if self.tokenizer is None:
            raise InvalidRequestError("this model has no tokenizer, so it cannot render a chat")
        if not messages:
            raise InvalidRequestError("chat() needs at least one message")
        conversations = [messages] if isinstance(messages[0], dict) else list(messages)
        requests = []
        for conv in conversations:
            text = self.tokenizer.apply_chat_template(conv, add_generation_prompt=add_generation_prompt,
                                                      chat_template=chat_template, **template_kwargs)
            # The template writes its own BOS, so encoding adds no special tokens.
            requests.append((text, self.tokenizer.encode(text, add_special_tokens=False)))
        return self._run(requests, self._params(sampling_params, len(requests)), use_tqdm)

    def stream(self, prompt: str | None = None, sampling_params=None, prompt_token_ids=None,
               cancel: threading.Event | None = None) -> Iterator[RequestOutput]:
        """Incremental outputs of one request (`delta_text`, `delta_token_ids`), the last one
        finished. Setting `cancel` (or closing the iterator) aborts it and frees its blocks."""
        text = prompt
        ids = self.engine.tokenize_prompt(prompt, prompt_token_ids)  # token ids win when both are given
        params = self._params(sampling_params, 1)[0]
        with self._lock:
            engine = self.engine
            rid = engine.add_request(None, text, params, prompt_token_ids=ids)
            done = False
            try:
                while not done:
                    if cancel is not None and cancel.is_set():
                        return
                    for out in engine.step():
                        if out.request_id == rid:
                            done = out.finished
                            yield out
            finally:
                if not done:
                    engine.abort(rid)

    # ---- helpers ------------------------------------------------------------------------------
    def _requests(self, prompts, prompt_token_ids) -> list[tuple[str | None, list[int]]]:
        engine = self.engine
        if prompt_token_ids is not None:
            if prompts is not None:
                raise InvalidRequestError("pass prompts or prompt_token_ids, not both")
            batch = [prompt_token_ids] if prompt_token_ids and isinstance(prompt_token_ids[0], int) else prompt_token_ids
            return [(None, engine.tokenize_prompt(None, ids)) for ids in batch]
        if prompts is None:
            raise InvalidRequestError("generate() needs prompts or prompt_token_ids")
        batch = [prompts] if isinstance(prompts, (str, dict)) else list(prompts)
        out = []
        for p in batch:
            if isinstance(p, dict):  # vLLM's {"prompt": ...} / {"prompt_token_ids": ...}
                text = p.get("prompt")
                out.append((text, engine.tokenize_prompt(text, p.get("prompt_token_ids"))))
            else:
                out.append((p, engine.tokenize_prompt(p)))
        return out

    @staticmethod
    def _params(sampling_params, n: int) -> list:
        from oci_engine.sampling_params import SamplingParams

        if sampling_params is None:
            return [SamplingParams()] * n
        if isinstance(sampling_params, SamplingParams):
            return [sampling_params] * n
        params = list(sampling_params)
        if len(params) != n:
            raise InvalidRequestError(f"got {len(params)} SamplingParams for {n} prompts; give one, or one per prompt")
        return params

    def _run(self, requests, params, use_tqdm: bool) -> list[RequestOutput]:
        with self._lock:
            engine = self.engine
            ids = [engine.add_request(None, text, p, prompt_token_ids=toks) for (text, toks), p in zip(requests, params)]
            results: dict[str, RequestOutput] = {}
            bar = None
            if use_tqdm and len(ids) > 1:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(ids), desc="generating", unit="req", dynamic_ncols=True)
            try:
                while len(results) < len(ids):
                    if not engine.has_unfinished():
                        raise RuntimeError("the engine lost requests it was given; this is a bug, please report it")
                    for out in engine.step(final_only=True):
                        if out.finished:
                            results[out.request_id] = out
                            if bar is not None:
                                bar.update(1)
            finally:
                if bar is not None:
                    bar.close()
                for rid in ids:
                    if rid not in results:
                        engine.abort(rid)
            return [results[rid] for rid in ids]
