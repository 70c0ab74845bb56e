"""The syscall filter: compiled once with libseccomp in the zygote, loaded as raw BPF in each child.

libseccomp turns `SyscallPolicy` into a BPF program; exporting the bytes once and loading them
with the bare seccomp(2) call keeps the per-child cost at one syscall instead of a recompile.
Two variants exist: one-shot children may never create a process; session processes ask the
zygote (seccomp user notification) for the single fork that starts each of their cells.

The one-shot filter is loaded in two stages, because attaching a filter costs the kernel a pass
over every syscall number (its allow cache) and a large program makes that a quarter of a
millisecond per child. The template, which forks every one-shot child, loads the whole filter
minus what it and a child's set-up still need (`RELAXED`: creating a process, a new session);
each child then adds a tiny filter that takes exactly those back with the very actions the whole
filter gives them. The kernel applies the strictest answer of all the filters a process holds,
so a child ends up with precisely the one-shot policy, and the template itself runs restricted.
"""
import ctypes
import errno
import os

import pyseccomp as seccomp

CLONE_THREAD = 0x00010000
# Namespace flags: a "thread" that asks for any of these is not a thread.
CLONE_NS = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000
            | 0x40000000 | 0x00000080)
AF_UNIX = 1
PR_SET_NO_NEW_PRIVS = 38
SYS_seccomp = 317  # x86_64
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _action(name):
    return {"eperm": seccomp.ERRNO(errno.EPERM), "enosys": seccomp.ERRNO(errno.ENOSYS),
            "kill": seccomp.KILL_PROCESS, "allow": seccomp.ALLOW}[name]


def _add(flt, action, name, *args):
    try:
        flt.add_rule(action, name, *args)
    except (ValueError, OSError, RuntimeError):
        pass  # not a syscall on this architecture (e.g. "open" on aarch64)


RELAXED = ("setsid", "setpgid")  # plus clone without CLONE_THREAD, see build()


def _policy_action(sc, name):
    """What the whole filter does with `name` (unconditional rules; the first one added wins)."""
    for group, act in ((sc.allow, "allow"), (sc.eperm, "eperm"), (sc.enosys, "enosys"),
                       (sc.kill, "kill")):
        if name in group:
            return act
    return sc.default


def build(policy, session=False, stage=None):
    """Return the filter for `policy` as raw BPF bytes (8 bytes per instruction).
    stage: None for the whole filter; "template" and "child" for the two one-shot halves."""
    sc = policy.syscalls
    if stage == "child":
        return _build_child_stage(sc)
    flt = seccomp.SyscallFilter(_action(sc.default))
    # Only the native ABI: x32 and i386 entry points hit the bad-arch action.
    flt.set_attr(seccomp.Attr.ACT_BADARCH, _action(sc.foreign_abis))
    for name in sc.allow:
        _add(flt, seccomp.ALLOW, name)
    for group, act in ((sc.eperm, "eperm"), (sc.enosys, "enosys"), (sc.kill, "kill")):
        for name in group:
            if session and name in ("setsid", "setpgid"):
                continue  # handled below
            if stage == "template" and name in RELAXED:
                continue  # the child stage takes these back
            _add(flt, _action(act), name)
    if stage == "template":
        for name in RELAXED:
            _add(flt, seccomp.ALLOW, name)
    if "AF_UNIX" in sc.socket_families:
        _add(flt, seccomp.ALLOW, "socket", seccomp.Arg(0, seccomp.EQ, AF_UNIX))
    if sc.threads:
        _add(flt, seccomp.ALLOW, "clone",
             seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD | CLONE_NS, CLONE_THREAD))
    if sc.processes or stage == "template":
        _add(flt, seccomp.ALLOW, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD | CLONE_NS, 0))
    elif session:
        # The zygote answers: it grants exactly one fork per cell the host asked for.
        _add(flt, seccomp.NOTIFY, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD | CLONE_NS, 0))
    if sc.kill_own_group_only and not session:
        # kill(0, sig): its own process group, which holds only itself and its threads.
        _add(flt, seccomp.ALLOW, "kill", seccomp.Arg(0, seccomp.EQ, 0))
    else:
        # A session's group also holds its parked state, which a cell must not be able to kill.
        _add(flt, seccomp.ERRNO(errno.EPERM), "kill")
    if session:
        _add(flt, seccomp.ERRNO(errno.EPERM), "setsid")
        _add(flt, seccomp.ERRNO(errno.EPERM), "setpgid")
    return _export(flt)


def _build_child_stage(sc):
    """Everything allowed (the template's filter decides) but what the template stage relaxed."""
    flt = seccomp.SyscallFilter(seccomp.ALLOW)
    flt.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.ALLOW)  # the template's filter already decides
    for name in RELAXED:
        act = _policy_action(sc, name)
        if act != "allow":
            _add(flt, _action(act), name)
    if not sc.processes:
        _add(flt, _action(sc.default), "clone",
             seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD | CLONE_NS, 0))
    return _export(flt)


def _export(flt):
    fd = os.memfd_create("bpf")
    try:
        flt.export_bpf(os.fdopen(os.dup(fd), "wb", closefd=True))
        size = os.lseek(fd, 0, os.SEEK_END)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def describe(policy, session=False):
    """libseccomp's pseudo-C rendering of the filter, for humans."""
    sc = policy.syscalls
    return (f"default={sc.default} allow={len(sc.allow)} eperm={len(sc.eperm)} "
            f"enosys={len(sc.enosys)} kill={len(sc.kill)} sockets={','.join(sc.socket_families)} "
            f"threads={sc.threads} processes={'zygote-granted' if session else sc.processes} "
            f"foreign_abis={sc.foreign_abis}")


class LoadedFilter:
    """A BPF program held in C memory, ready for seccomp(2) in a freshly forked child."""

    def __init__(self, bpf):
        self._buf = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _SockFprog(len(bpf) // 8, ctypes.addressof(self._buf))

    def raw(self):
        """(address, instruction count) of the program, for a loader in C (_spawner.c)."""
        return ctypes.addressof(self._buf), self._prog.len

    def load(self, listener=False):
        """Apply to the calling process (irreversible). Returns the notification fd if asked."""
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        flags = SECCOMP_FILTER_FLAG_NEW_LISTENER if listener else 0
        r = _libc.syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(self._prog))
        if r < 0:
            raise OSError(ctypes.get_errno(), "seccomp(SET_MODE_FILTER)")
        return r if listener else None
