"""Checks run in the sandbox; a failure of the sandbox itself never becomes a verdict."""
import pytest

from oci_engine.errors import SandboxError
from oci_engine.evals.execute import INFRA_RETRIES, Executor
from oci_engine.evals.judge import judge
from oci_engine.evals.tasks import load_humaneval
from oci_engine.sandbox import CellError, Result


class _HelperDiesFirst:
    """The real sandbox, except that its first `failures` runs report a dead helper."""

    def __init__(self, sandbox, failures: int):
        self.sandbox, self.failures = sandbox, failures

    def run(self, code, timeout=None):
        if self.failures > 0:
            self.failures -= 1
            return Result(error=CellError("SandboxError", "the sandbox helper process died"))
        return self.sandbox.run(code, timeout=timeout)

    def close(self):
        self.sandbox.close()


@pytest.fixture(scope="module")
def task():
    return load_humaneval()[53]


def test_a_dead_helper_is_retried_and_the_verdict_is_the_codes(task):
    with Executor(workers=1, timeout=2.0) as ex:
        ex._sandbox = _HelperDiesFirst(ex._sandbox, INFRA_RETRIES)
        assert judge(ex, task, task.canonical_solution).passed


def test_a_sandbox_that_keeps_failing_stops_the_run_with_a_message(task):
    with Executor(workers=1, timeout=2.0) as ex:
        ex._sandbox = _HelperDiesFirst(ex._sandbox, INFRA_RETRIES + 1)
        with pytest.raises(SandboxError, match="rerun the same command to resume"):
            judge(ex, task, task.canonical_solution)


def test_checks_run_concurrently_on_the_workers(task):
    import time

    with Executor(workers=2, timeout=5.0) as ex:
        slow = "import time\ntime.sleep(1.0)\n"
        start = time.perf_counter()
        futures = [ex.submit(slow) for _ in range(4)]
        assert all(not f.result().timed_out for f in futures)
        assert time.perf_counter() - start < 3.5  # 4 one-second checks on 2 workers, not 4 s in a row
