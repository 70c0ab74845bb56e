"""Host side of the one-shot path: the zygote hands over ready children; the host talks to them.

Each spare arrives as (channel, stdout file, stderr file). A run writes its code on the channel
and reads the result from it: two hops, the zygote is not on the path. The zygote still owns
the child's life: it kills on request and reports how the child ended, and the host keeps the
output files so a killed cell's output is not lost.
"""
import collections
import os
import select
import socket
import threading
import time

from . import cell, protocol

EXIT_WAIT_S = 5.0
# How long a lean request waits for a lean spare before it takes a full one: a lean spare is
# usually a fork away (a few ms), and a full spare taken instead costs a full fork to replace.
LEAN_WAIT_S = 0.05


class Spare:
    __slots__ = ("id", "sock", "out", "err", "generation", "kind", "reader")

    def __init__(self, spare_id, fds, generation, kind="full"):
        self.id, self.generation, self.kind = spare_id, generation, kind
        self.sock = socket.socket(fileno=fds[0])
        self.out, self.err = fds[1], fds[2]
        self.reader = None  # its result channel's reader, once a cell was sent

    def close(self):
        """Idempotent: a raw fd number closed twice may by then be another thread's file."""
        self.sock.close()
        for fd in (self.out, self.err):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.out = self.err = None


class SparePool:
    """Ready spares by template kind ("lean", "full"); a full request waits for a full one."""

    def __init__(self):
        self._cv = threading.Condition()
        self._spares = {"lean": collections.deque(), "full": collections.deque()}
        self._exits = collections.OrderedDict()  # spare id -> raw wait status (or None)
        self.generation = 0

    # -- fed by the zygote reader thread ------------------------------------------------------
    def add(self, spare_id, fds, generation, kind="full"):
        if len(fds) != 3 or kind not in self._spares:
            for fd in fds:
                os.close(fd)
            return
        with self._cv:
            self._spares[kind].append(Spare(spare_id, fds, generation, kind))
            self._cv.notify_all()

    def exited(self, spare_id, status):
        with self._cv:
            self._exits[spare_id] = status
            while len(self._exits) > 4096:
                self._exits.popitem(last=False)
            self._cv.notify_all()

    def reset(self, generation):
        """The zygote changed: its spares are gone with it."""
        with self._cv:
            self.generation = generation
            for queue in self._spares.values():
                while queue:
                    queue.popleft().close()
            self._cv.notify_all()

    # -- used by callers ----------------------------------------------------------------------
    def take(self, alive, kind="full", wait_s=60.0):
        """A ready spare of `kind`. A lean request takes a full spare only once no lean one has
        come for LEAN_WAIT_S (a lean template that is gone or stuck)."""
        now = time.monotonic()
        end, lean_until = now + wait_s, now + LEAN_WAIT_S
        with self._cv:
            while True:
                now = time.monotonic()
                lean_only = kind == "lean" and now < lean_until
                if kind == "full":
                    kinds = ("full",)
                else:
                    kinds = ("lean",) if lean_only else ("lean", "full")
                for k in kinds:
                    queue = self._spares[k]
                    while queue and queue[0].generation != self.generation:
                        queue.popleft().close()
                    if queue:
                        return queue.popleft()
                if now >= end or not alive():
                    return None
                self._cv.wait(max(0.001, min(end, lean_until if lean_only else now + 0.5) - now))

    def wait_exit(self, spare_id, alive, wait_s=EXIT_WAIT_S):
        """How the spare ended (raw wait status), or False if the zygote never said."""
        end = time.monotonic() + wait_s
        with self._cv:
            while spare_id not in self._exits:
                left = end - time.monotonic()
                if left <= 0 or not alive():
                    return False
                self._cv.wait(min(left, 0.2))
            return self._exits.pop(spare_id)


def run_on(spare, code, timeout, max_frame):
    """Send the cell and wait for its result until the deadline.
    Returns (verdict, header, body): verdict is 'result', 'timeout', 'eof' or 'bad'."""
    deadline = time.monotonic() + timeout
    try:
        spare.sock.sendall(protocol.encode_cell(code.encode("utf-8", "surrogatepass"), timeout))
    except OSError:
        return "eof", None, b""
    spare.reader = protocol.FrameReader(spare.sock, max_frame)
    spare.sock.setblocking(False)
    return await_result(spare, deadline)


def await_result(spare, deadline):
    """Read the result of the cell sent by run_on() until `deadline` (time.monotonic()); the same
    verdicts. Called again after a 'timeout', it goes on from what was already read."""
    reader = spare.reader
    while True:
        try:
            for header, body, fds in reader.frames():
                for fd in fds:
                    os.close(fd)
                if header.get("op") == "result":
                    return "result", header, body
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout", None, b""
            if not select.select([spare.sock], [], [], left)[0]:
                continue
            if not reader.fill():
                for header, body, _ in reader.frames():
                    if header.get("op") == "result":
                        return "result", header, body
                return "eof", None, b""
        except protocol.BadFrame:
            return "bad", {"reason": "the cell wrote garbage on its result channel"}, b""
        except protocol.FrameTooLarge:
            return "bad", {"reason": f"the cell's output exceeded {reader.max_frame} bytes"}, b""


def partial_output(spare, limits):
    return cell.output_only(spare.out, spare.err, limits)


def status_fields(status):
    if isinstance(status, int) and not isinstance(status, bool) and 0 <= status < 1 << 16:
        if os.WIFSIGNALED(status):
            return {"signal": os.WTERMSIG(status), "exit": None}
        if os.WIFEXITED(status):
            return {"signal": None, "exit": os.WEXITSTATUS(status)}
    return {"signal": None, "exit": None}
