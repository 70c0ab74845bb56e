"""The engine for the server: `async for out in engine.generate(...)` streams one request.

    engine = AsyncLLMEngine.from_args(EngineArgs(model="smollm2-135m"))
    async for out in engine.generate("def fib(n):", SamplingParams(max_tokens=64)):
        send(out.delta_text)           # out.finished, out.finish_reason on the last one

One background thread owns the LLMEngine and calls step() while there is work; the event loop
never runs a forward pass. Requests and aborts reach that thread through a queue, so engine state
has a single writer. Validation (tokenizing, the context-length check) runs in the caller, so a bad
request raises at once in `generate`. When the consumer stops iterating (client gone, task
cancelled) the request is aborted and its blocks are freed.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from typing import AsyncIterator

from oci_engine.engine import LLMEngine
from oci_engine.metrics import EngineStats
from oci_engine.outputs import RequestOutput

logger = logging.getLogger("oci_engine")


class EngineDeadError(RuntimeError):
    """The engine thread failed; the request could not finish."""


class AsyncLLMEngine:
    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self._commands: deque = deque()
        self._wake = threading.Event()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._ids = itertools.count()
        self._stopped = False
        self._stats = engine.stats()
        self._thread = threading.Thread(target=self._loop, name="oci-engine-loop", daemon=True)
        self._thread.start()

    @classmethod
    def from_args(cls, args) -> "AsyncLLMEngine":
        from oci_engine.engine_args import create_engine

        return cls(create_engine(args))

    # ---- caller side (event loop) -----------------------------------------------------------
    async def generate(self, prompt: str | None = None, sampling_params=None, request_id: str | None = None,
                       prompt_token_ids: list[int] | None = None) -> AsyncIterator[RequestOutput]:
        if self._stopped:
            raise EngineDeadError("the engine has been shut down")
        ids = self.engine.tokenize_prompt(prompt, prompt_token_ids)  # raises ContextLengthError etc.
        if sampling_params is None:
            from oci_engine.sampling_params import SamplingParams

            sampling_params = SamplingParams()
        rid = f"async-{next(self._ids)}" if request_id is None else str(request_id)
        if rid in self._streams:
            from oci_engine.errors import InvalidRequestError

            raise InvalidRequestError(f"request id {rid!r} is already streaming; use a unique id")
        queue: asyncio.Queue = asyncio.Queue()
        self._streams[rid] = (asyncio.get_running_loop(), queue)
        self._send(("add", rid, prompt, sampling_params, ids, time.monotonic()))
        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            self._streams.pop(rid, None)
            if not finished:
                self._send(("abort", rid))

    async def abort(self, request_id: str) -> None:
        self._send(("abort", str(request_id)))

    def stats(self) -> EngineStats:
        """Snapshot taken by the engine thread after its latest step."""
        return self._stats

    def shutdown(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=30)

    def _send(self, command) -> None:
        self._commands.append(command)
        self._wake.set()

    # ---- engine thread ------------------------------------------------------------------------
    def _deliver(self, rid: str, item) -> None:
        stream = self._streams.get(rid)
        if stream is not None:
            loop, queue = stream
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the consumer's loop is closed: nobody is listening
                self._commands.append(("abort", rid))

    def _apply_commands(self) -> None:
        engine = self.engine
        while self._commands:
            cmd = self._commands.popleft()
            if cmd[0] == "abort":
                engine.abort(cmd[1])
                continue
            _, rid, prompt, params, ids, arrival = cmd
            if rid not in self._streams:
                continue  # the consumer went away before the request started
            try:
                engine.add_request(rid, prompt, params, prompt_token_ids=ids, arrival_time=arrival)
            except Exception as e:  # e.g. a duplicate id racing another request
                self._deliver(rid, e)

    def _loop(self) -> None:
        engine = self.engine
        while not self._stopped:
            self._apply_commands()
            if not engine.has_unfinished():
                self._stats = engine.stats()
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                outputs = engine.step()
            except Exception as e:  # a bug or an out-of-memory: fail the requests, keep serving
                logger.exception("engine step failed; aborting its requests")
                for rid in list(self._streams):
                    engine.abort(rid)
                    self._deliver(rid, EngineDeadError(f"generation failed: {e}"))
                continue
            for out in outputs:
                self._deliver(out.request_id, out)
            self._stats = engine.stats()
        for rid in list(self._streams):
            self._deliver(rid, EngineDeadError("the engine was shut down"))
