"""What a cell gives back to the host.

`Result.error` is None when the cell ran to the end. Otherwise it is a `CellError`:
  type       the exception's class name ("ZeroDivisionError", "SyntaxError"), or one of the
             sandbox's own verdicts: "Timeout" (killed at the wall-clock deadline), "Crash"
             (the process died, e.g. a segfault or the CPU rlimit; `message` names the signal),
             "OutputLimit" (the result frame was too large), "SessionLost" (the session's state
             is gone; the next run starts a fresh one), "SandboxError" (the helper process failed).
  message    one line, without the type prefix
  traceback  the formatted traceback, frames and line numbers from the cell itself ("<cell>")
  lineno     the cell line the error points at, when known
`str(error)` renders the traceback (or "type: message"), ready to feed back to a model.
`Result.images` holds each matplotlib figure the cell left open, as PNG bytes.
"""
import base64
import json
import signal as _signal
from dataclasses import dataclass, field

from .cell import PLAIN, parse_plain


@dataclass(slots=True)
class CellError:
    type: str
    message: str
    traceback: str = ""
    lineno: int | None = None

    def __str__(self):
        return self.traceback.rstrip("\n") if self.traceback else f"{self.type}: {self.message}"


@dataclass(slots=True)
class Result:
    stdout: str = ""
    stderr: str = ""
    error: CellError | None = None
    timed_out: bool = False
    duration_s: float = 0.0
    images: list = field(default_factory=list)
    exit_signal: int | None = None

    @property
    def ok(self):
        return self.error is None

    def text(self):
        """stdout, stderr and the error in one block, the way a notebook shows a cell's output."""
        parts = [self.stdout, self.stderr, str(self.error) if self.error else ""]
        return "\n".join(p.rstrip("\n") for p in parts if p)


def _str(v, limit=1 << 22):
    return v[:limit] if isinstance(v, str) else ""


def from_done(header, body, timed_out, duration_s, timeout):
    """Build a Result from the zygote's 'done' frame. The body comes from the (untrusted) child:
    every field is type-checked and nothing in it can claim a verdict the host did not see."""
    r = Result(timed_out=timed_out, duration_s=duration_s, exit_signal=header.get("signal"))
    data = {}
    if body[:1] == PLAIN:
        data = parse_plain(body)
    elif body:
        try:
            data = json.loads(body)
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
    r.stdout, r.stderr = _str(data.get("stdout")), _str(data.get("stderr"))
    images = data.get("images")
    for img in images if isinstance(images, list) else []:
        try:
            png = base64.b64decode(img, validate=True)
        except (ValueError, TypeError):
            continue
        if png.startswith(b"\x89PNG"):
            r.images.append(png)
    err = data.get("error")
    if timed_out:
        r.error = CellError("Timeout", f"the cell ran past its {timeout:g} s limit and was killed; "
                            "make it faster or do less work per cell")
    elif header.get("reason") and header["reason"].startswith("session"):
        r.error = CellError("SessionLost", header["reason"] + "; the next run starts a fresh session "
                            "(re-run the definitions it needs)")
    elif header.get("reason"):
        r.error = CellError("OutputLimit" if "exceeded" in header["reason"] else "SandboxError",
                            header["reason"])
    elif isinstance(err, dict):
        lineno = err.get("lineno")
        r.error = CellError(_str(err.get("type"), 200) or "Exception", _str(err.get("message"), 8192),
                            _str(err.get("traceback"), 65536), lineno if isinstance(lineno, int) else None)
    elif not body or header.get("partial"):
        r.error = CellError("Crash", _death(header))
    return r


def _death(header):
    sig = header.get("signal")
    if sig:
        try:
            name = _signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        why = {"SIGSEGV": "segmentation fault (a crash in native code, or the C stack ran out)",
               "SIGSYS": "a forbidden system call (seccomp)",
               "SIGXCPU": "its CPU-time limit ran out",
               "SIGKILL": "killed (out of memory, or a limit)",
               "SIGABRT": "aborted"}.get(name, "")
        return f"the cell's process died from {name}" + (f": {why}" if why else "")
    return f"the cell's process exited (status {header.get('exit')}) before reporting a result"
