"""seccomp user notification, supervisor side: the zygote decides each fork a session asks for."""
import errno
import fcntl
import struct

# struct seccomp_notif: u64 id, u32 pid, u32 flags, seccomp_data {i32 nr, u32 arch, u64 ip, u64 args[6]}
_NOTIF = struct.Struct("<QIIiIQ6Q")
_RESP = struct.Struct("<QqiI")  # id, val, error, flags
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1


def receive(fd):
    """Returns (id, tid, syscall_nr, args) or None when the caller vanished meanwhile."""
    buf = bytearray(_NOTIF.size)
    try:
        fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
            return None
        raise
    nid, pid, _flags, nr, _arch, _ip, *args = _NOTIF.unpack(buf)
    return nid, pid, nr, args


def respond(fd, nid, allow):
    resp = _RESP.pack(nid, 0, 0 if allow else -errno.EPERM,
                      SECCOMP_USER_NOTIF_FLAG_CONTINUE if allow else 0)
    try:
        fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, bytearray(resp), True)
    except OSError as e:
        if e.errno != errno.ENOENT:  # the caller died while we decided: nothing to answer
            raise
