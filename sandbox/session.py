"""A notebook-like session: state kept across cells, rolled back when a cell fails.

The state lives in a parked process inside the zygote's tree; this object is the host's handle.
"""
import threading
import time

from oci_engine.errors import SessionClosedError

from .result import CellError, Result


# The exit "status" of a cell the zygote kept as the state after all: it finished past its
# deadline, but before the host's kill came.
ADOPTED = "adopted"


class Session:
    def __init__(self, sandbox):
        self._sb = sandbox
        self._lock = threading.Lock()
        self.sid = None
        self.generation = None  # the zygote incarnation holding our state
        self.lost = False
        self.lost_reason = None  # why the zygote gave up on the state, as it said (its "session lost: " off)
        self.closed = False
        self.last_used = time.monotonic()
        self.closed_reason = None
        # The next cell's process, handed over by the zygote; how cells without a result ended.
        self._cv = threading.Condition()
        self._spare = None
        self._exits = {}
        self._sb._open_session(self)

    def _give_spare(self, sid, spare):
        with self._cv:
            if self.closed or sid != self.sid:  # closed or reopened since the zygote sent it
                spare.close()
                return
            if self._spare is not None:
                self._spare.close()
            self._spare = spare
            self._cv.notify_all()

    def _exited(self, spare_id, status):
        with self._cv:
            self._exits[spare_id] = status
            if len(self._exits) > 64:
                self._exits.pop(next(iter(self._exits)))
            self._cv.notify_all()

    def _mark_lost(self, reason=None):
        with self._cv:
            self.lost = True
            self.lost_reason = reason.removeprefix("session lost: ") if reason else self.lost_reason
            self._cv.notify_all()

    def _take_spare(self, alive, wait_s=60.0):
        end = time.monotonic() + wait_s
        with self._cv:
            while self._spare is None and not self.lost and alive() and time.monotonic() < end:
                self._cv.wait(0.2)
            spare, self._spare = self._spare, None
            return spare

    def _wait_exit(self, spare_id, alive, wait_s=5.0):
        end = time.monotonic() + wait_s
        with self._cv:
            while spare_id not in self._exits and not self.lost and alive() and time.monotonic() < end:
                self._cv.wait(0.2)
            return self._exits.pop(spare_id, False)

    def _drop_spare(self):
        with self._cv:
            if self._spare is not None:
                self._spare.close()
                self._spare = None
            self._exits.clear()

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
                why = self.lost_reason or "its process or the sandbox helper died"
                self._sb._reopen_session(self)
                return Result(error=CellError(
                    "SessionLost", f"the session's state was lost ({why}) "
                    "and it restarted empty; this cell was not run: re-run the definitions it "
                    "needs, then this cell"))
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
