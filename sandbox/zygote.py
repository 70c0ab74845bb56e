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
import shutil
import signal
import socket
import sys

from . import cell, child, namespaces, protocol, seccomp_filter, zygote_sessions
from .job import Job
from .policy import Policy

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


class Zygote:
    def __init__(self, host, reader, policy):
        self.host, self.host_reader, self.policy = host, reader, policy
        self.oneshot_filter = seccomp_filter.LoadedFilter(seccomp_filter.build(policy))
        self.session_filter = seccomp_filter.LoadedFilter(seccomp_filter.build(policy, session=True))
        self.sel = selectors.DefaultSelector()
        self.jobs, self.by_pid, self.sessions = {}, {}, {}
        self.spares = collections.deque()      # ordered from the template, not yet given a cell
        self.awaiting_pid = collections.deque()  # ordered, the template has not said its pid yet
        self.pool_size = 2
        self.template = None
        self.in_user_ns = False
        self.devnull = None
        self.workroot = None

    # -- start-up ---------------------------------------------------------------------------
    def isolate(self):
        ns = self.policy.namespaces
        report = namespaces.enter(ns, self.policy.unprivileged_uid, self.policy.unprivileged_gid)
        self.in_user_ns = report.get("user") is True
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # cells may not read our memory
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        if report.get("mount") is True:
            try:
                report["root"] = namespaces.build_root(ns, self.policy.limits,
                                                        namespaces.python_prefixes(),
                                                        report.get("pid") is True)
                self.workroot = ns.workdir_root
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
        path = os.path.join(self.workroot, f"{prefix}-{secrets.token_hex(6)}")
        os.mkdir(path, 0o700)
        if not self.in_user_ns and os.geteuid() == 0:
            os.chown(path, self.policy.unprivileged_uid, self.policy.unprivileged_gid)
        return path

    # -- the loop ----------------------------------------------------------------------------
    def serve(self):
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(wake_w)
        self.host.setblocking(False)
        self.sel.register(self.host, selectors.EVENT_READ, ("host", None))
        self.sel.register(wake_r, selectors.EVENT_READ, ("sigchld", None))
        while True:
            while len(self.spares) < self.pool_size and self.template is not None:
                self.spares.append(self.spawn_spare())
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
                    self.on_template()
                else:
                    zygote_sessions.on_event(self, kind, obj)

    def reply(self, header, body=b""):
        self.host.setblocking(True)
        try:
            protocol.send(self.host, header, body)
        finally:
            self.host.setblocking(False)

    def on_host(self):
        alive = self.host_reader.fill()
        for header, body, _ in self.host_reader.frames():
            op = header["op"]
            if op == "run" and header.get("sid") is None:
                self.start_job(header["job"], body.decode(), header["timeout"])
            elif op == "run":
                zygote_sessions.run(self, header["sid"], header["job"], body.decode(), header["timeout"])
            elif op == "kill":
                self.kill(header["job"])
            elif op == "session_new":
                zygote_sessions.create(self, header["sid"])
            elif op == "session_close":
                zygote_sessions.close(self, header["sid"], "closed")
            elif op == "ping":
                self.reply({"op": "pong", "n": header.get("n")})
        if not alive:
            self.shutdown()

    def start_template(self):
        """Fork the template: a trusted copy of this process that forks the one-shot spares, so
        the zygote itself never blocks in fork() while a request waits."""
        zs, ts = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            zs.close()
            child.template(self, ts.fileno())
        ts.close()
        zs.setblocking(False)
        self.template = (pid, zs, protocol.FrameReader(zs))
        self.sel.register(zs, selectors.EVENT_READ, ("template", None))

    def spawn_spare(self):
        """Order a spare from the template; a cell may be queued on its channel at once."""
        job = Job(None)
        job.workdir = self.make_workdir("run")
        zs, cs = socket.socketpair()
        try:
            protocol.send_before(self.template[1], 2.0, {"op": "spare", "workdir": job.workdir},
                                 fds=[cs.fileno(), job.out, job.err])
        finally:
            cs.close()
        self.watch(job, zs)
        self.awaiting_pid.append(job)
        return job

    def on_template(self):
        _pid, sock, reader = self.template
        alive = reader.fill()
        for header, _, _ in reader.frames():
            if header.get("op") == "forked" and self.awaiting_pid:
                job = self.awaiting_pid.popleft()
                job.pid = header["pid"]
                self.by_pid[job.pid] = job
                if job.done:  # its result came first
                    self.kill_pid(job.pid)
            elif header.get("op") == "exited":
                self.ended(header["pid"], header["status"])
        if not alive:
            self.sel.unregister(sock)
            sock.close()
            self.template = None
            for job in list(self.spares) + list(self.awaiting_pid):
                self.unwatch(job)
                if job in self.spares:
                    self.spares.remove(job)
                if job.id is not None:
                    job.reason = "the process forking cells died"
                    self.finish(job)
                else:
                    job.close_output()
            self.awaiting_pid.clear()
            self.start_template()

    def start_job(self, job_id, code, timeout):
        job = self.spares.popleft() if self.spares else self.spawn_spare()
        job.id = job_id
        self.jobs[job_id] = job
        try:
            protocol.send_before(job.chan, 2.0, {"op": "cell", "timeout": timeout},
                                 code.encode("utf-8", "surrogatepass"))
        except OSError:
            pass  # the spare died: its reaping reports the job

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
                if job.header is None and header.get("op") == "result" and job.id is not None:
                    job.header, job.body = header, body
                    if job.session is not None:
                        zygote_sessions.on_result(self, job)
                        return
                    self.kill(job.id)  # nothing left for it to do; its files go when it is reaped
                    self.finish(job)
        except protocol.BadFrame:
            job.reason = "the cell wrote garbage on its result channel"
            self.kill(job.id)
            alive = False
        except protocol.FrameTooLarge:
            job.reason = f"the cell's output exceeded {self.policy.limits.result_bytes} bytes"
            self.kill(job.id)
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
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.ended(pid, status)

    def ended(self, pid, status):
        job = self.by_pid.pop(pid, None)
        if job is None:
            return  # a session process, orphaned to us when its successor took over
        if job.chan is not None:
            self.on_job(job)  # everything it wrote is already in the socket
            self.unwatch(job)
        if job.id is None:  # a spare that died unused
            if job in self.spares:
                self.spares.remove(job)
            job.close_output()
        else:
            self.finish(job, status)
        if job.workdir:
            shutil.rmtree(job.workdir, ignore_errors=True)

    def finish(self, job, status=None):
        if job.done:
            return
        job.done = True
        self.jobs.pop(job.id, None)
        header = {"op": "done", "job": job.id, "ok": None if job.header is None else job.header.get("ok"),
                  "exit": None, "signal": None, "reason": job.reason}
        if job.header is None and job.out is not None:
            job.body = cell.output_only(job.out, job.err, self.policy.limits)
            header["partial"] = True
        job.close_output()
        if isinstance(status, int) and 0 <= status < 1 << 16:  # a session's report is untrusted
            if os.WIFSIGNALED(status):
                header["signal"] = os.WTERMSIG(status)
            elif os.WIFEXITED(status):
                header["exit"] = os.WEXITSTATUS(status)
        self.reply(header, job.body)

    def kill(self, job_id):
        job = self.jobs.get(job_id)
        if job is None:
            return
        if job.session is not None:
            zygote_sessions.kill_cell(self, job)
            return
        if job.pid is not None:
            self.kill_pid(job.pid)

    @staticmethod
    def kill_pid(pid):
        for fn in (os.killpg, os.kill):
            try:
                fn(pid, signal.SIGKILL)
            except OSError:
                pass

    def shutdown(self):
        if self.template is not None:
            self.kill_pid(self.template[0])
        for job in list(self.jobs.values()) + list(self.spares):
            if job.pid is not None:
                self.kill_pid(job.pid)
            if job.workdir:
                shutil.rmtree(job.workdir, ignore_errors=True)
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
                    import numpy.random  # lazy in numpy 2; every child reseeds it
            loaded.append(name)
        except Exception:
            pass  # not installed: cells simply cannot import it either
    return loaded


def main():
    host = socket.socket(fileno=int(sys.argv[1]))
    reader = protocol.FrameReader(host)
    header, _, _ = reader.recv()
    policy = Policy.from_dict(header["policy"])
    loaded = preload(policy.preload)
    z = Zygote(host, reader, policy)
    z.pool_size = max(1, int(header.get("workers", 2)))
    report = z.isolate()
    # Everything imported so far is shared with every child: keep the collector's hands off it,
    # or a child's first collection writes to (and so copies) every page of the heap.
    gc.collect()
    gc.freeze()
    z.start_template()
    report["preloaded"] = loaded
    report["threads"] = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else None
    z.reply({"op": "ready", "isolation": report})
    z.serve()


if __name__ == "__main__":
    main()
