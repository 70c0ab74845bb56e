"""Namespaces, created once at zygote start-up: user, mount, net, pid, ipc, and the child's root.

The launcher forks: its child unshares a user namespace and the launcher (still outside it, and
root or the owner) writes the uid/gid maps, so a root host maps the sandbox onto `nobody` rather
than onto root. The child then unshares the rest and forks the zygote, which is pid 1 of the new
pid namespace (its death takes every cell with it) and builds the filesystem cells will see.
"""
import ctypes
import os
import signal
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
SYS_pivot_root = 155  # x86_64

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(r, what):
    if r != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def unshare(flags):
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def mount(src, dst, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    _check(_libc.mount(enc(src), enc(dst), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {src or fstype} on {dst}")


def unmount(path):
    return _libc.umount2(path.encode(), MNT_DETACH) == 0


def enter(ns, uid, gid):
    """Run in the launcher. Returns only in the process that is to become the zygote, with a
    report {namespace: True/False or reason}; the intermediate processes wait and exit.
    The zygote still has the launcher's host uid on return (it may finish importing from a home
    only that uid can read); it calls become_namespace_root() before it builds the root."""
    report = {"user": "disabled by policy"}
    ready_r, ready_w = os.pipe()
    mapped_r, mapped_w = os.pipe()
    pid = os.fork() if ns.user else 0
    if pid:  # launcher: map ids from outside, then wait for the tree to end
        os.close(ready_w), os.close(mapped_r)
        if os.read(ready_r, 1) == b"1":
            _write_maps(pid, uid, gid)
        os.write(mapped_w, b"1")
        _wait_and_exit(pid)
    os.close(ready_r), os.close(mapped_w)
    if ns.user:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        try:
            unshare(CLONE_NEWUSER)
            os.write(ready_w, b"1")
            os.read(mapped_r, 1)
            report["user"] = True
        except OSError as e:
            os.write(ready_w, b"0")
            report["user"] = f"unavailable ({e})"
    os.close(ready_w), os.close(mapped_r)
    for name, flag in (("mount", CLONE_NEWNS), ("net", CLONE_NEWNET), ("ipc", CLONE_NEWIPC),
                       ("pid", CLONE_NEWPID)):
        if not getattr(ns, name):
            report[name] = "disabled by policy"
            continue
        try:
            unshare(flag)
            report[name] = True
        except OSError as e:
            report[name] = f"unavailable ({e.strerror})"
    if report.get("user") is True and report.get("mount") is True:
        # Still the host's uid here: a root launcher's Python may live under /root, which
        # the mapped unprivileged id could not even look up later.
        _hold(list(ns.ro_paths) + python_prefixes())
    if report.get("pid") is True:
        pid = os.fork()
        if pid:
            if report.get("user") is True:
                become_namespace_root()  # the holder keeps no host identity either
            _wait_and_exit(pid)
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
    return report


_held = {}


def _hold(paths):
    for p in paths:
        try:
            _held[p] = (os.open(p, os.O_PATH | os.O_NOFOLLOW), os.path.islink(p),
                        os.path.isdir(p), os.readlink(p) if os.path.islink(p) else None)
        except OSError:
            pass


def _release():
    for fd, *_ in _held.values():
        os.close(fd)
    _held.clear()


def _write_maps(pid, uid, gid):
    # A root launcher maps in-namespace root onto an unprivileged id; anyone else can only map
    # their own id. Root keeps setgroups so the zygote can drop root's supplementary groups.
    if os.geteuid() != 0:
        uid, gid = os.geteuid(), os.getegid()
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
    with open(f"/proc/{pid}/uid_map", "w") as f:
        f.write(f"0 {uid} 1\n")
    with open(f"/proc/{pid}/gid_map", "w") as f:
        f.write(f"0 {gid} 1\n")


def become_namespace_root():
    """Take the mapped id inside the new user namespace (drops root's host groups)."""
    try:
        os.setgroups([])
    except OSError:
        pass  # setgroups denied: an unprivileged launcher had no extra groups to drop
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def _wait_and_exit(pid):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for fd in range(3, 256):  # hold nothing the host or the zygote could be waiting on
        try:
            os.close(fd)
        except OSError:
            pass
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = 0
            break
        except InterruptedError:
            continue
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def build_root(ns, limits, prefixes, have_pid_ns):
    """Pivot into a fresh tmpfs root holding only what Python needs. Returns a report string."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    new = "/tmp" if os.path.isdir("/tmp") else "/mnt"
    mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=16m")
    ro = list(ns.ro_paths) + sorted(set(prefixes))
    if not _held:
        _hold(ro)
    bound = []
    for src in ro:
        if src not in _held:
            continue
        fd, is_link, is_dir, target = _held[src]
        dst = new + src
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if is_link:
            if not os.path.lexists(dst):
                os.symlink(target, dst)
            continue
        if os.path.lexists(dst):
            continue  # already inside an earlier bind (a prefix under /usr)
        _bind(f"/proc/self/fd/{fd}", dst, readonly=True, is_dir=is_dir)
        bound.append(src)
    _release()
    os.makedirs(new + "/dev", exist_ok=True)
    for dev in ns.devices:
        if os.path.exists(dev):
            _bind(dev, new + dev, readonly=False, is_dir=False)
    os.makedirs(new + "/dev/shm")
    mount("tmpfs", new + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=16m")
    os.makedirs(new + ns.workdir_root)
    mount("tmpfs", new + ns.workdir_root, "tmpfs", MS_NOSUID | MS_NODEV,
          f"mode=0755,size={limits.workdir_bytes}")
    proc = "none"
    if have_pid_ns:
        os.makedirs(new + "/proc")
        try:
            mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            proc = "own"
        except OSError:
            pass
    os.makedirs(new + "/.old")
    _check(_libc.syscall(SYS_pivot_root, new.encode(), (new + "/.old").encode()), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "umount old root")
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return f"tmpfs root, read-only binds of {', '.join(bound)}; /proc {proc}"


def _bind(src, dst, readonly, is_dir=None):
    if os.path.isdir(src) if is_dir is None else is_dir:
        os.makedirs(dst, exist_ok=True)
    else:
        open(dst, "a").close()
    mount(src, dst, None, MS_BIND | MS_REC)
    if readonly:
        # A remount inside a user namespace must keep the flags the source was locked with.
        f = os.statvfs(src).f_flag
        keep = 0
        for st, ms in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                       (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
                       (os.ST_RELATIME, MS_RELATIME)):
            if f & st:
                keep |= ms
        mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | keep)


def python_prefixes():
    return [p for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix} if p]
