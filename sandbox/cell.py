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
import random
import sys
import traceback

CELL_FILENAME = "<cell>"
NO_INPUT = ("input() is not available: the code runs unattended and nobody can type an answer. "
            "Assign the values directly in the code instead (for example: n = 5).")


def _no_input(prompt=""):
    raise EOFError(NO_INPUT)


class Capture:
    """fds 1 and 2 already point at memory files (the zygote holds them too, so output written
    before a kill is not lost); Python's streams write straight through to them."""

    def __init__(self, out_fd, err_fd):
        self.out, self.err = out_fd, err_fd
        self.stdout = io.TextIOWrapper(io.FileIO(1, "wb", closefd=False), encoding="utf-8",
                                       errors="backslashreplace", write_through=True)
        self.stderr = io.TextIOWrapper(io.FileIO(2, "wb", closefd=False), encoding="utf-8",
                                       errors="backslashreplace", write_through=True)
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


def reseed():
    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed()


def prepare(namespace):
    builtins.input = _no_input
    sys.stdin = io.StringIO()
    reseed()
    return namespace


def new_namespace():
    import types
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    return main.__dict__


def run(code, namespace):
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
                namespace["_"] = value
                print(repr(value))
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
    if plt is None:
        return []
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


def finish(capture, limits, error):
    """The result body: JSON, with images base64-encoded."""
    capture.flush()
    images = figures()
    capture.flush()
    return json.dumps({
        "stdout": Capture.read(capture.out, limits.stdout_bytes),
        "stderr": Capture.read(capture.err, limits.stderr_bytes),
        "error": error,
        "images": images,
    }).encode()
