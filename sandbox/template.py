"""The one-shot template process: set up once what every spare shares, then fork on order.

Trusted, never runs user code: forks one-shot spares on the zygote's order, reaps them and
reports how each ended. The loop runs in C (_spawner.c) where the extension is built: it writes
none of the pages the spares share with it, and it isolates each new child before any Python
runs there. Without the extension the same loop runs in Python (serve_python).
"""
import _signal
import os
import resource
import select
import signal
import socket

from . import cell, hugepages, limits as limits_mod, protocol, reseed
from .child import ERR_FD, OUT_FD, SPARE_CPU_S, exited_children, lean_fork, spare

try:
    from . import _spawner
except ImportError:  # not built (pip install -e . builds it): the Python loop does the same
    _spawner = None

CTRL_FD, DEVNULL_FD = 3, 4


def run(z, ctrl_fd, wait_for_root=False):
    """`wait_for_root`: forked while the zygote still had the launcher's identity and the host's
    root; both are gone once the zygote says so."""
    os.dup2(ctrl_fd, CTRL_FD)
    os.closerange(DEVNULL_FD, resource.getrlimit(resource.RLIMIT_NOFILE)[0])  # the host channel
    if wait_for_root:
        z.become_namespace_root()  # the launcher's host uid never reaches a spare
    limits_mod.die_with_parent()  # after the id change, which clears it
    if wait_for_root:
        go = os.read(CTRL_FD, len(protocol.template_go()))
        os.chdir("/")
        if go != protocol.template_go():
            # The zygote died, or our "/" is not the root it built (pivot_root moves a process
            # whose root was the old one; were that not so, this template must not fork cells).
            os._exit(0)
    fd = os.open("/dev/null", os.O_RDWR)  # the sandbox root's, now that it is built
    os.dup2(fd, DEVNULL_FD)
    if fd != DEVNULL_FD:
        os.close(fd)
    z.devnull = DEVNULL_FD
    # What every one-shot child would otherwise do for itself, done once here.
    limits_mod.apply_static_rlimits(z.policy.limits)
    limits_mod.drop_privileges(z.in_user_ns, z.policy.unprivileged_uid, z.policy.unprivileged_gid)
    os.environ.update(HOME=".", TMPDIR=".")  # relative: each child's own work directory
    # A cell's streams, namespace and stand-ins made here once: each fork gets a pristine copy
    # and need not build (and so copy the pages of) its own.
    capture = cell.Capture(OUT_FD, ERR_FD)
    namespace = cell.new_namespace()
    cell.prepare_process()
    z.template_filter.load()  # the first stage of every one-shot child's filter
    if _spawner is not None:
        serve_c(z, capture, namespace)  # returns only if the C loop could not start
    serve_python(z, capture, namespace)


def serve_c(z, capture, namespace):
    # The signal state every child starts from (the zygote's handler and wakeup fd are not
    # ours); the C loop handles SIGCHLD itself and gives each child back the default.
    _signal.set_wakeup_fd(-1)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    soft, hard = limits_mod.cpu_limit_values(z.policy.limits, SPARE_CPU_S)
    addr, length = z.oneshot_filter.raw()
    entropy, reseeded = reseed.c_targets()
    me = os.getpid()
    hugepages.collapse_heap()  # last: from here on this process writes none of its heap
    try:
        workdir = _spawner.serve(DEVNULL_FD, addr, length, z.policy.limits.processes, soft, hard,
                                 entropy)
    except OSError as e:
        if os.getpid() == me:
            return  # the loop could not start: the Python one takes over
        os.write(2, f"sandbox child set-up failed: {e}\n".encode())
        os._exit(1)
    spare(z, None, workdir.decode(), capture, namespace, reseeded)


def serve_python(z, capture, namespace):
    hugepages.collapse_heap()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_w)
    ctrl = socket.socket(fileno=CTRL_FD)
    order = protocol.SPARE_ORDER_HEADER
    reader = protocol.FrameReader(ctrl, known={protocol.SPARE_ORDER: order})
    while True:
        try:
            ready = select.select([ctrl, wake_r], [], [])[0]
        except InterruptedError:
            continue
        if wake_r in ready:
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
            for pid, status in exited_children():
                ctrl.sendall(protocol.exited_frame(pid, status))
        if ctrl in ready:
            if not reader.fill():
                os._exit(0)
            for header, body, fds in reader.frames():
                if header is order and len(fds) == 3:
                    try:
                        pid = lean_fork(single_threaded=True)  # the template has one thread
                    except OSError:  # out of memory or processes: this spare is not coming
                        pid = None
                    if pid == 0:
                        spare(z, fds, body.decode(), capture, namespace)
                    ctrl.sendall(protocol.forked_frame(pid))
                for fd in fds:
                    os.close(fd)
