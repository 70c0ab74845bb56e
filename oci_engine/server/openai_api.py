"""OpenAI-compatible endpoints: /v1/chat/completions, /v1/completions, /v1/models."""
from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from oci_engine.server.errors import APIError, to_api_error, error_body
from oci_engine.server.protocol import ChatCompletionRequest, CompletionRequest
from oci_engine.server.sse import SSE_HEADERS, sse

router = APIRouter()


def _state(request: Request):
    return request.app.state.oci


def _check_model(state, name: str | None) -> None:
    if name and name not in (state.model_name, state.model_path):
        raise APIError(404, f"the model {name!r} does not exist; this server serves {state.model_name!r}",
                       param="model", code="model_not_found")


def _sampling_params(req, prompt_len: int, max_len: int, logprobs: int | None):
    from oci_engine.sampling_params import SamplingParams

    room = max_len - prompt_len
    if room <= 0:
        raise APIError(400, f"the prompt has {prompt_len} tokens, which fills the model's context of {max_len}; "
                            "shorten it", param="messages", code="context_length_exceeded")
    max_tokens = req.max_completion_tokens or req.max_tokens
    if max_tokens is not None and max_tokens > room:
        raise APIError(400, f"max_tokens={max_tokens} plus the prompt's {prompt_len} tokens exceeds the model's "
                            f"context of {max_len}; ask for at most {room}", param="max_tokens",
                       code="context_length_exceeded")
    return SamplingParams(
        n=req.n, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, min_p=req.min_p, seed=req.seed,
        max_tokens=max_tokens or room, stop=req.stop, stop_token_ids=req.stop_token_ids, ignore_eos=req.ignore_eos,
        logprobs=logprobs, presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty)


def _usage(out, state=None) -> dict:
    completion = sum(len(c.token_ids) for c in out.outputs)
    prompt = len(out.prompt_token_ids)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": out.num_cached_tokens}}


def _token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def _chat_logprobs(tokenizer, token_ids, logprobs, top: int) -> dict | None:
    if logprobs is None:
        return None
    content = []
    for tid, dist in zip(token_ids, logprobs):
        text = _token_text(tokenizer, tid)
        ranked = sorted(dist.items(), key=lambda kv: -kv[1])[:top]
        content.append({"token": text, "logprob": dist.get(tid, float("-inf")), "bytes": list(text.encode()),
                        "top_logprobs": [{"token": (t := _token_text(tokenizer, i)), "logprob": lp,
                                          "bytes": list(t.encode())} for i, lp in ranked]})
    return {"content": content}


def _completion_logprobs(tokenizer, token_ids, logprobs, offset0: int) -> dict | None:
    if logprobs is None:
        return None
    tokens, token_lps, tops, offsets = [], [], [], []
    pos = offset0
    for tid, dist in zip(token_ids, logprobs):
        text = _token_text(tokenizer, tid)
        tokens.append(text)
        token_lps.append(dist.get(tid))
        tops.append({_token_text(tokenizer, i): lp for i, lp in dist.items()})
        offsets.append(pos)
        pos += len(text)
    return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}


async def _watch_disconnect(request: Request, task: asyncio.Task) -> None:
    """Non-streaming requests: cancel the generation (freeing its KV blocks) when the client leaves."""
    while not task.done():
        if await request.is_disconnected():
            task.cancel()
            return
        await asyncio.sleep(0.25)


async def _collect(engine, prompt, params, prompt_token_ids):
    final = None
    async for out in engine.generate(prompt, params, prompt_token_ids=prompt_token_ids):
        final = out
    return final


async def _run_to_end(request: Request, engine, prompt, params, ids):
    task = asyncio.ensure_future(_collect(engine, prompt, params, ids))
    watcher = asyncio.ensure_future(_watch_disconnect(request, task))
    try:
        return await task
    finally:
        watcher.cancel()


def _record(state, out) -> None:
    m = state.metrics
    m.inc("oci_requests_total")
    m.inc("oci_prompt_tokens_total", len(out.prompt_token_ids))
    m.inc("oci_cached_prompt_tokens_total", out.num_cached_tokens)
    m.inc("oci_generation_tokens_total", sum(len(c.token_ids) for c in out.outputs))
    rm = out.metrics
    if rm is not None:
        if rm.time_to_first_token is not None:
            m.observe(m.ttft, rm.time_to_first_token)
        if rm.time_per_output_token is not None:
            m.observe(m.tpot, rm.time_per_output_token)


@router.get("/v1/models")
async def list_models(request: Request):
    state = _state(request)
    return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": state.started,
                                        "owned_by": "oci-engine", "root": state.model_path,
                                        "max_model_len": state.max_model_len}]}


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    state = _state(request)
    _check_model(state, body.model)
    tok = state.tokenizer
    messages = [{"role": m.role if m.role != "developer" else "system", "content": m.text()} for m in body.messages]
    try:
        text = tok.apply_chat_template(messages, add_generation_prompt=body.add_generation_prompt)
    except Exception as e:  # a template that rejects the conversation (e.g. roles out of order)
        raise APIError(400, f"the chat template rejected these messages: {e}", param="messages") from e
    ids = tok.encode(text, add_special_tokens=False)
    top = body.top_logprobs or 0
    params = _sampling_params(body, len(ids), state.max_model_len, top if body.logprobs else None)
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        return StreamingResponse(_chat_stream(state, body, text, ids, params, rid, created, top),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    out = await _run_to_end(request, state.engine, text, params, ids)
    _record(state, out)
    choices = [{"index": c.index, "message": {"role": "assistant", "content": c.text},
                "logprobs": _chat_logprobs(tok, c.token_ids, c.logprobs, top) if body.logprobs else None,
                "finish_reason": c.finish_reason} for c in out.outputs]
    return {"id": rid, "object": "chat.completion", "created": created, "model": state.model_name,
            "choices": choices, "usage": _usage(out)}


async def _chat_stream(state, body, text, ids, params, rid, created, top):
    tok = state.tokenizer
    base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": state.model_name}
    started = set()
    final = None
    try:
        async for out in state.engine.generate(text, params, prompt_token_ids=ids):
            final = out
            for c in out.outputs:
                delta = {}
                if c.index not in started:
                    started.add(c.index)
                    delta["role"] = "assistant"
                if c.delta_text:
                    delta["content"] = c.delta_text
                if not delta and c.finish_reason is None:
                    continue
                choice = {"index": c.index, "delta": delta, "finish_reason": c.finish_reason, "logprobs": None}
                if body.logprobs and c.logprobs and c.delta_token_ids:
                    n = len(c.delta_token_ids)
                    choice["logprobs"] = _chat_logprobs(tok, c.delta_token_ids, c.logprobs[-n:], top)
                yield sse({**base, "choices": [choice]})
        if final is not None:
            _record(state, final)
            if body.stream_options and body.stream_options.include_usage:
                yield sse({**base, "choices": [], "usage": _usage(final)})
        yield sse("[DONE]")
    except Exception as e:  # the stream has started: report in-band, never take the server down
        state.metrics.inc("oci_request_errors_total")
        err = to_api_error(e)
        yield sse(error_body(err.message, err.type, err.param, err.code))
        yield sse("[DONE]")


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request):
    state = _state(request)
    _check_model(state, body.model)
    tok = state.tokenizer
    p = body.prompt
    if isinstance(p, list) and p and isinstance(p[0], list):
        prompts = [(None, [int(t) for t in x]) for x in p]
    elif isinstance(p, list) and p and isinstance(p[0], int):
        prompts = [(None, [int(t) for t in p])]
    else:
        texts = [p] if isinstance(p, str) else list(p)
        if not texts:
            raise APIError(400, "prompt is empty", param="prompt")
        prompts = [(t, tok.encode(t)) for t in texts]
    if body.stream and len(prompts) > 1:
        raise APIError(400, "streaming supports one prompt per request", param="prompt")
    rid = f"cmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    all_params = [_sampling_params(body, len(ids), state.max_model_len, body.logprobs) for _, ids in prompts]
    if body.stream:
        (text, ids), = prompts
        return StreamingResponse(_completion_stream(state, body, text, ids, all_params[0], rid, created),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    outs = await asyncio.gather(*[_run_to_end(request, state.engine, t, prm, ids)
                                  for (t, ids), prm in zip(prompts, all_params)])
    choices, usage = [], {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
                          "prompt_tokens_details": {"cached_tokens": 0}}
    for i, out in enumerate(outs):
        _record(state, out)
        prefix = (prompts[i][0] if prompts[i][0] is not None else tok.decode(out.prompt_token_ids)) if body.echo else ""
        for c in out.outputs:
            choices.append({"index": i * body.n + c.index, "text": prefix + c.text, "finish_reason": c.finish_reason,
                            "logprobs": _completion_logprobs(tok, c.token_ids, c.logprobs, len(prefix))
                            if body.logprobs is not None else None})
        u = _usage(out)
        for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
            usage[k] += u[k]
        usage["prompt_tokens_details"]["cached_tokens"] += out.num_cached_tokens
    return {"id": rid, "object": "text_completion", "created": created, "model": state.model_name,
            "choices": choices, "usage": usage}


async def _completion_stream(state, body, text, ids, params, rid, created):
    tok = state.tokenizer
    base = {"id": rid, "object": "text_completion", "created": created, "model": state.model_name}
    final = None
    try:
        if body.echo:
            yield sse({**base, "choices": [{"index": 0, "text": text if text is not None else tok.decode(ids),
                                            "finish_reason": None, "logprobs": None}]})
        async for out in state.engine.generate(text, params, prompt_token_ids=ids):
            final = out
            for c in out.outputs:
                if not c.delta_text and c.finish_reason is None:
                    continue
                lp = None
                if body.logprobs is not None and c.logprobs and c.delta_token_ids:
                    n = len(c.delta_token_ids)
                    lp = _completion_logprobs(tok, c.delta_token_ids, c.logprobs[-n:], 0)
                yield sse({**base, "choices": [{"index": c.index, "text": c.delta_text,
                                                "finish_reason": c.finish_reason, "logprobs": lp}]})
        if final is not None:
            _record(state, final)
            if body.stream_options and body.stream_options.include_usage:
                yield sse({**base, "choices": [], "usage": _usage(final)})
        yield sse("[DONE]")
    except Exception as e:
        state.metrics.inc("oci_request_errors_total")
        err = to_api_error(e)
        yield sse(error_body(err.message, err.type, err.param, err.code))
        yield sse("[DONE]")
