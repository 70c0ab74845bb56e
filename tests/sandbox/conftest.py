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

HOST_SECRET = "oci-host-secret-7f3a9c"
os.environ["OCI_SANDBOX_TEST_SECRET"] = HOST_SECRET  # set before any Sandbox starts


def descendants(pid):
    """Every process below `pid`, from /proc (readable as any user)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def require_namespaces(sb, *kinds):
    """Skip (loudly) where this machine's kernel or container does not allow them; the sandbox
    then runs with seccomp, rlimits and the privilege drop only, and says so at start-up."""
    missing = [k for k in kinds if sb.isolation.get(k) is not True]
    if missing:
        pytest.skip(f"namespaces unavailable here: {', '.join(f'{k} ({sb.isolation.get(k)})' for k in missing)}")


def zygote_pid(sb):
    """launcher -> namespace holder -> zygote: the zygote is the holder's only child."""
    holder = [p for p in descendants(sb._zygote.proc.pid) if _ppid(p) == sb._zygote.proc.pid][0]
    return [p for p in descendants(holder) if _ppid(p) == holder][0]


def _ppid(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        return int(f.read().rsplit(b")", 1)[1].split()[1])


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
