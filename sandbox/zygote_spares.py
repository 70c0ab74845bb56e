"""One-shot children: the template process forks them ahead of demand, the host drives them.

The template is a trusted copy of the zygote (it never runs user code) whose only job is fork:
so the zygote never blocks in fork() while a request waits. Each spare's channel and output
files go to the host, which sends the code and reads the result itself; the zygote keeps the
child's life (pid, kill on request, how it ended, its work directory).
"""
import os
import selectors
import socket

from . import child, protocol
from .job import Job


def start_template(z):
    """Fork the template (after the zygote's set-up, so it inherits the filters and namespaces)."""
    zs, ts = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        zs.close()
        child.template(z, ts.fileno())
    ts.close()
    zs.setblocking(False)
    z.template = (pid, zs, protocol.FrameReader(zs))
    z.sel.register(zs, selectors.EVENT_READ, ("template", None))


def spawn_spare(z):
    """Order a spare from the template and hand its channel and output files to the host,
    which then talks to it directly: a one-shot cell's path never passes through here."""
    z.spare_ids += 1
    job = Job(z.spare_ids)
    job.workdir = z.make_workdir("run")
    host_end, cell_end = socket.socketpair()
    try:
        protocol.send_before(z.template[1], 2.0, protocol.SPARE_ORDER, job.workdir.encode(),
                             fds=[cell_end.fileno(), job.out, job.err])
        z.reply({"op": "spare", "spare": job.id}, fds=[host_end.fileno(), job.out, job.err])
    finally:
        host_end.close(), cell_end.close()
        job.close_output()
    z.awaiting_pid.append(job)
    z.handed[job.id] = job
    z.untaken += 1


def on_template(z):
    _pid, sock, reader = z.template
    alive = reader.fill()
    for header, _, _ in reader.frames():
        if header.get("op") == "forked" and z.awaiting_pid:
            job = z.awaiting_pid.popleft()
            if header["pid"] is None:
                spare_ended(z, job, None)  # the host sees its channel close
                continue
            job.pid = header["pid"]
            z.by_pid[job.pid] = job
            if job.kill_pending:
                z.kill_pid(job.pid)
        elif header.get("op") == "exited":
            z.ended(header["pid"], header["status"])
    if not alive:
        z.sel.unregister(sock)
        sock.close()
        z.template = None
        for job in z.awaiting_pid:  # never forked; those that were are now ours to reap
            spare_ended(z, job, None)
        z.awaiting_pid.clear()
        start_template(z)


def spare_ended(z, job, status):
    if z.handed.pop(job.id, None) is not None and not job.taken:
        z.untaken -= 1
    z.reply({"op": "exited", "spare": job.id, "status": status})
    z.remove_workdir(job.workdir)

