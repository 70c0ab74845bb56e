"""Shared fixtures: one Sandbox per test module, and a guard that checks the host afterwards.

`host_guard` is what "the host is undisturbed" means in these tests: the sandbox still answers,
no process escaped the sandbox's tree, a secret file on the host is untouched, a canary process
of the host is alive, and the host's secret environment variable never reached a cell.
"""
import os
import subprocess
import sys
import tempfile
import time

import pytest

from sandbox_host import HOST_SECRET, descendants

os.environ["OCI_SANDBOX_TEST_SECRET"] = HOST_SECRET  # set before any Sandbox starts


class HostState:
    def __init__(self):
        fd, self.secret_path = tempfile.mkstemp(prefix="oci-host-secret-")
        with os.fdopen(fd, "w") as f:
            f.write(HOST_SECRET)
        self.canary = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])

    def check(self, sb, extra_processes=0):
        r = sb.run("print(6 * 7)", timeout=10)
        assert r.error is None and r.stdout == "42\n", f"sandbox no longer healthy: {r}"
        assert self.canary.poll() is None, "a host process was killed"
        with open(self.secret_path) as f:
            assert f.read() == HOST_SECRET, "a host file was modified"
        # launcher -> namespace holder -> zygote -> each template (lean and full) with its spares
        # (one per worker), the unmounting helper where work directories are mounts, and per
        # open session a parked process with its spare; a cell that just ended may take a moment
        # to go.
        spares = sb.isolation.get("spares", {"full": sb.workers})
        helpers = 1 if sb.isolation.get("async_unmount") else 0
        expected = (2 + len(spares) + sum(spares.values()) + helpers + 2 * sb.live_sessions
                    + extra_processes)
        deadline = time.monotonic() + 3.0
        while len(tree := descendants(sb._zygote.proc.pid)) > expected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(tree) <= expected, f"stray processes in the sandbox tree: {tree}"

    @staticmethod
    def no_secret(result):
        text = result.stdout + result.stderr + str(result.error or "")
        assert HOST_SECRET not in text, "the host's secret reached the cell"

    def close(self):
        self.canary.kill()
        self.canary.wait()
        os.unlink(self.secret_path)


@pytest.fixture(scope="module")
def host():
    h = HostState()
    yield h
    h.close()


@pytest.fixture(scope="module")
def sb():
    from oci_engine.sandbox import Sandbox
    box = Sandbox(workers=2, timeout=5.0)
    yield box
    box.close()


@pytest.fixture
def guard(sb, host):
    """Use as `def test_x(sb, guard)`: the host checks run after the test body."""
    yield host
    host.check(sb)
