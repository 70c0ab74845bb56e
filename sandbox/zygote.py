"""The zygote: a fresh, single-threaded interpreter that pre-imports modules and forks every cell.

Started by the host as `python -m oci_engine.sandbox.zygote FD` with a scrubbed environment; FD is
its end of a socket pair. It reads the policy, imports the preload list, compiles the seccomp
filters, enters the namespaces, then serves frames in one select loop: it never blocks on a
child, and it is the only process that forks a one-shot cell or grants a session's fork.
"""
import collections
import ctypes
import gc
import importlib
import os
import secrets
import selectors
import signal
import socket
import sys

from . import (child, hugepages, namespaces, protocol, seccomp_filter, unmounter, zygote_sessions,
               zygote_spares)
from .policy import Policy

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
# Lean spares ready per worker. Most one-shot cells take one, and back to back the next is
# ordered only when a cell ends: more in stock lets their forks overlap the cells before them
# (2 cores, back to back, p50: trivial cell 1.35 -> 1.23 ms, numpy cell 1.50 -> 1.32 ms).
LEAN_DEPTH = 2


class Zygote:
    def __init__(self, host, reader, policy):
        self.host, self.host_reader, self.policy = host, reader, policy
        # One-shot children: the template holds the first stage, each child adds the second.
        self.template_filter = seccomp_filter.LoadedFilter(seccomp_filter.build(policy, stage="template"))
        self.oneshot_filter = seccomp_filter.LoadedFilter(seccomp_filter.build(policy, stage="child"))
        self.session_filter = seccomp_filter.LoadedFilter(seccomp_filter.build(policy, session=True))
        self.sel = selectors.DefaultSelector()
        self.by_pid, self.sessions = {}, {}
        self.handed = {}  # spare id -> Job: one-shot children whose channel the host holds
        # Per template kind ("lean", "full"; see zygote_spares): its process (pid, socket,
        # reader), spares handed but not yet used for a cell (kept at pool[kind]), and spares
        # ordered whose pid it has not said yet (in order).
        self.templates = {}
        self.untaken = collections.Counter()
        self.awaiting_pid = collections.defaultdict(collections.deque)
        self.spare_ids = 0
        self.pool = collections.Counter()  # ready spares to keep, per template kind
        self.in_user_ns = False
        self.report = {}
        self.devnull = None
        self.workroot = None
        self.own_mounts = False
        self.unmounter = None  # (pid, pipe): removes finished work directories (unmounter.py)

    # -- start-up ---------------------------------------------------------------------------
    def enter(self):
        """Enter the namespaces (this process becomes the zygote); the host identity stays until
        build_root(), so the rest of the preload can still read the launcher's files."""
        ns = self.policy.namespaces
        report = namespaces.enter(ns, self.policy.unprivileged_uid, self.policy.unprivileged_gid)
        self.in_user_ns = report.get("user") is True
        self.report = report
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # cells may not read our memory
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        return report

    def become_namespace_root(self):
        if self.in_user_ns:
            namespaces.become_namespace_root()
            # An id change resets both: memory stays unreadable, and we still die with our parent.
            ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
            if self.report.get("pid") is True:
                ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def build_root(self, report):
        ns = self.policy.namespaces
        self.become_namespace_root()
        if report.get("mount") is True:
            try:
                report["root"] = namespaces.build_root(ns, self.policy.limits,
                                                        namespaces.python_prefixes(),
                                                        report.get("pid") is True)
                self.workroot = ns.workdir_root
                self.own_mounts = True
            except OSError as e:
                report["root"] = f"unavailable ({e})"
        else:
            report["root"] = "host filesystem (no mount namespace)"
        if self.workroot is None:
            import tempfile
            self.workroot = tempfile.mkdtemp(prefix="oci-sandbox-")
            os.chmod(self.workroot, 0o711)
        if self.in_user_ns:
            report["uid"] = "namespace root, mapped to an unprivileged host id; no capabilities"
        elif os.geteuid() == 0:
            report["uid"] = f"{self.policy.unprivileged_uid} (dropped from root)"
        else:
            report["uid"] = f"{os.geteuid()} (the host user)"
        report["seccomp"] = seccomp_filter.describe(self.policy)
        self.devnull = os.open("/dev/null", os.O_RDWR)
        return report

    def make_workdir(self, prefix):
        """A fresh directory with its own tmpfs quota: one cell filling its disk cannot starve
        another, and removal is an unmount rather than a tree walk."""
        path = os.path.join(self.workroot, f"{prefix}-{secrets.token_hex(6)}")
        os.mkdir(path, 0o700)
        if self.own_mounts:
            try:
                namespaces.mount(
                    "tmpfs", path, "tmpfs", namespaces.MS_NOSUID | namespaces.MS_NODEV,
                    f"mode=0700,size={self.policy.limits.workdir_bytes}")
            except OSError:
                self.own_mounts = False
        if not self.in_user_ns and os.geteuid() == 0:
            os.chown(path, self.policy.unprivileged_uid, self.policy.unprivileged_gid)
        return path

    def remove_workdir(self, path):
        if self.unmounter is not None and unmounter.request(self.unmounter[1], path):
            return
        unmounter.discard(path, self.own_mounts)

    # -- the loop ----------------------------------------------------------------------------
    def serve(self):
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w)
        self.host.setblocking(False)
        self.sel.register(self.host, selectors.EVENT_READ, ("host", None))
        self.sel.register(wake_r, selectors.EVENT_READ, ("sigchld", None))
        while True:
            for kind in list(self.templates):
                while self.untaken[kind] < self.pool[kind] and kind in self.templates:
                    zygote_spares.spawn_spare(self, kind)
            for key, _ in self.sel.select():
                kind, obj = key.data
                if kind == "host":
                    self.on_host()
                elif kind == "sigchld":
                    try:
                        os.read(wake_r, 4096)
                    except BlockingIOError:
                        pass
                    self.reap()
                elif kind == "job":
                    self.on_job(obj)
                elif kind == "template":
                    zygote_spares.on_template(self, obj)
                else:
                    zygote_sessions.on_event(self, kind, obj)

    def reply(self, header, body=b"", fds=()):
        self.host.setblocking(True)
        try:
            protocol.send(self.host, header, body, fds)
        except OSError:
            self.shutdown()  # the host is gone
        finally:
            self.host.setblocking(False)

    def on_host(self):
        alive = self.host_reader.fill()
        for header, body, _ in self.host_reader.frames():
            op = header["op"]
            if op == "take":
                job = self.handed.get(header["spare"])
                if job is not None and not job.taken:
                    job.taken = True
                    self.untaken[job.kind] -= 1
                if job is not None:
                    job.quiet = bool(header.get("quiet"))
                if header.get("kill"):  # the cell is over: take and end in one frame
                    self._kill_spare(header["spare"])
            elif op == "kill_spare":
                self._kill_spare(header["spare"])
            elif op == "session_started":
                zygote_sessions.started(self, header["sid"], header["spare"])
            elif op == "session_kill":
                zygote_sessions.kill(self, header["sid"], header["spare"])
            elif op == "session_new":
                zygote_sessions.create(self, header["sid"])
            elif op == "session_close":
                zygote_sessions.close(self, header["sid"], "closed")
            elif op == "ping":
                self.reply({"op": "pong", "n": header.get("n")})
        if not alive:
            self.shutdown()

    def _kill_spare(self, spare_id):
        job = self.handed.get(spare_id)
        if job is not None:
            job.kill_pending = True
            if job.pid is not None:
                self.kill_pid(job.pid)

    def watch(self, job, sock):
        sock.setblocking(False)
        job.chan, job.reader = sock, protocol.FrameReader(sock, self.policy.limits.result_bytes)
        self.sel.register(sock, selectors.EVENT_READ, ("job", job))

    def on_job(self, job):
        if job.chan is None:
            return  # closed by an earlier event of the same select() batch
        try:
            alive = job.reader.fill()
            for header, body, fds in job.reader.frames():
                for fd in fds:
                    os.close(fd)
                if job.header is None and header.get("op") == "result":
                    job.header, job.body = header, body
                    zygote_sessions.on_result(self, job)
                    return
        except protocol.FrameTooLarge:  # a control channel carries only tiny frames
            zygote_sessions.kill(self, job.session.sid, job.id)
            alive = False
        if not alive:
            self.unwatch(job)
            if job.session is not None:
                zygote_sessions.on_cell_eof(self, job)

    def unwatch(self, job):
        if job.chan is not None:
            self.sel.unregister(job.chan)
            job.chan.close()
            job.chan = None

    def reap(self):
        for pid, status in child.exited_children():
            self.ended(pid, status)

    def ended(self, pid, status):
        job = self.by_pid.pop(pid, None)
        if job is not None:
            zygote_spares.spare_ended(self, job, status)
        # else: a session process, orphaned to us when its successor took over

    @staticmethod
    def kill_pid(pid):
        for fn in (os.killpg, os.kill):
            try:
                fn(pid, signal.SIGKILL)
            except OSError:
                pass

    def shutdown(self):
        for pid, _sock, _reader in self.templates.values():
            self.kill_pid(pid)
        for job in list(self.handed.values()):
            if job.pid is not None:
                self.kill_pid(job.pid)
            if job.workdir:
                self.remove_workdir(job.workdir)
        for sid in list(self.sessions):
            zygote_sessions.close(self, sid, None)
        os._exit(0)


def preload(names):
    loaded = []
    for name in names:
        try:
            if name == "matplotlib":
                import matplotlib
                matplotlib.use("Agg")
                import io
                import matplotlib.pyplot as plt
                # Draw once so fonts and the PNG writer are loaded here, not in every cell.
                fig = plt.figure(figsize=(1, 1))
                fig.savefig(io.BytesIO(), format="png")
                plt.close(fig)
            else:
                importlib.import_module(name)
                if name == "numpy":
                    import numpy.random  # noqa: F401  (lazy in numpy 2; every child reseeds it)
            loaded.append(name)
        except Exception:
            pass  # not installed: cells simply cannot import it either
    return loaded


def settle_heap():
    """Everything imported so far is shared with every fork: keep the collector's hands off it
    (or a child's first collection writes to, and so copies, every page of the heap), then put
    the heap on huge pages (last: what the forks copy is now final)."""
    gc.collect()
    gc.freeze()
    hugepages.collapse_heap()


def main():
    host = socket.socket(fileno=int(sys.argv[1]))
    reader = protocol.FrameReader(host)
    header, _, _ = reader.recv()
    policy = Policy.from_dict(header["policy"])
    lean = [m for m in policy.preload if m in policy.lean_preload]
    rest = [m for m in policy.preload if m not in policy.lean_preload]
    with hugepages.arenas_on_heap():
        loaded = preload(lean)
    z = Zygote(host, reader, policy)
    workers = max(1, int(header.get("workers", 2)))
    z.pool.update(lean=workers * LEAN_DEPTH, full=workers)
    report = z.enter()
    if rest:
        # The lean template is forked before the rest is imported: the one-shot cells that do not
        # need it fork from a heap (and a mapping list) a third the size. It waits for the root.
        settle_heap()
        zygote_spares.start_template(z, "lean", wait_for_root=True)
        lean_loaded = list(loaded)
        with hugepages.arenas_on_heap():
            loaded += preload(rest)
    report = z.build_root(report)
    settle_heap()
    zygote_spares.start_template(z, "full")
    if "lean" in z.templates:
        zygote_spares.release_template(z, "lean")
        report["lean_preloaded"] = lean_loaded
    if z.own_mounts:
        z.unmounter = unmounter.start(z.workroot)
    report["async_unmount"] = z.unmounter is not None
    report["preloaded"] = loaded
    report["templates"] = sorted(z.templates)
    report["spares"] = {kind: z.pool[kind] for kind in z.templates}
    report["threads"] = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None
    z.reply({"op": "ready", "isolation": report})
    z.serve()


if __name__ == "__main__":
    main()
