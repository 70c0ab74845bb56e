"""Removing finished work directories off the zygote's loop.

Each cell's work directory is its own tmpfs (a quota per cell; removal is an unmount, not a tree
walk). But umount waits for an RCU grace period: microseconds on an idle machine, milliseconds
on a busy core (3.5 ms measured with the core shared), and the zygote would sit in it while the
next spare waits to be ordered. So a helper process (a fork of the zygote, made once, trusted,
never runs user code) takes the paths over a pipe and unmounts them. A full pipe (a page of
paths) or a dead helper leaves the work to the zygote itself, as before.
"""
import fcntl
import os
import resource
import shutil

from . import limits as limits_mod, namespaces

F_SETPIPE_SZ = 1031


def start(workroot):
    """Fork the helper; returns (pid, write end of its pipe)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(r, 3)
            os.closerange(4, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
            limits_mod.die_with_parent()
            _serve(3, workroot)
        finally:
            os._exit(0)
    os.close(r)
    os.set_blocking(w, False)
    try:
        # A page of paths at most in flight: a cell's files (up to its quota) must not pile up
        # in memory behind a slow helper; past that the zygote unmounts them itself.
        fcntl.fcntl(w, F_SETPIPE_SZ, 4096)
    except OSError:
        pass
    return pid, w


def request(w, path):
    """Hand `path` over; False if the helper cannot take it now (the caller removes it)."""
    try:
        return os.write(w, path.encode() + b"\n") > 0  # one line under PIPE_BUF: all or nothing
    except OSError:
        return False


def _serve(fd, workroot):
    pending = b""
    while True:
        data = os.read(fd, 65536)
        if not data:
            return  # the zygote is gone
        *lines, pending = (pending + data).split(b"\n")
        for line in lines:
            remove(line.decode(errors="replace"), workroot)


def remove(path, workroot):
    # Only a work directory the zygote made: a name directly under the work root.
    if os.path.dirname(path) != workroot or os.path.basename(path) in ("", ".", ".."):
        return
    discard(path, own_mount=True)


def discard(path, own_mount):
    """Unmount a work directory (its own tmpfs, where `own_mount`) and delete it."""
    if own_mount and namespaces.unmount(path):
        try:
            os.rmdir(path)
            return
        except OSError:
            pass
    shutil.rmtree(path, ignore_errors=True)
