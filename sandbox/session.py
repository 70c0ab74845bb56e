"""A notebook-like session: state kept across cells, rolled back when a cell fails.

The state lives in a parked process inside the zygote's tree; this object is the host's handle.
"""
import threading
import time

from oci_engine.errors import SessionClosedError


class Session:
    def __init__(self, sandbox):
        self._sb = sandbox
        self._lock = threading.Lock()
        self.sid = None
        self.generation = None  # the zygote incarnation holding our state
        self.lost = False
        self.closed = False
        self.last_used = time.monotonic()
        self.closed_reason = None
        self._sb._open_session(self)

    def run(self, code, timeout=None):
        """Run a cell on this session's state. A cell that fails (exception, timeout, crash)
        leaves the state exactly as it was before it."""
        with self._lock:
            if self.closed:
                raise SessionClosedError(
                    f"this sandbox session was {self.closed_reason or 'closed'}; "
                    "start a new one with sandbox.session()")
            self.last_used = time.monotonic()
            if self.lost or self.generation != self._sb._generation:
                self._sb._reopen_session(self)
            try:
                return self._sb._execute(code, timeout, session=self)
            finally:
                self.last_used = time.monotonic()

    def reset(self):
        """Forget every variable, import and file: start over from a fresh state."""
        with self._lock:
            if self.closed:
                raise SessionClosedError("reset() on a closed session; start a new one with sandbox.session()")
            self._sb._reopen_session(self)

    def close(self, reason="closed"):
        with self._lock:
            if not self.closed:
                self.closed, self.closed_reason = True, reason
                self._sb._close_session(self)

    @property
    def busy(self):
        return self._lock.locked()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
