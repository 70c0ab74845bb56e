"""The public front: a thread-safe Sandbox that runs cells through one zygote.

It bounds concurrency (worker slots), enforces every wall-clock deadline itself (the verdict is
the host's, not the child's), restarts a dead zygote on the next call, expires idle sessions and
caps how many are alive.
"""
import itertools
import logging
import os
import sys
import threading
import time

from oci_engine.errors import SandboxError, TooManySessionsError

from . import cell_runs, spare_pool, template_choice
from .policy import Policy
from .session import ADOPTED, Session
from .zygote_client import ZygoteProcess

log = logging.getLogger("oci_engine.sandbox")


class _Pending:
    __slots__ = ("event", "header", "body")

    def __init__(self):
        self.event, self.header, self.body = threading.Event(), None, b""


class Sandbox:
    """Runs untrusted Python cells in isolated forks of a pre-warmed helper process.

    workers: cells that may run at once (more callers wait for a slot).
    timeout: default wall-clock limit per cell, in seconds.
    preload: modules the helper imports once (default numpy, pandas, matplotlib when installed).
    max_sessions / session_idle_s: cap on live sessions; idle sessions are closed after this long.
    """

    def __init__(self, workers=2, timeout=10.0, policy=None, preload=None, max_sessions=32,
                 session_idle_s=900.0):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.policy = policy or Policy()
        if preload is not None:
            self.policy.preload = tuple(preload)
        self.workers, self.timeout = workers, timeout
        self.max_sessions, self.session_idle_s = max_sessions, session_idle_s
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._pending = {}
        self._sessions = {}
        self._zygote = None
        self._generation = 0
        self._pool = spare_pool.SparePool()
        self._closed = False
        self._start()
        self._janitor = threading.Thread(target=self._expire_loop, name="oci-sandbox-janitor", daemon=True)
        self._janitor.start()

    # -- zygote life --------------------------------------------------------------------------
    def _start(self):
        self._generation += 1
        self._pool.reset(self._generation)
        gen = self._generation  # frames a dead zygote's reader still delivers must not count
        self._zygote = ZygoteProcess(self.policy, lambda h, b, f=(): self._on_frame(h, b, f, gen),
                                     self._on_death, self.workers)
        missing = [k for k in ("user", "mount", "net", "pid", "ipc") if self.isolation.get(k) is not True]
        if missing:
            msg = ("SANDBOX ISOLATION REDUCED: namespaces not applied: "
                   + ", ".join(f"{k} ({self.isolation.get(k)})" for k in missing)
                   + "; seccomp, rlimits and the privilege drop still apply")
            log.warning(msg)
            print(msg, file=sys.stderr)
        iso = self.isolation
        self._chooser = None
        if "lean" in iso.get("templates", ()):
            lean = iso.get("lean_preloaded", [])
            self._chooser = template_choice.Chooser(
                lean, [m for m in iso.get("preloaded", []) if m not in lean])
        log.info("sandbox started: %s", self.isolation)

    def _zygote_alive(self):
        with self._lock:
            if self._closed:
                raise SandboxError("this Sandbox is closed; create a new one")
            if self._zygote is None or not self._zygote.alive or self._zygote.proc.poll() is not None:
                if self._zygote is not None:
                    self._zygote.kill()
                self._start()
            return self._zygote

    def _on_frame(self, header, body, fds, generation):
        op = header.get("op")
        if op == "spare":
            self._pool.add(header["spare"], fds, generation, header.get("kind", "full"))
        elif op == "exited":
            self._pool.exited(header["spare"], header.get("status"))
        elif op == "done":
            p = self._pending.get(header.get("job"))
            if p is not None:
                p.header, p.body = header, body
                p.event.set()
        elif op in ("session_ready", "session_error"):
            p = self._pending.get(("session", header.get("sid")))
            if p is not None:
                p.header = header
                p.event.set()
        elif op == "session_lost":
            s = self._sessions.get(header.get("sid"))
            if s is not None:
                reason = header.get("reason")
                s._mark_lost(reason if isinstance(reason, str) else None)
        elif op == "session_spare":
            s = self._sessions.get(header.get("sid"))
            if s is None or len(fds) != 3:
                # Raw fds, owned by nothing else: wrapping them first would close the socket's
                # number a second time when the wrapper is freed, maybe another thread's by then.
                for fd in fds:
                    os.close(fd)
            else:
                s._give_spare(header.get("sid"), spare_pool.Spare(header["spare"], fds, generation))
        elif op == "session_exited":
            s = self._sessions.get(header.get("sid"))
            if s is not None:
                s._exited(header["spare"], ADOPTED if header.get("adopted") is True
                          else header.get("status"))

    def _on_death(self, zygote):
        for s in list(self._sessions.values()):
            s._mark_lost("the sandbox helper died")
        for key, p in list(self._pending.items()):
            if not p.event.is_set():
                p.header = {"op": "done", "reason": "the sandbox helper process died; it restarts "
                            "on the next call", "session_reason": "session lost: the sandbox helper died"}
                p.event.set()

    @property
    def isolation(self):
        """What was applied: {'user': True, ..., 'root': ..., 'uid': ..., 'seccomp': ...};
        a namespace that could not be created says why instead of True."""
        return self._zygote.isolation

    def describe(self):
        return f"isolation: {self.isolation}\npolicy: {self.policy.describe()}"

    # -- running cells ------------------------------------------------------------------------
    def run(self, code, timeout=None):
        """Run `code` in a fresh fork of the helper (no state kept). Returns a Result."""
        return self._execute(code, timeout)

    def _execute(self, code, timeout, session=None):
        if not isinstance(code, str):
            raise TypeError(f"code must be a str, got {type(code).__name__}")
        timeout = float(self.timeout if timeout is None else timeout)
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
        if session is None:
            with self._slots:
                return cell_runs.one_shot(self, code, timeout)
        with self._slots:
            return cell_runs.session_cell(self, session, code, timeout)

    def _restart(self, z):
        with self._lock:
            if self._zygote is z:
                z.kill()

    # -- sessions -----------------------------------------------------------------------------
    def session(self):
        """A stateful session (variables, imports and files persist across cells)."""
        return Session(self)

    def _open_session(self, s):
        with self._lock:
            live = [x for x in self._sessions.values() if not x.closed]
            if len(live) >= self.max_sessions:
                raise TooManySessionsError(
                    f"{len(live)} sandbox sessions are open (max_sessions={self.max_sessions}); "
                    "close some with session.close() or raise max_sessions")
            self._create_remote(s)

    def _create_remote(self, s):
        z = self._zygote_alive()
        s.sid = f"s{next(self._ids)}"
        s._drop_spare()
        self._sessions[s.sid] = s  # before the zygote answers: its first spare follows at once
        key = ("session", s.sid)
        p = self._pending[key] = _Pending()
        try:
            z.send({"op": "session_new", "sid": s.sid})
            ok = p.event.wait(60.0)
        finally:
            self._pending.pop(key, None)
        if not ok or p.header.get("op") != "session_ready":
            self._sessions.pop(s.sid, None)
            reason = (p.header or {}).get("reason", "no answer from the sandbox helper")
            raise SandboxError(f"could not start a sandbox session: {reason}")
        s.generation, s.lost, s.lost_reason = self._generation, False, None

    def _reopen_session(self, s):
        with self._lock:
            self._close_remote(s)
            self._create_remote(s)

    def _close_session(self, s):
        with self._lock:
            self._close_remote(s)

    def _close_remote(self, s):
        self._sessions.pop(s.sid, None)
        s._drop_spare()
        z = self._zygote
        if s.generation == self._generation and z is not None and z.alive:
            try:
                z.send({"op": "session_close", "sid": s.sid})
            except OSError:
                pass

    def _expire_loop(self):
        while not self._closed:
            time.sleep(min(5.0, max(0.05, self.session_idle_s / 4)))
            now = time.monotonic()
            for s in list(self._sessions.values()):
                if not s.busy and now - s.last_used > self.session_idle_s:
                    s.close(reason=f"expired after {self.session_idle_s:g} s idle")

    @property
    def live_sessions(self):
        return sum(1 for s in self._sessions.values() if not s.closed)

    # -- lifetime -----------------------------------------------------------------------------
    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for s in list(self._sessions.values()):
                s.closed, s.closed_reason = True, "closed with its Sandbox"
                s._drop_spare()
            self._sessions.clear()
            if self._zygote is not None:
                self._zygote.kill()
            self._pool.reset(-1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
