"""What a forked child does: isolate itself, then run a cell (one-shot) or hold a session's state.

Everything here runs after fork in a copy of the zygote. Order matters: fds are closed first (the
child must not inherit the host channel or other cells' sockets), then rlimits, then privileges,
then the seccomp filter (last, so the set-up calls above need not be allowed to cells).
"""
import _signal
import ctypes
import fcntl
import os
import resource
import select
import socket
import threading

from . import cell, limits as limits_mod, protocol, reseed

CHANNEL_FD = 3  # the child's only socket: its result channel to the zygote
OUT_FD, ERR_FD = 4, 5  # memory files the zygote also holds, so output survives a kill


def take_fds(channel_fd, out_fd, err_fd):
    """Move the three fds a cell owns to fixed numbers; stdout/stderr point at the memory files."""
    # Fresh copies above 5 first: a source may itself sit on one of the target numbers.
    tmp = [fcntl.fcntl(fd, fcntl.F_DUPFD, ERR_FD + 1) for fd in (channel_fd, out_fd, err_fd)]
    for src, dst in zip(tmp + tmp[1:], (CHANNEL_FD, OUT_FD, ERR_FD, 1, 2)):
        os.dup2(src, dst)
    for fd in tmp:
        os.close(fd)


_libc_py = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held across the call
_libc_py.fork.restype = ctypes.c_int


def lean_fork(single_threaded=False):
    """fork(2) without Python's at-fork machinery when only one thread exists.

    os.fork() re-initialises the interpreter's locks and thread states and runs every at-fork
    hook the preloaded libraries registered (logging walks all its handlers, random reseeds):
    in a fork of this heap that touches, and so copies, some 250 pages, about 0.7 ms per
    cell. With a single thread there is no lock another thread could hold and no thread state to
    drop; the child reseeds the generators itself. With more threads (a session whose cells
    left some running) the full os.fork() is the safe one."""
    if not single_threaded and _os_threads() != 1:
        return os.fork()
    pid = _libc_py.fork()
    if pid < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    if pid == 0:
        _after_c_fork()
    return pid


def exited_children():
    """(pid, wait status) of each child that has ended, without blocking, until none is waiting
    to be collected. Run on every SIGCHLD wake-up: signals coalesce, one may stand for many."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # no children at all
            return
        if pid == 0:  # children left, none ended
            return
        yield pid, status


def _after_c_fork():
    try:
        threading.main_thread()._set_native_id()  # the one thing threading caches per process
    except AttributeError:
        pass


def _os_threads():
    """Threads of this process as the kernel counts them (raw _thread ones included)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[17])
    except (OSError, ValueError, IndexError):
        return None


def isolate(z, channel_fd, out_fd, err_fd, workdir, timeout, session, pre_isolated=False):
    """Common set-up; returns the seccomp notification fd for a session root, else None.
    `pre_isolated`: forked by the template, which already holds no privileges and the limits
    that are the same for all (every page the child does not touch is one it need not copy)."""
    # The C functions: signal.signal() wraps them in enum conversions whose first use in a fresh
    # fork copies a hundred pages.
    _signal.set_wakeup_fd(-1)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    os.setsid()
    os.dup2(z.devnull, 0)
    take_fds(channel_fd, out_fd, err_fd)
    os.closerange(ERR_FD + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.chdir(workdir)
    if pre_isolated:
        limits_mod.apply_process_rlimits(z.policy.limits, timeout)
    else:
        os.environ.update(HOME=workdir, TMPDIR=workdir)
        limits_mod.apply_rlimits(z.policy.limits, timeout)
        limits_mod.drop_privileges(z.in_user_ns, z.policy.unprivileged_uid, z.policy.unprivileged_gid)
    flt = z.session_filter if session else z.oneshot_filter
    return flt.load(listener=session)


SPARE_CPU_S = 3600  # lowered to the cell's own budget once its code arrives


def spare(z, fds, workdir, capture, namespace, reseeded=False):
    """A one-shot child forked ahead of demand: isolated and seeded, waiting for its code.
    fds None: the template's C loop forked it and has already isolated it (_spawner.c), and
    reseeded its generators if `reseeded`."""
    chan = None
    try:
        if fds is None:
            _after_c_fork()
        else:
            isolate(z, *fds, workdir, SPARE_CPU_S, session=False, pre_isolated=True)
        chan = CHANNEL_FD  # a bare fd: a socket object's set-up would copy some 30 pages
        if not reseeded:
            reseed.reseed_fresh()
        cell.warm(capture, z.policy.limits)
        frame = protocol.recv_cell(chan)
        if frame is None:
            os._exit(0)
        limits_mod.set_cpu_limit(z.policy.limits, frame[0])
        error = cell.run(frame[1].decode("utf-8", "replace"), namespace)
        body = cell.finish(capture, z.policy.limits, error)
        protocol.send_result(chan, error is None, body)
    except BaseException as e:
        _report_setup_failure(chan, e)
    finally:
        os._exit(0)


def session_root(z, channel_fd, workdir, timeout):
    """A session's first state: isolated, never runs user code, forks the first cell."""
    chan = None
    try:
        listener = isolate(z, channel_fd, z.devnull, z.devnull, workdir, timeout, session=True)
        chan = socket.socket(fileno=CHANNEL_FD)
        protocol.send(chan, {"op": "ready", "pid": os.getpid()}, fds=[listener])
        os.close(listener)
        namespace = cell.new_namespace()
        park(z, chan, namespace)
    except BaseException as e:
        _report_setup_failure(chan, e)
    finally:
        os._exit(0)


def park(z, chan, namespace):
    """Hold this state. On the zygote's word, fork a spare copy that waits for the next cell;
    on 'retire' (a successor took over), exit."""
    reader = protocol.FrameReader(chan)
    children = {}  # pid -> pidfd: spares and cells forked from here, reaped here
    while True:
        ready = select.select([chan, *children.values()], [], [])[0]
        for pid, pidfd in list(children.items()):
            if pidfd in ready:
                _, status = os.waitpid(pid, 0)
                os.close(pidfd)
                del children[pid]
                protocol.send(chan, {"op": "exited", "pid": pid, "status": status})
        if chan not in ready:
            continue
        if not reader.fill():
            os._exit(0)  # the zygote is gone
        for header, _body, fds in reader.frames():
            if header["op"] == "retire":
                os._exit(0)
            if header["op"] != "spare" or len(fds) != 4:
                for fd in fds:
                    os.close(fd)
                continue
            pid = lean_fork()  # granted once by the zygote through seccomp notification
            if pid == 0:
                session_spare(z, fds, namespace)
            for fd in fds:
                os.close(fd)
            protocol.send(chan, {"op": "forked", "pid": pid})
            children[pid] = os.pidfd_open(pid)


def session_spare(z, fds, namespace):
    """A copy of the parked state, waiting for its cell. Success makes it the parked state."""
    chan = data = None
    try:
        take_fds(*fds[:3])  # replaces the parked state's channel and capture in this copy
        data = socket.socket(fileno=fcntl.fcntl(fds[3], fcntl.F_DUPFD, ERR_FD + 1))
        for fd in fds:
            if fd > ERR_FD:
                os.close(fd)
        chan = socket.socket(fileno=CHANNEL_FD)
        capture = cell.Capture(OUT_FD, ERR_FD)
        cell.prepare(namespace)
        frame = protocol.recv_cell(data)  # the host sends the code straight here
        if frame is None:
            os._exit(0)
        limits_mod.set_session_cell_cpu_limit(z.policy.limits, frame[0])
        error = cell.run(frame[1].decode("utf-8", "replace"), namespace)
        body = cell.finish(capture, z.policy.limits, error)
        protocol.send_result(data, error is None, body)
        protocol.send_result(chan, error is None)
        data.close()
        if error is None:
            limits_mod.restore_cpu_soft_limit()
            park(z, chan, namespace)  # this process is now the session's last good state
    except BaseException as e:
        _report_setup_failure(data, e)
    finally:
        os._exit(0)


def _report_setup_failure(chan, e):
    if isinstance(chan, int):
        chan = socket.socket(fileno=chan)
    if chan is None:
        import traceback
        os.write(2, ("sandbox child set-up failed: " + "".join(traceback.format_exception(e))).encode())
        return
    try:
        err = cell.describe_exception(e)
        err["message"] = "sandbox internal failure: " + err["message"]
        protocol.send(chan, {"op": "result", "ok": False},
                      cell.json.dumps({"stdout": "", "stderr": "", "error": err, "images": []}).encode())
    except BaseException:
        pass
