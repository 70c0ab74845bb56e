"""One-shot children: template processes fork them ahead of demand, the host drives them.

A template is a trusted copy of the zygote (it never runs user code) whose only job is fork:
so the zygote never blocks in fork() while a request waits. Each spare's channel and output
files go to the host, which sends the code and reads the result itself; the zygote keeps the
child's life (pid, kill on request, how it ended, its work directory).

There are two kinds. The "full" template is forked once everything in the preload list is
imported. The "lean" one is forked before the modules outside policy.lean_preload (pandas,
matplotlib) are: its heap is a third the size and it maps a third as many libraries, and the
kernel's cost of a fork, of the copy-on-write faults after it and of the exit grows with both.
The host gives a cell a lean spare only when the cell's code cannot need the rest
(template_choice); anything else, or a lean pool that is empty, takes a full one.
"""
import os
import selectors
import socket

from . import protocol, template
from .job import Job

def start_template(z, kind, wait_for_root=False):
    """Fork a template. `wait_for_root`: the zygote has not yet pivoted into the sandbox's root
    (nor dropped the launcher's identity); the template sets itself up only once told to."""
    zs, ts = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        zs.close()
        template.run(z, ts.fileno(), wait_for_root)
    ts.close()
    zs.setblocking(False)
    z.templates[kind] = (pid, zs, protocol.FrameReader(zs))
    z.sel.register(zs, selectors.EVENT_READ, ("template", kind))


def release_template(z, kind):
    """The root is built: a template that waited for it may set itself up."""
    try:
        z.templates[kind][1].send(protocol.template_go())  # into an empty socket: cannot block
    except OSError:
        pass  # it died waiting: the loop sees its socket close and starts another


def spawn_spare(z, kind):
    """Order a spare from a template and hand its channel and output files to the host,
    which then talks to it directly: a one-shot cell's path never passes through here."""
    z.spare_ids += 1
    job = Job(z.spare_ids)
    job.kind = kind
    job.workdir = z.make_workdir("run")
    host_end, cell_end = socket.socketpair()
    try:
        protocol.send_before(z.templates[kind][1], 2.0, protocol.SPARE_ORDER, job.workdir.encode(),
                             fds=[cell_end.fileno(), job.out, job.err])
        z.reply({"op": "spare", "spare": job.id, "kind": kind},
                fds=[host_end.fileno(), job.out, job.err])
    finally:
        host_end.close(), cell_end.close()
        job.close_output()
    z.awaiting_pid[kind].append(job)
    z.handed[job.id] = job
    z.untaken[kind] += 1


def on_template(z, kind):
    _pid, sock, reader = z.templates[kind]
    alive = reader.fill()
    awaiting = z.awaiting_pid[kind]
    for header, _, _ in reader.frames():
        if header.get("op") == "forked" and awaiting:
            job = awaiting.popleft()
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
        del z.templates[kind]
        for job in awaiting:  # never forked; those that were are now ours to reap
            spare_ended(z, job, None)
        awaiting.clear()
        # A lean template forked now would carry the whole preload: still correct, only slower.
        start_template(z, kind)


def spare_ended(z, job, status):
    if z.handed.pop(job.id, None) is not None and not job.taken:
        z.untaken[job.kind] -= 1
    if not job.quiet:
        z.reply({"op": "exited", "spare": job.id, "status": status})
    z.remove_workdir(job.workdir)
