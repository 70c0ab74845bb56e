"""Interpreter sessions of the server: one Interpreter (and sandbox session) per conversation.

A turn's loop is synchronous (generation, then a blocking sandbox run), so it runs in a worker
thread; its tokens come from the shared async engine, where every session's requests are batched
together. Events travel back to the event loop through an asyncio.Queue.
"""
from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

from oci_engine.interpreter import Interpreter

_END = object()


def engine_token_stream(engine, loop: asyncio.AbstractEventLoop):
    """A TokenStream (see interpreter.py) that runs each request on the async engine."""
    def stream(prompt_token_ids, params, cancel: threading.Event):
        q: queue.Queue = queue.Queue()

        async def pump():
            try:
                async for out in engine.generate(None, params, prompt_token_ids=prompt_token_ids):
                    q.put(out)
                    if cancel.is_set():
                        break  # leaving the iterator aborts the request and frees its blocks
            except BaseException as e:  # noqa: BLE001 - handed to the consuming thread
                q.put(e)
            finally:
                q.put(_END)

        fut = asyncio.run_coroutine_threadsafe(pump(), loop)
        ended = False
        try:
            while True:
                item = q.get()
                if item is _END:
                    ended = True
                    return
                if isinstance(item, BaseException):
                    if isinstance(item, asyncio.CancelledError):
                        ended = True
                        return
                    raise item
                yield item
        finally:
            # Only a consumer that left early stops the request. After _END the pump may still be
            # finishing (its future not yet done): that is no reason to cancel the whole turn.
            if not ended:
                fut.cancel()
    return stream


@dataclass
class ServerSession:
    id: str
    interpreter: Interpreter
    max_rounds: int
    created: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    transcript: list = field(default_factory=list)
    busy: bool = False
    turns: int = 0


class SessionLimitError(Exception):
    pass


class SessionManager:
    def __init__(self, engine, tokenizer, sandbox, *, max_sessions: int = 64, idle_timeout: float = 1800.0,
                 cell_timeout: float = 10.0):
        self.engine, self.tokenizer, self.sandbox = engine, tokenizer, sandbox
        self.max_sessions, self.idle_timeout, self.cell_timeout = max_sessions, idle_timeout, cell_timeout
        self.sessions: dict[str, ServerSession] = {}
        self._lock = threading.Lock()

    def create(self, loop, system_prompt: str | None, max_rounds: int) -> ServerSession:
        with self._lock:
            self.expire_idle()
            if len(self.sessions) >= self.max_sessions:
                raise SessionLimitError(f"{self.max_sessions} interpreter sessions are open; delete one "
                                        "(DELETE /v1/interpreter/sessions/{id}) or wait for idle ones to expire")
            interp = Interpreter(max_rounds=max_rounds, sandbox=self.sandbox, system_prompt=system_prompt,
                                 token_stream=engine_token_stream(self.engine, loop), tokenizer=self.tokenizer,
                                 timeout=self.cell_timeout)
            s = ServerSession(uuid.uuid4().hex[:16], interp, max_rounds)
            self.sessions[s.id] = s
            return s

    def get(self, sid: str) -> ServerSession | None:
        s = self.sessions.get(sid)
        if s is not None:
            s.last_used = time.monotonic()
        return s

    def close(self, sid: str) -> bool:
        with self._lock:
            s = self.sessions.pop(sid, None)
        if s is None:
            return False
        s.interpreter.cancel()
        s.interpreter.close()
        return True

    def expire_idle(self) -> int:
        now = time.monotonic()
        stale = [sid for sid, s in self.sessions.items() if not s.busy and now - s.last_used > self.idle_timeout]
        for sid in stale:
            s = self.sessions.pop(sid)
            s.interpreter.close()
        return len(stale)

    def close_all(self) -> None:
        for sid in list(self.sessions):
            self.close(sid)
