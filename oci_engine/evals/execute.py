"""Running check programs in the sandbox: a fresh fork of its pre-warmed helper per check, a
wall-clock limit each, `workers` at once. This is the only place that knows how programs run."""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from oci_engine.errors import SandboxError

INFRA_RETRIES = 2
INFRA_ERRORS = ("SandboxError", "SessionLost")  # the sandbox failed, not the code


@dataclass(slots=True)
class Execution:
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    error: str | None = None


class Executor:
    """`workers` concurrent executions, each limited to `timeout` seconds."""

    def __init__(self, workers: int | None = None, timeout: float = 3.0):
        from oci_engine.sandbox import Sandbox

        self.workers = workers or max(1, os.cpu_count() or 1)
        self.timeout = timeout
        # Nothing preloaded: checks import what they use, and a small helper forks fastest.
        self._sandbox = Sandbox(workers=self.workers, timeout=timeout, preload=())
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="oci-eval-exec")

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._sandbox.close()

    def submit(self, code: str) -> Future:
        return self._pool.submit(self.run, code)

    def run(self, code: str) -> Execution:
        # A failure of the sandbox itself (its helper died) says nothing about the code: run the
        # check again on the restarted helper rather than record a wrong verdict.
        for _ in range(INFRA_RETRIES + 1):
            r = self._sandbox.run(code, timeout=self.timeout)
            if r.error is None or r.error.type not in INFRA_ERRORS:
                return Execution(r.stdout, r.stderr, r.timed_out, r.duration_s,
                                 None if r.error is None else str(r.error))
        raise SandboxError(f"the sandbox failed {INFRA_RETRIES + 1} times running one check ({r.error.message}); "
                           "no verdict was recorded for it: rerun the same command to resume")
