"""Running one cell on a child the zygote handed over: send the code, read the result, judge.

The host holds each child's data channel and output files, so a cell's path is host -> child ->
host. The verdict is the host's: a deadline passed, a channel that closed without a result (the
zygote says how the process ended), a result frame too large or malformed.
"""
import time

from .result import CellError, Result, from_done
from .session import ADOPTED
from .spare_pool import await_result, partial_output, run_on, status_fields

KILL_GRACE_S = 5.0  # how long the zygote gets to confirm a kill before it is presumed hung


def session_cell(sb, session, code, timeout):
    z = sb._zygote_alive()
    if session.generation != sb._generation or session.lost:
        sb._reopen_session(session)
    alive = lambda: z.alive
    spare = session._take_spare(alive)
    if spare is None:
        return _lost(session, "no process to run the cell came from the sandbox helper")
    try:
        z.send({"op": "session_started", "sid": session.sid, "spare": spare.id})
    except OSError:
        pass
    t0 = time.perf_counter()
    try:
        verdict, header, body = run_on(spare, code, timeout, sb.policy.limits.result_bytes)
        duration = time.perf_counter() - t0
        if verdict == "result":
            return from_done({"ok": header.get("ok")}, body, False, duration, timeout)
        if verdict in ("timeout", "bad"):
            try:
                z.send({"op": "session_kill", "sid": session.sid, "spare": spare.id})
            except OSError:
                pass
        status = session._wait_exit(spare.id, alive, KILL_GRACE_S)
        if status == ADOPTED:
            # The zygote took its success before our kill: the state has its effects, so the
            # user gets its result (the cell wrote it here before it told the zygote).
            verdict, header, body = await_result(spare, time.monotonic() + KILL_GRACE_S)
            if verdict == "result":
                return from_done({"ok": header.get("ok")}, body, False, time.perf_counter() - t0,
                                 timeout)
            status = None
        if status is False and (session.lost or not z.alive):
            return _lost(session, "the sandbox helper died", duration)
        header = dict(header or {}, partial=True, **status_fields(status))
        body = partial_output(spare, sb.policy.limits)
        return from_done(header, body, verdict == "timeout", time.perf_counter() - t0, timeout)
    finally:
        spare.close()


def _lost(session, default_reason, duration_s=None):
    """SessionLost, saying why the zygote gave the state up (its own words, where it said)."""
    session.lost = True
    why = session.lost_reason or default_reason
    return Result(error=CellError("SessionLost", f"the session's state is gone ({why}); the next "
                                  "run starts a fresh session"), duration_s=duration_s)


def one_shot(sb, code, timeout):
    z = sb._zygote_alive()
    alive = lambda: z.alive
    chooser = sb._chooser
    spare = sb._pool.take(alive, "full" if chooser is None else chooser.kind(code))
    if spare is None:
        return Result(error=CellError("SandboxError", "the sandbox helper did not provide a "
                                      "process in time; it restarts on the next call"))
    t0 = time.perf_counter()
    try:
        verdict, header, body = run_on(spare, code, timeout, sb.policy.limits.result_bytes)
        duration = time.perf_counter() - t0
        try:
            # Only now does the zygote prepare a replacement: that work would otherwise compete
            # with the cell for the CPU. And the result is the end: nothing the cell does
            # afterwards may linger (this also ends a cell that reported early and carried on).
            # With a result in hand the host needs no word on how the process ended.
            z.send({"op": "take", "spare": spare.id, "kill": True, "quiet": verdict == "result"})
        except OSError:
            pass
        if verdict == "result":
            return from_done({"ok": header.get("ok")}, body, False, duration, timeout)
        status = sb._pool.wait_exit(spare.id, alive)
        if status is False:
            if verdict == "timeout" and z.alive:
                sb._restart(z)  # a zygote that cannot kill is not trusted with more
            if verdict != "timeout":
                return Result(error=CellError("SandboxError", "the sandbox helper process died; "
                                              "it restarts on the next call"), duration_s=duration)
        header = dict(header or {}, partial=True, **status_fields(status))
        body = partial_output(spare, sb.policy.limits)
        return from_done(header, body, verdict == "timeout", time.perf_counter() - t0, timeout)
    finally:
        spare.close()
