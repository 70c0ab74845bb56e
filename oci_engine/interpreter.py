"""The generate-execute-refine loop of OpenCodeInterpreter: the model replies, the Python it wrote
runs in the conversation's sandbox session, the result goes back as a user turn, and the model
tries again while it keeps writing code, up to max_rounds replies.

This is where the runtime and the sandbox meet. The loop itself (`Interpreter.stream`) is plain
synchronous Python that yields events; how tokens are produced is a `TokenStream` callable, so the
same loop serves the offline `LLM` (llm_stream) and the server's async engine (a thread per turn).
Every round re-sends the whole conversation; the prefix cache makes that cost only the new tokens.
"""
from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from oci_engine.code_blocks import INPUT_GUIDANCE, calls_input, extract_code_blocks, feedback_for_model

# (prompt_token_ids, sampling_params, cancel_event) -> incremental RequestOutputs (delta_text set)
TokenStream = Callable[[list[int], Any, threading.Event], Iterator[Any]]


@dataclass(slots=True)
class Event:
    """One step of a turn, in order: round, token*, reply, code, execution, ..., done."""
    type: str  # "round" | "token" | "reply" | "code" | "execution" | "done" | "error"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Turn:
    """What one user message led to. `messages` is the client's transcript of the turn."""
    messages: list[dict[str, Any]] = field(default_factory=list)
    rounds: int = 0
    cached_tokens: list[int] = field(default_factory=list)  # prompt tokens from the prefix cache, per round
    prompt_tokens: list[int] = field(default_factory=list)
    cancelled: bool = False

    @property
    def reply(self) -> str:
        """The model's last reply."""
        for m in reversed(self.messages):
            if m["role"] == "assistant":
                return m["content"]
        return ""


def render_output(result) -> str:
    """What a cell printed, as the model should read it: stdout, then stderr, then the error."""
    parts = [result.stdout or "", result.stderr or ""]
    error = getattr(result, "error", None)
    if getattr(result, "timed_out", False):
        parts.append("Execution timed out.")  # the paper's wording, which its models were trained on
    elif error:
        parts.append(str(error))
    text = ""
    for p in parts:
        if p:
            text += p if (not text or text.endswith("\n")) else "\n" + p
    return text


def llm_stream(llm) -> TokenStream:
    """A TokenStream over the offline LLM's engine (one conversation at a time)."""
    def stream(prompt_token_ids, params, cancel):
        yield from llm.stream(prompt_token_ids=prompt_token_ids, sampling_params=params, cancel=cancel)
    return stream


class Interpreter:
    """A conversation with a model that can run code. Owns a sandbox session."""

    def __init__(self, llm=None, max_rounds: int = 3, *, sandbox=None, system_prompt: str | None = None,
                 sampling_params=None, run_all_blocks: bool = False, timeout: float = 10.0,
                 feedback_limit: int = 1000, token_stream: TokenStream | None = None, tokenizer=None):
        if token_stream is None and llm is None:
            raise ValueError("Interpreter needs an LLM (or a token_stream and a tokenizer)")
        self.tokenizer = tokenizer if tokenizer is not None else llm.tokenizer
        self.token_stream = token_stream or llm_stream(llm)
        self.max_rounds = max_rounds
        self.run_all_blocks = run_all_blocks
        self.timeout = timeout
        self.feedback_limit = feedback_limit
        if sampling_params is None:
            from oci_engine.sampling_params import SamplingParams
            sampling_params = SamplingParams(temperature=0.0, max_tokens=1024)
        self.sampling_params = sampling_params
        self._own_sandbox = sandbox is None
        if sandbox is None:
            from oci_engine.sandbox import Sandbox
            sandbox = Sandbox()
        self.sandbox = sandbox
        self.session = sandbox.session()
        self.history: list[dict[str, str]] = []  # what the model sees
        if system_prompt:
            self.history.append({"role": "system", "content": system_prompt})
        self._cancel = threading.Event()
        self._lock = threading.Lock()  # one turn at a time per conversation

    # -- public API -----------------------------------------------------------------------
    def send(self, content: str, *, max_rounds: int | None = None,
             on_event: Callable[[Event], None] | None = None) -> Turn:
        turn = None
        for event in self.stream(content, max_rounds=max_rounds):
            if on_event is not None:
                on_event(event)
            if event.type == "done":
                turn = event.data["turn"]
        return turn

    def cancel(self) -> None:
        """Stop the running turn: generation ends at the next token, no further cell runs."""
        self._cancel.set()

    def reset(self) -> None:
        """Forget the conversation and the session's state."""
        system = [m for m in self.history[:1] if m["role"] == "system"]
        self.history = system
        self.session.reset()

    def close(self) -> None:
        try:
            self.session.close()
        finally:
            if self._own_sandbox:
                self.sandbox.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the loop -------------------------------------------------------------------------
    def stream(self, content: str, *, max_rounds: int | None = None,
               sampling_params=None) -> Iterator[Event]:
        max_rounds = self.max_rounds if max_rounds is None else max_rounds
        params = sampling_params or self.sampling_params
        with self._lock:
            self._cancel.clear()
            start, finished = len(self.history), False
            try:
                for event in self._turn(content, max_rounds, params):
                    finished = event.type == "done"
                    yield event
            except BaseException:
                # A turn that failed (e.g. the conversation outgrew the context) or was torn down
                # before its end leaves no trace, so the next message starts from a consistent history.
                if not finished:
                    del self.history[start:]
                raise

    def _turn(self, content: str, max_rounds: int, params) -> Iterator[Event]:
        # the caller, stream(), holds the conversation's lock
        turn = Turn()
        self.history.append({"role": "user", "content": content})
        turn.messages.append({"role": "user", "content": content})
        for round_no in range(1, max_rounds + 1):
            if self._cancel.is_set():
                break
            turn.rounds = round_no
            yield Event("round", {"round": round_no})
            reply, final = "", None
            prompt_ids = self.tokenizer.apply_chat_template(self.history, add_generation_prompt=True,
                                                            tokenize=True)
            for out in self.token_stream(prompt_ids, params, self._cancel):
                if out.delta_text:
                    reply += out.delta_text
                    yield Event("token", {"text": out.delta_text, "round": round_no})
                final = out
            if final is not None:
                reply = final.text
                turn.cached_tokens.append(final.num_cached_tokens)
                turn.prompt_tokens.append(len(final.prompt_token_ids))
            self.history.append({"role": "assistant", "content": reply})
            turn.messages.append({"role": "assistant", "content": reply, "round": round_no})
            yield Event("reply", {"text": reply, "round": round_no,
                                  "finish_reason": getattr(final, "finish_reason", None),
                                  "prompt_tokens": len(final.prompt_token_ids) if final is not None else 0,
                                  "output_tokens": len(final.token_ids) if final is not None else 0,
                                  "cached_tokens": final.num_cached_tokens if final is not None else 0})
            blocks = extract_code_blocks(reply)
            if not blocks or self._cancel.is_set():
                break
            code = "\n\n".join(blocks) if self.run_all_blocks else blocks[-1]
            turn.messages.append({"role": "code", "content": code, "round": round_no})
            yield Event("code", {"code": code, "round": round_no})
            execution = self._execute(code)
            execution["round"] = round_no
            turn.messages.append({"role": "execution", **execution})
            yield Event("execution", execution)
            self.history.append({"role": "user", "content": execution["feedback"]})
        turn.cancelled = self._cancel.is_set()
        yield Event("done", {"turn": turn, "rounds": turn.rounds, "cancelled": turn.cancelled,
                             "cached_tokens": sum(turn.cached_tokens)})

    def _execute(self, code: str) -> dict[str, Any]:
        if calls_input(code):
            return {"stdout": "", "stderr": "", "error": None, "error_type": None, "timed_out": False, "images": [],
                    "duration_s": 0.0, "skipped": True, "feedback": INPUT_GUIDANCE}
        result = self.session.run(code, timeout=self.timeout)
        full = render_output(result)
        error = result.error
        return {
            "stdout": result.stdout, "stderr": result.stderr,
            "error": None if not error or result.timed_out else str(error),
            "error_type": None if not error else error.type,
            "timed_out": bool(result.timed_out),
            "images": [base64.b64encode(png).decode("ascii") for png in (result.images or [])],
            "duration_s": result.duration_s, "skipped": False,
            "feedback": feedback_for_model(full, limit=self.feedback_limit),
        }
