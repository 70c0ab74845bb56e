"""oci_engine.sandbox: a seccomp-restricted fork executor. Imports nothing of the runtime, never torch.

    from oci_engine.sandbox import Sandbox
    with Sandbox(workers=2, timeout=10.0) as sb:   # starts the zygote
        r = sb.run("print(1)", timeout=5.0)         # one-shot: a fresh fork, no state kept
        r.stdout, r.stderr, r.error, r.timed_out, r.duration_s, r.images
        s = sb.session()                            # stateful, like a notebook kernel
        s.run("x = 41"); s.run("x + 1").stdout      # '42\\n'
        sb.isolation                                # what was applied (namespaces, uid, seccomp)
        print(sb.policy.describe())                 # the whole policy, for logs

`Result.error` is None on success, else a `CellError(type, message, traceback, lineno)` (see
result.py for the sandbox's own types: Timeout, Crash, OutputLimit, SessionLost, SandboxError).
`Result.images` is a list of PNG bytes, one per matplotlib figure the cell left open.

Processes: host -> launcher -> namespace holder -> zygote (pid 1 of the sandbox's pid namespace)
-> two templates that fork one-shot children ahead of demand (lean: forked before the modules
outside policy.lean_preload were imported, for cells whose code cannot need them; full) and one
parked process per session (forks that session's next cell). File map: policy (the data),
seccomp_filter, namespaces, limits, protocol (frames), zygote / zygote_spares / zygote_sessions
(the helper's loop), child (what a forked child does), cell (running code like a notebook),
reseed (fresh random generators per fork), hugepages (the zygote's heap on huge pages: a cell's
fork and exit copy and free far fewer page-table entries), template (a one-shot template's
set-up and fork loop; the loop runs in C, _spawner.c, where the optional extension is built),
template_choice (lean or full, from the cell's text), spare_pool / cell_runs (host side of a
cell), session, sandbox (the thread-safe front), zygote_client (starting the helper).
"""
from .policy import Limits, Namespaces, Policy, SyscallPolicy
from .result import CellError, Result
from .sandbox import Sandbox
from .session import Session

__all__ = ["Sandbox", "Session", "Result", "CellError", "Policy", "Limits", "Namespaces", "SyscallPolicy"]
