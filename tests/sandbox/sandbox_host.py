"""Helpers the sandbox tests import: the host's secret, the process tree below the sandbox, and a
skip where namespaces are unavailable. They live here, not in conftest.py: `import conftest` gets
whichever conftest.py pytest loaded last, another directory's when several test directories run
in one call."""
import os

import pytest

HOST_SECRET = "oci-host-secret-7f3a9c"


def descendants(pid):
    """Every process below `pid`, from /proc (readable as any user)."""
    children = {}
    for entry in os.listdir("/proc"):
        ppid = _ppid(int(entry)) if entry.isdigit() else None
        if ppid is not None:
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
    """None for a process that ended since it was listed (a finished cell or helper fork)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
