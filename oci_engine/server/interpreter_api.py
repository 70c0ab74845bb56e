"""Interpreter sessions over HTTP: create, send a message (SSE stream of the turn), read, delete."""
from __future__ import annotations

import asyncio
import contextlib
import threading

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from oci_engine.sampling_params import SamplingParams
from oci_engine.server.errors import APIError, to_api_error
from oci_engine.server.protocol import SessionCreateRequest, SessionMessageRequest
from oci_engine.server.sessions import SessionLimitError
from oci_engine.server.sse import SSE_HEADERS, sse

router = APIRouter(prefix="/v1/interpreter")


def _session(request: Request, sid: str):
    s = request.app.state.oci.sessions.get(sid)
    if s is None:
        raise APIError(404, f"no interpreter session {sid!r}; create one with POST /v1/interpreter/sessions",
                       code="session_not_found")
    return s


@router.post("/sessions")
async def create_session(request: Request, body: SessionCreateRequest | None = None):
    body = body or SessionCreateRequest()
    state = request.app.state.oci
    try:
        s = await asyncio.to_thread(state.sessions.create, asyncio.get_running_loop(), body.system_prompt,
                                    body.max_rounds)
    except SessionLimitError as e:
        raise APIError(429, str(e), code="too_many_sessions") from e
    return {"id": s.id, "object": "interpreter.session", "created": int(s.created), "max_rounds": s.max_rounds}


@router.get("/sessions/{sid}")
async def get_session(sid: str, request: Request):
    s = _session(request, sid)
    return {"id": s.id, "object": "interpreter.session", "created": int(s.created), "busy": s.busy,
            "messages": s.transcript}


@router.delete("/sessions/{sid}")
async def delete_session(sid: str, request: Request):
    state = request.app.state.oci
    _session(request, sid)
    await asyncio.to_thread(state.sessions.close, sid)
    return {"id": sid, "object": "interpreter.session.deleted", "deleted": True}


def _public(event) -> dict:
    data = dict(event.data)
    data.pop("feedback", None)
    return data


@router.post("/sessions/{sid}/messages")
async def send_message(sid: str, body: SessionMessageRequest, request: Request):
    state = request.app.state.oci
    s = _session(request, sid)
    if s.busy:
        raise APIError(409, "this session is still answering its previous message; wait for it or stop it",
                       code="session_busy")
    room = state.max_model_len // 2
    params = SamplingParams(temperature=body.temperature, max_tokens=min(body.max_tokens, room),
                            seed=0 if body.temperature > 0 else None)
    s.busy = True
    s.turns += 1
    mine = s.turns  # a late clean-up of this turn must not free the session for the next one
    s.interpreter.run_all_blocks = body.run_all_blocks
    rounds = body.max_rounds or s.max_rounds
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    done = object()

    def work():
        try:
            for ev in s.interpreter.stream(body.content, max_rounds=rounds, sampling_params=params):
                if ev.type == "reply":
                    state.metrics.inc("oci_prompt_tokens_total", ev.data["prompt_tokens"])
                    state.metrics.inc("oci_cached_prompt_tokens_total", ev.data["cached_tokens"])
                    state.metrics.inc("oci_generation_tokens_total", ev.data["output_tokens"])
                if ev.type == "done":  # recorded here so a turn the client left is still in the transcript
                    s.transcript.extend(ev.data["turn"].messages)
                    if s.turns == mine:  # before the client hears "done", so its next message is welcome
                        s.busy = False
                loop.call_soon_threadsafe(events.put_nowait, ev)
        except BaseException as e:  # noqa: BLE001 - reported to the client in-band
            loop.call_soon_threadsafe(events.put_nowait, e)
        finally:
            # The worker, not the response, frees the session: a response cancelled by a client
            # disconnect never gets to run its own clean-up awaits.
            if s.turns == mine:
                s.busy = False
            with contextlib.suppress(RuntimeError):  # the event loop is gone (shutdown)
                loop.call_soon_threadsafe(events.put_nowait, done)

    thread = threading.Thread(target=work, name=f"session-{sid}", daemon=True)
    thread.start()

    async def stream():
        finished = False
        try:
            while True:
                ev = await events.get()
                if ev is done:
                    finished = True
                    return
                if isinstance(ev, BaseException):
                    state.metrics.inc("oci_request_errors_total")
                    err = to_api_error(ev)
                    yield sse({"message": err.message, "type": err.type, "code": err.code}, event="error")
                    continue
                if ev.type == "execution":
                    state.metrics.inc("oci_sandbox_executions_total")
                    if ev.data.get("error_type") or ev.data.get("timed_out"):
                        state.metrics.inc("oci_sandbox_failures_total")
                    state.metrics.observe(state.metrics.sandbox, ev.data.get("duration_s") or 0.0)
                if ev.type == "done":
                    state.metrics.inc("oci_requests_total", ev.data["rounds"])
                    yield sse({k: v for k, v in ev.data.items() if k != "turn"}, event="done")
                    continue
                yield sse(_public(ev), event=ev.type)
        finally:
            if not finished:
                s.interpreter.cancel()  # the client went away: stop generating, run nothing more

    return StreamingResponse(stream(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/sessions/{sid}/cancel")
async def cancel(sid: str, request: Request):
    s = _session(request, sid)
    s.interpreter.cancel()
    return {"id": sid, "cancelled": s.busy}
