"""Running check programs: one isolated process per check, a wall-clock limit each, several at
once. This is the only place that knows how programs are executed."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass


@dataclass(slots=True)
class Execution:
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    error: str | None = None


class Executor:
    """A pool of `workers` concurrent executions, each limited to `timeout` seconds."""

    def __init__(self, workers: int | None = None, timeout: float = 3.0):
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.timeout = timeout
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="oci-eval-exec")

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, code: str):
        return self._pool.submit(self._run, code)

    def run(self, code: str) -> Execution:
        return self._run(code)

    def _run(self, code: str) -> Execution:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="oci-eval-") as cwd:
            try:
                p = subprocess.run([sys.executable, "-I", "-c", code], cwd=cwd, capture_output=True,
                                   stdin=subprocess.DEVNULL, timeout=self.timeout, text=True, errors="replace")
            except subprocess.TimeoutExpired as e:
                return Execution(_text(e.stdout), _text(e.stderr), True, time.perf_counter() - start)
        error = None if p.returncode == 0 else f"exit status {p.returncode}"
        return Execution(p.stdout, p.stderr, False, time.perf_counter() - start, error)


def _text(b) -> str:
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b
