"""Sessions inside the zygote: a parked process per session holds its last good state.

The parked process keeps one spare fork of itself ready; a cell runs in that spare. That fork is
the only process creation a session's filter lets through, and only because the zygote answers
the seccomp notification: one grant per spare it asked for, to the parked process's main thread.
A cell that succeeds becomes the new parked state (its predecessor retires); any other outcome
leaves the parked state untouched and it forks a new spare.
"""
import collections
import os
import selectors
import signal
import socket

from . import child, notify, protocol
from .job import Job

SEND_DEADLINE_S = 2.0
SESSION_CPU_S = 24 * 3600  # the parked state's own budget; each cell sets its own


class Session:
    __slots__ = ("sid", "pgid", "parked", "ctrl", "reader", "listener", "workdir", "job",
                 "grants", "spare", "forking")

    def __init__(self, sid):
        self.sid, self.pgid, self.parked, self.ctrl, self.reader = sid, None, None, None, None
        self.listener, self.workdir, self.job, self.grants = None, None, None, 0
        self.spare = None
        self.forking = collections.deque()  # spares asked for, in order, whose pid is not known yet


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
        _set_ctrl(z, s, zs)
        close(z, sid, None)
        z.reply({"op": "session_error", "sid": sid, "reason": "the session process failed to start"})
        return
    s.listener = frame[2][0]
    z.sel.register(s.listener, selectors.EVENT_READ, ("notif", s))
    _set_ctrl(z, s, zs)
    _prepare_spare(z, s)
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


def _prepare_spare(z, s):
    """Ask the parked process for a spare fork; its channel is ours from now on."""
    if s.ctrl is None:
        return False
    if s.spare is not None:
        return True
    job = Job(None)
    job.session = s
    zs, cs = socket.socketpair()
    try:
        protocol.send_before(s.ctrl, SEND_DEADLINE_S, {"op": "spare"}, fds=[cs.fileno(), job.out, job.err])
    except OSError:
        zs.close()
        job.close_output()
        return False
    finally:
        cs.close()
    s.grants, s.spare = 1, job
    s.forking.append(job)
    z.watch(job, zs)
    return True


def run(z, sid, job_id, code, timeout):
    s = z.sessions.get(sid)
    if s is None or s.ctrl is None or s.job is not None:
        job = Job(job_id)
        job.close_output()
        job.reason = "session lost" if s is None or s.ctrl is None else "session busy"
        z.finish(job)
        return
    if s.spare is None and not _prepare_spare(z, s):
        job = Job(job_id)
        job.reason = "session lost: its process does not answer"
        z.finish(job)
        close(z, sid, None)
        return
    job, s.spare = s.spare, None
    job.id = job_id
    s.job = job
    z.jobs[job_id] = job
    try:
        protocol.send_before(job.chan, SEND_DEADLINE_S, {"op": "cell", "timeout": timeout},
                             code.encode("utf-8", "surrogatepass"))
    except OSError:
        pass  # the spare died: the parked process reports how


def on_event(z, kind, s):
    # Events of one select() batch can outlive what an earlier event in it closed.
    if kind == "notif" and s.listener is not None:
        n = notify.receive(s.listener)
        if n is None:
            return
        nid, tid, _nr, _args = n
        # One fork per spare asked for, and only from the parked process's main thread.
        allow = s.grants > 0 and (s.parked is None or tid == s.parked)
        if allow:
            s.grants -= 1
        notify.respond(s.listener, nid, allow)
    elif kind == "ctrl" and s.ctrl is not None:
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
        op, pid = header.get("op"), header.get("pid")
        if op == "forked" and isinstance(pid, int) and s.forking:
            # The parked process forks in the order it was asked: reports pair up in order too.
            job = s.forking.popleft()
            job.pid = pid
            if job.kill_pending:
                kill_cell(z, job)
        elif op == "exited" and isinstance(pid, int):
            job = s.job
            if job is not None and job.pid == pid:
                if job.chan is not None:
                    z.on_job(job)
                if s.job is job and job.header is None:  # died without a result
                    s.job = None
                    z.unwatch(job)
                    z.finish(job, header.get("status"))
                    _prepare_spare(z, s)
            elif s.spare is not None and s.spare.pid == pid:  # an unused spare died
                _discard_spare(z, s)
    if not alive and s.ctrl is not None:
        close(z, s.sid, "session lost: its process died")


def _discard_spare(z, s):
    if s.spare is not None:
        z.unwatch(s.spare)
        s.spare.close_output()
        s.spare = None


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
        s.parked = job.pid  # None until its 'forked' report arrives: any tid then
        chan = job.chan
        z.sel.unregister(chan)
        job.chan = None
        s.ctrl, s.reader = chan, job.reader
        z.sel.register(chan, selectors.EVENT_READ, ("ctrl", s))
    else:
        z.unwatch(job)
    z.finish(job)
    _prepare_spare(z, s)


def on_cell_eof(z, job):
    """A channel closed. A used cell's status comes from the parked process's 'exited' report."""
    s = job.session
    if job.id is None and s.spare is job:
        job.close_output()
        s.spare = None


def kill_cell(z, job):
    s = job.session
    pid = job.pid
    if pid is None and job in s.forking:
        job.kill_pending = True  # its pid is on the way: kill it when it arrives
        s.job = None
        z.unwatch(job)
        job.reason = job.reason or "killed"
        z.finish(job, 9)
        return
    if job.kill_pending:
        if pid is not None and _parent_of(pid) == s.parked:
            _kill(pid)
        if s.job is None:
            _prepare_spare(z, s)
        return
    if pid is not None and pid != s.parked and _parent_of(pid) == s.parked:
        _kill(pid)
        s.job = None
        z.unwatch(job)
        job.reason = job.reason or "killed"
        z.finish(job, 9)  # raw wait status of SIGKILL
        _prepare_spare(z, s)
    else:
        # Cannot tell which process runs the cell: the whole session goes.
        close(z, s.sid, "session lost: its cell could not be stopped alone")


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


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
    _discard_spare(z, s)
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
        z.remove_workdir(s.workdir)
    if reason is not None:
        z.reply({"op": "session_lost", "sid": sid, "reason": reason})
