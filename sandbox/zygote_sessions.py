"""Sessions inside the zygote: a parked process per session holds its last good state.

A cell is a fork of the parked process. The fork is the only process creation a session's filter
lets through, and only because the zygote answers the seccomp notification: one grant per cell
the host asked for, to the parked process's main thread. A cell that succeeds becomes the new
parked state (its predecessor retires); any other outcome leaves the parked state untouched.
"""
import os
import selectors
import shutil
import signal
import socket

from . import child, notify, protocol
from .job import Job

SEND_DEADLINE_S = 2.0
SESSION_CPU_S = 24 * 3600  # the parked state's own budget; each cell sets its own


class Session:
    __slots__ = ("sid", "pgid", "parked", "ctrl", "reader", "listener", "workdir", "job",
                 "grants", "cell_pid", "cell_parks")

    def __init__(self, sid):
        self.sid, self.pgid, self.parked, self.ctrl, self.reader = sid, None, None, None, None
        self.listener, self.workdir, self.job, self.grants = None, None, None, 0
        self.cell_pid, self.cell_parks = None, False


def create(z, sid):
    s = Session(sid)
    s.workdir = z.make_workdir("session")
    zs, cs = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        child.session_root(z, cs.fileno(), s.workdir, SESSION_CPU_S)
    cs.close()
    s.pgid = s.parked = pid
    z.sessions[sid] = s
    zs.settimeout(10.0)  # the root has run no user code yet: waiting on it is safe
    try:
        frame = protocol.FrameReader(zs).recv()
    except OSError:
        frame = None
    if frame is None or frame[0].get("op") != "ready" or len(frame[2]) != 1:
        reason = "the session process failed to start"
        if frame is not None and frame[1]:
            reason += ": " + frame[1].decode("utf-8", "replace")[:2000]
        _set_ctrl(z, s, zs)
        close(z, sid, None)
        z.reply({"op": "session_error", "sid": sid, "reason": reason})
        return
    s.listener = frame[2][0]
    z.sel.register(s.listener, selectors.EVENT_READ, ("notif", s))
    _set_ctrl(z, s, zs)
    z.reply({"op": "session_ready", "sid": sid})


def _set_ctrl(z, s, sock):
    sock.setblocking(False)
    s.ctrl, s.reader = sock, protocol.FrameReader(sock)
    z.sel.register(sock, selectors.EVENT_READ, ("ctrl", s))


def _drop_ctrl(z, s):
    if s.ctrl is not None:
        z.sel.unregister(s.ctrl)
        s.ctrl.close()
        s.ctrl = None


def run(z, sid, job_id, code, timeout):
    job = Job(job_id)
    s = z.sessions.get(sid)
    if s is None or s.ctrl is None or s.job is not None:
        job.close_output()
        job.reason = "session lost" if s is None or s.ctrl is None else "session busy"
        z.finish(job)
        return
    job.session = s
    zs, cs = socket.socketpair()
    try:
        protocol.send_before(s.ctrl, SEND_DEADLINE_S, {"op": "cell", "job": job_id, "timeout": timeout},
                             code.encode("utf-8", "surrogatepass"), fds=[cs.fileno(), job.out, job.err])
    except OSError:
        cs.close(), zs.close()
        job.close_output()
        job.reason = "session lost"
        z.finish(job)
        close(z, sid, None)
        return
    cs.close()
    s.job, s.grants, s.cell_pid, s.cell_parks = job, 1, None, False
    z.jobs[job_id] = job
    z.watch(job, zs)


def on_event(z, kind, s):
    if kind == "notif":
        n = notify.receive(s.listener)
        if n is None:
            return
        nid, tid, _nr, _args = n
        # One fork per requested cell, and only from the parked process's main thread.
        allow = s.grants > 0 and (s.parked is None or tid == s.parked)
        if allow:
            s.grants -= 1
        notify.respond(s.listener, nid, allow)
    elif kind == "ctrl":
        _on_ctrl(z, s)


def _on_ctrl(z, s):
    try:
        alive = s.reader.fill()
        frames = list(s.reader.frames())
    except protocol.FrameTooLarge:
        alive, frames = False, []
    for header, _, fds in frames:
        for fd in fds:
            os.close(fd)
        op = header.get("op")
        if op == "forked" and isinstance(header.get("pid"), int):
            s.cell_pid = header["pid"]
            if s.cell_parks:
                s.parked = s.cell_pid
        elif op == "exited" and s.job is not None and header.get("pid") == s.cell_pid:
            job = s.job
            if job.chan is not None:
                z.on_job(job)
            if job.header is None:
                s.job = None
                z.unwatch(job)
                z.finish(job, header.get("status"))
    if not alive and s.ctrl is not None:
        close(z, s.sid, "session lost: its process died")


def on_result(z, job):
    s = job.session
    s.job = None
    if job.header.get("ok"):
        # The cell is the new last good state; its channel becomes the session's control channel.
        if s.ctrl is not None:
            _on_ctrl(z, s)  # pick up a 'forked' report still in flight
        old = s.ctrl
        if old is not None:
            try:
                protocol.send_before(old, SEND_DEADLINE_S, {"op": "retire"})
            except OSError:
                pass
            _drop_ctrl(z, s)
        s.cell_parks = True
        s.parked = s.cell_pid
        chan = job.chan
        z.sel.unregister(chan)
        job.chan = None
        s.ctrl, s.reader = chan, job.reader
        z.sel.register(chan, selectors.EVENT_READ, ("ctrl", s))
    else:
        z.unwatch(job)
    z.finish(job)


def on_cell_eof(z, job):
    """The cell's channel closed without a result: its status comes from the parked process."""


def kill_cell(z, job):
    s = job.session
    pid = s.cell_pid
    if pid is not None and _parent_of(pid) == s.parked and pid != s.parked:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        s.job = None
        z.unwatch(job)
        job.reason = job.reason or "killed"
        z.finish(job, 9)  # raw wait status of SIGKILL
    else:
        # Cannot tell which process runs the cell: the whole session goes.
        close(z, s.sid, "session lost: its cell could not be stopped alone")


def _parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def close(z, sid, reason):
    s = z.sessions.pop(sid, None)
    if s is None:
        return
    try:
        os.killpg(s.pgid, signal.SIGKILL)
    except OSError:
        pass
    _drop_ctrl(z, s)
    if s.listener is not None:
        z.sel.unregister(s.listener)
        os.close(s.listener)
        s.listener = None
    if s.job is not None:
        job, s.job = s.job, None
        z.unwatch(job)
        job.reason = job.reason or reason or "session closed"
        z.finish(job)
    if s.workdir:
        shutil.rmtree(s.workdir, ignore_errors=True)
    if reason is not None:
        z.reply({"op": "session_lost", "sid": sid, "reason": reason})
