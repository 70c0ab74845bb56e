"""Runs one cell inside an already isolated child, the way a notebook does.

The last expression's value is displayed, stdout/stderr are captured at the file-descriptor level
(so os.write and C extensions are caught too) into memory files and returned head+tail with a
marker, exceptions come back with the cell's own line numbers, figures come back as PNG, and
input() explains that nobody is there to type.
"""
import ast
import base64
import builtins
import io
import json
import linecache
import os
import struct
import sys
import traceback

from . import reseed

CELL_FILENAME = "<cell>"
NO_INPUT = ("input() is not available: the code runs unattended and nobody can type an answer. "
            "Assign the values directly in the code instead (for example: n = 5).")


def _no_input(prompt=""):
    raise EOFError(NO_INPUT)


def _stream(fd):
    return io.TextIOWrapper(io.FileIO(fd, "wb", closefd=False), encoding="utf-8",
                            errors="backslashreplace", write_through=True)


_streams = []  # the wrappers of fds 1 and 2, made once: they follow whatever file the fd holds


class Capture:
    """fds 1 and 2 already point at memory files (the zygote holds them too, so output written
    before a kill is not lost); Python's streams write straight through to them.

    The stream objects are made once, in the process every cell is forked from, and reused: a
    fresh fork holds its own pristine copy, and a session's next cell gets them back unless a
    cell closed them. Building them in each child would touch (and so copy) some 70 pages."""

    def __init__(self, out_fd, err_fd):
        self.out, self.err = out_fd, err_fd
        if not _streams or _streams[0].closed or _streams[1].closed:
            _streams[:] = [_stream(1), _stream(2)]
        self.stdout, self.stderr = _streams
        sys.stdout, sys.stderr = self.stdout, self.stderr
        sys.__stdout__, sys.__stderr__ = self.stdout, self.stderr

    def flush(self):
        for s in (sys.stdout, sys.stderr, self.stdout, self.stderr):
            try:
                s.flush()
            except Exception:
                pass

    @staticmethod
    def read(fd, cap):
        size = os.fstat(fd).st_size
        if size <= cap:
            return os.pread(fd, size, 0).decode("utf-8", "replace")
        head, tail = cap // 2, cap - cap // 2
        marker = f"\n... [{size - cap} bytes truncated] ...\n"
        return (os.pread(fd, head, 0).decode("utf-8", "replace") + marker
                + os.pread(fd, tail, size - tail).decode("utf-8", "replace"))


def prepare_process():
    """What every cell's process needs and that is the same for all: done once in the template."""
    builtins.input = _no_input
    sys.stdin = io.StringIO()
    reseed.prepare_template()


def prepare(namespace):
    """A session's cell: its state may have replaced input/stdin or drawn random numbers."""
    builtins.input = _no_input
    sys.stdin = io.StringIO()
    reseed.reseed()
    return namespace


def new_namespace():
    import types
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    return main.__dict__


_WARM_CODE = "_w = 1\n_w"


def warm(capture, limits):
    """Walk a cell's path once, in a scratch namespace, before the real code arrives.

    A fresh fork copies each page the first time it writes to it; compiling, running and
    packaging even a trivial cell first touches some hundred of them. Doing it here, while the
    process waits for its code anyway, takes those copies off the path the caller waits on.
    Nothing is printed and the cell's own namespace is untouched."""
    run(_WARM_CODE, {"__builtins__": builtins}, display=False)
    figures()
    plain_body(Capture.read(capture.out, limits.stdout_bytes),
               Capture.read(capture.err, limits.stderr_bytes))


def run(code, namespace, display=True):
    """Execute `code` in `namespace`. Returns the error dict or None."""
    linecache.cache[CELL_FILENAME] = (len(code), None, code.splitlines(True), CELL_FILENAME)
    try:
        tree = ast.parse(code, CELL_FILENAME, "exec")
        last = None
        # As in IPython, a trailing semicolon hides the value.
        if tree.body and isinstance(tree.body[-1], ast.Expr) and not code.rstrip().endswith(";"):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, CELL_FILENAME, "exec"), namespace)
        if last is not None:
            value = eval(compile(last, CELL_FILENAME, "eval"), namespace)
            if value is not None:
                if display:
                    namespace["_"] = value
                text = repr(value)
                print(text if display else "", end="\n" if display else "")
        return None
    except BaseException as e:  # SystemExit and KeyboardInterrupt end a cell too
        return describe_exception(e)


def describe_exception(e):
    try:
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != CELL_FILENAME:
            tb = tb.tb_next  # drop the runner's own frames
        te = traceback.TracebackException(type(e), e, tb, limit=50)
        te.stack[:] = [f for f in te.stack if f.filename != __file__]  # e.g. our input() stand-in
        text = "".join(te.format())
        lineno = getattr(e, "lineno", None) if isinstance(e, SyntaxError) else None
        if lineno is None and tb is not None:
            while tb.tb_next is not None and tb.tb_next.tb_frame.f_code.co_filename == CELL_FILENAME:
                tb = tb.tb_next
            lineno = tb.tb_lineno
        message = "".join(te.format_exception_only()).strip()
        prefix = type(e).__qualname__ + ": "
        message = message[len(prefix):] if message.startswith(prefix) else message
        return {"type": type(e).__qualname__, "message": message[:4096], "traceback": text[-16384:],
                "lineno": lineno}
    except BaseException as inner:  # a hostile __str__ must not hide the failure
        return {"type": "Exception", "message": f"(unprintable exception: {type(inner).__name__})",
                "traceback": "", "lineno": None}


def figures():
    plt = sys.modules.get("matplotlib.pyplot")
    helpers = sys.modules.get("matplotlib._pylab_helpers")
    if plt is None or (helpers is not None and not helpers.Gcf.figs):
        return []  # nothing open: skip pyplot's own bookkeeping
    images = []
    try:
        for num in plt.get_fignums():
            fig = plt.figure(num)
            buf = io.BytesIO()
            fig.savefig(buf, format="png")
            images.append(base64.b64encode(buf.getvalue()).decode())
        plt.close("all")
    except Exception:
        pass
    return images


def output_only(out_fd, err_fd, limits):
    """The body the zygote sends for a cell that died or was killed: what it printed so far."""
    return json.dumps({"stdout": Capture.read(out_fd, limits.stdout_bytes),
                       "stderr": Capture.read(err_fd, limits.stderr_bytes),
                       "error": None, "images": []}).encode()


PLAIN = b"\x00"  # a body that is not JSON: PLAIN, u32 stdout length, u32 stderr length, both UTF-8
_LENGTHS = struct.Struct("<II")


def plain_body(stdout, stderr):
    out, err = stdout.encode("utf-8", "surrogatepass"), stderr.encode("utf-8", "surrogatepass")
    return PLAIN + _LENGTHS.pack(len(out), len(err)) + out + err


def parse_plain(body):
    """{'stdout', 'stderr'} from a PLAIN body, or {} if it is malformed (it comes from the cell)."""
    if len(body) < 1 + _LENGTHS.size:
        return {}
    n_out, n_err = _LENGTHS.unpack_from(body, 1)
    start = 1 + _LENGTHS.size
    if start + n_out + n_err != len(body):
        return {}
    return {"stdout": body[start:start + n_out].decode("utf-8", "replace"),
            "stderr": body[start + n_out:].decode("utf-8", "replace")}


def finish(capture, limits, error):
    """The result body: PLAIN when there is only output (the common case, and json's first use
    in a fresh fork is costly), else JSON with images base64-encoded."""
    capture.flush()
    images = figures()
    capture.flush()
    if error is None and not images:
        return plain_body(Capture.read(capture.out, limits.stdout_bytes),
                          Capture.read(capture.err, limits.stderr_bytes))
    return json.dumps({
        "stdout": Capture.read(capture.out, limits.stdout_bytes),
        "stderr": Capture.read(capture.err, limits.stderr_bytes),
        "error": error,
        "images": images,
    }).encode()
