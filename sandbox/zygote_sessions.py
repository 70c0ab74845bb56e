"""Sessions inside the zygote: a parked process per session holds its last good state.

The parked process keeps one spare fork of itself ready. The host gets the spare's data channel
and output files and runs the cell on it directly; the zygote keeps the spare's control channel,
on which the spare says only whether its cell succeeded. That fork is the only process creation
a session's filter lets through, and only because the zygote answers the seccomp notification:
one grant per spare it asked for, to the parked process's main thread. A cell that succeeds
becomes the new parked state (its predecessor retires) once the zygote knows its pid, which
comes from its parent's 'forked' report and may arrive after the cell's success; any other
outcome leaves the parked state untouched and it forks a new spare.
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
                 "grants", "spare", "forking", "adopted")

    def __init__(self, sid):
        self.sid, self.pgid, self.parked, self.ctrl, self.reader = sid, None, None, None, None
        self.listener, self.workdir, self.job, self.grants = None, None, None, 0
        self.spare = None  # handed to the host, cell not started
        self.forking = collections.deque()  # spares asked for, in order, whose pid is not known yet
        self.adopted = None  # id of the spare whose cell became the parked state last


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
    z.reply({"op": "session_ready", "sid": sid})
    _prepare_spare(z, s)


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
    """Ask the parked process for a spare fork and hand its data channel to the host."""
    if s.ctrl is None or s.spare is not None or s.job is not None:
        return
    z.spare_ids += 1
    job = Job(z.spare_ids)
    job.session = s
    ctrl_z, ctrl_c = socket.socketpair()
    data_h, data_c = socket.socketpair()
    try:
        protocol.send_before(s.ctrl, SEND_DEADLINE_S, {"op": "spare"},
                             fds=[ctrl_c.fileno(), job.out, job.err, data_c.fileno()])
        z.reply({"op": "session_spare", "sid": s.sid, "spare": job.id},
                fds=[data_h.fileno(), job.out, job.err])
    except OSError:
        ctrl_z.close()
        close(z, s.sid, "session lost: its process does not answer")
        return
    finally:
        ctrl_c.close(), data_h.close(), data_c.close()
        job.close_output()
    s.grants, s.spare = 1, job
    s.forking.append(job)
    z.watch(job, ctrl_z)


def started(z, sid, spare_id):
    """The host sent a cell to this spare."""
    s = z.sessions.get(sid)
    if s is not None and s.spare is not None and s.spare.id == spare_id:
        s.job, s.spare = s.spare, None


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
    ctrl = s.ctrl
    try:
        alive = s.reader.fill()
        frames = list(s.reader.frames())
    except protocol.FrameTooLarge:
        alive, frames = False, []
    for _, _, fds in frames:
        for fd in fds:
            os.close(fd)
    for header, _, _ in frames:
        op, pid = header.get("op"), header.get("pid")
        if op == "forked" and isinstance(pid, int) and s.forking:
            # The parked process forks in the order it was asked: reports pair up in order too.
            job = s.forking.popleft()
            job.pid = pid
            if job.kill_pending:
                job.adopting = False  # the host gave up on it: no success of its counts
                if not _kill_verified(s, job):
                    close(z, s.sid, _unstoppable(s, job))
                    return
            if job.adopting:
                job.adopting = False
                _settle(z, job)  # retires the process these frames came from: the rest are moot
                return
        elif op == "exited" and isinstance(pid, int):
            for job in (s.job, s.spare):
                if job is not None and job.pid == pid and job.chan is not None:
                    z.on_job(job)  # a result already in its channel decides first
                if job is not None and job.pid == pid and not job.done:
                    _ended(z, s, job, header.get("status"))
            if s.ctrl is not ctrl:
                return  # a result it found made its cell the parked state: these frames are moot
    if not alive and s.ctrl is ctrl and ctrl is not None:
        close(z, s.sid, "session lost: its process died")


def _ended(z, s, job, status):
    """The cell (or unused spare) died without a result: tell the host how, fork a new spare."""
    job.done = True
    z.unwatch(job)
    if s.job is job:
        s.job = None
    if s.spare is job:
        s.spare = None
    z.reply({"op": "session_exited", "sid": s.sid, "spare": job.id,
             "status": status if isinstance(status, int) else None})
    _prepare_spare(z, s)


def on_result(z, job):
    """The cell's verdict on the control channel (its output went to the host directly)."""
    s = job.session
    if job.kill_pending:
        return  # stopped on the host's word: it ends through its exit report, as any killed cell
    if job.header.get("ok") and job.pid is None and s.ctrl is not None:
        _on_ctrl(z, s)  # its 'forked' report may be in flight
        if job.pid is None and s.ctrl is not None:
            # The spare ran its whole cell before its parent got to report the fork (a parent
            # descheduled right after fork(), common under load). Its pid is what the session
            # checks every later kill against (the parent of the cell to stop), so it takes over
            # only once the report arrives: the retiring parent still sends it first.
            job.adopting = True
            return
    if z.sessions.get(s.sid) is s:
        _settle(z, job)


def _settle(z, job):
    s = job.session
    job.done = True
    if s.spare is job:  # the host's 'started' may still be behind in our queue
        s.spare = None
    s.job = None
    if job.header.get("ok"):
        if job.chan is None:  # it died while its pid was on the way
            close(z, s.sid, "session lost: its process died")
            return
        # The cell is the new last good state; its channel becomes the session's control channel.
        old = s.ctrl
        if old is not None:
            try:
                protocol.send_before(old, SEND_DEADLINE_S, {"op": "retire"})
            except OSError:
                pass
            _drop_ctrl(z, s)
        s.forking.clear()  # reports still owed by the retired process will never come
        s.parked, s.adopted = job.pid, job.id
        chan = job.chan
        z.sel.unregister(chan)
        job.chan = None
        s.ctrl, s.reader = chan, job.reader
        z.sel.register(chan, selectors.EVENT_READ, ("ctrl", s))
    else:
        z.unwatch(job)
    _prepare_spare(z, s)


def on_cell_eof(z, job):
    """A control channel closed: how the process ended comes from the parked process."""


def kill(z, sid, spare_id):
    s = z.sessions.get(sid)
    if s is None:
        return
    job = next((j for j in (s.job, s.spare) if j is not None and j.id == spare_id), None)
    if job is None and spare_id == s.adopted:
        # Its success came in first (it finished just past the host's deadline) and it is the
        # state now: the host is to take its result, which is in its channel, not a timeout.
        z.reply({"op": "session_exited", "sid": sid, "spare": spare_id, "status": None,
                 "adopted": True})
        return
    if job is None or job.done:
        return
    # Also marks it: a success it reported before the signal landed must not become the state.
    job.kill_pending = True
    if job.pid is None:
        return  # its pid is on the way: killed when it arrives
    if not _kill_verified(s, job):
        close(z, s.sid, _unstoppable(s, job))


def _kill_verified(s, job):
    """SIGKILL the cell, only if it is a child of the parked state (pids come from processes that
    ran user code). True also if it is already gone: the parked state reaped it and reports how."""
    pid = job.pid
    if pid is None or pid == s.parked:
        return False
    parent = _parent_of(pid)
    if parent is None and not os.path.exists(f"/proc/{pid}"):
        return True
    if parent != s.parked:
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    return True


def _unstoppable(s, job):
    """The reason a kill was refused, with what the check saw: the next failure explains itself."""
    return (f"session lost: its cell could not be stopped alone (cell pid {job.pid}, whose parent "
            f"is {_parent_of(job.pid) if job.pid else None}; the parked state is {s.parked})")


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
    for job in (s.spare, s.job, *s.forking):
        if job is not None:
            z.unwatch(job)
    s.spare = s.job = None
    if s.listener is not None:
        z.sel.unregister(s.listener)
        os.close(s.listener)
        s.listener = None
    if s.workdir:
        z.remove_workdir(s.workdir)
    if reason is not None:
        z.reply({"op": "session_lost", "sid": sid, "reason": reason})
