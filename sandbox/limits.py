"""Per-child resource limits and the privilege drop, applied after fork and before the filter."""
import ctypes
import os
import resource
import signal

_libc = ctypes.CDLL(None, use_errno=True)
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_SET_SECUREBITS = 28
# SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | its lock | KEEP_CAPS_LOCKED
_SECUREBITS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def apply_rlimits(limits, cpu_seconds):
    apply_static_rlimits(limits)
    apply_process_rlimits(limits, cpu_seconds)


def apply_static_rlimits(limits):
    """The limits that are the same for every child (the template sets them once for all)."""
    for res, value in ((resource.RLIMIT_AS, limits.address_space),
                       (resource.RLIMIT_FSIZE, limits.file_size),
                       (resource.RLIMIT_NOFILE, limits.open_files),
                       (resource.RLIMIT_STACK, limits.stack),
                       (resource.RLIMIT_CORE, limits.core)):
        resource.setrlimit(res, (value, value))
    # Past RLIMIT_FSIZE a write should fail with EFBIG (a clean OSError), not kill the cell.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def apply_process_rlimits(limits, cpu_seconds):
    """Per child: its CPU budget, and the process cap (the template itself must stay able to fork
    while cells run their thread pools)."""
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
    set_cpu_limit(limits, cpu_seconds)


def set_cpu_limit(limits, cpu_seconds):
    """Its CPU clock started at fork, so the same budget applies per cell. The soft limit sends
    SIGXCPU (fatal by default); the hard one a second later is SIGKILL."""
    resource.setrlimit(resource.RLIMIT_CPU, cpu_limit_values(limits, cpu_seconds))


def cpu_limit_values(limits, cpu_seconds):
    soft_cpu = max(1, int(cpu_seconds + 0.999)) + limits.cpu_slack_s
    return soft_cpu, soft_cpu + 1


def set_session_cell_cpu_limit(limits, cpu_seconds):
    """A session's cell lowers only the soft limit (SIGXCPU): a successful cell becomes the
    session's parked state, which must stay able to give a later cell a longer budget, and a
    lowered hard limit could never be raised again. The host's wall clock stays the hard bound."""
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = max(1, int(cpu_seconds + 0.999)) + limits.cpu_slack_s
    resource.setrlimit(resource.RLIMIT_CPU, (soft if hard < 0 else min(soft, hard), hard))


def restore_cpu_soft_limit():
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))


def drop_privileges(in_user_ns, uid, gid):
    """Leave the child with no capabilities in any namespace and, on a root host without a user
    namespace, an unprivileged uid."""
    if not in_user_ns and os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)  # leaving uid 0 clears every capability
        return
    if in_user_ns:
        # uid 0 of our namespace keeps no special power once these bits are locked
        _libc.prctl(PR_SET_SECUREBITS, _SECUREBITS, 0, 0, 0)
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(hdr), data) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"capset: {os.strerror(e)}")



def die_with_parent():
    PR_SET_PDEATHSIG = 1
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
