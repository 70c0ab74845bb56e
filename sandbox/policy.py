"""The sandbox policy as data: limits, namespaces and the syscall filter, in one printable object.

Nothing here acts; the zygote and the child read these fields. `Policy.describe()` is what the
sandbox logs at start-up so an operator can see exactly what a cell is allowed to do.
"""
import dataclasses
import json
from dataclasses import dataclass, field

MiB = 1 << 20
GiB = 1 << 30


@dataclass(slots=True)
class Limits:
    address_space: int = 2 * GiB
    file_size: int = 64 * MiB
    open_files: int = 64
    # Counted per uid and including threads: room for thread pools, not for a bomb.
    processes: int = 256
    stack: int = 8 * MiB
    core: int = 0
    # CPU seconds are the cell's timeout rounded up plus this slack; the wall clock is the real bound.
    cpu_slack_s: int = 1
    stdout_bytes: int = 64 * 1024
    stderr_bytes: int = 64 * 1024
    # Upper bound on one result frame (output, images, error) accepted from a child.
    result_bytes: int = 32 * MiB
    workdir_bytes: int = 256 * MiB


@dataclass(slots=True)
class Namespaces:
    user: bool = True
    mount: bool = True
    net: bool = True
    pid: bool = True
    ipc: bool = True
    # Read-only views of the host inside the child's root; anything else does not exist there.
    # The interpreter's prefix is added at run time (it is wherever Python is installed).
    ro_paths: tuple = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin",
                       "/etc/ld.so.cache", "/etc/localtime", "/etc/mime.types")
    devices: tuple = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
    workdir_root: str = "/work"


# Failure actions, by name, so the policy prints as words. "kill" ends the whole process (attacks);
# "eperm" gives Python a clean PermissionError; "enosys" makes libc fall back (clone3 -> clone).
@dataclass(slots=True)
class SyscallPolicy:
    default: str = "eperm"
    allow: tuple = (
        "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
        "pwritev2", "open", "openat", "close", "close_range", "creat", "stat", "fstat", "lstat",
        "newfstatat", "statx", "statfs", "fstatfs", "lseek", "access", "faccessat", "faccessat2",
        "mmap", "mprotect", "munmap", "mremap", "brk", "madvise", "msync", "mincore",
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait",
        "rt_sigsuspend", "sigaltstack", "ioctl", "fcntl", "flock", "fsync", "fdatasync",
        "truncate", "ftruncate", "fallocate", "fadvise64", "readahead", "sendfile", "copy_file_range",
        "splice", "tee", "getdents", "getdents64", "getcwd", "chdir", "fchdir", "rename",
        "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "link", "linkat", "unlink",
        "unlinkat", "symlink", "symlinkat", "readlink", "readlinkat", "chmod", "fchmod",
        "fchmodat", "umask", "utimensat", "utime", "utimes", "futimesat", "getxattr",
        "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr",
        "pipe", "pipe2", "dup", "dup2", "dup3", "select", "pselect6", "poll", "ppoll",
        "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
        "eventfd", "eventfd2", "timerfd_create", "timerfd_settime", "timerfd_gettime",
        "socketpair", "connect", "bind", "listen", "accept", "accept4", "sendto", "recvfrom",
        "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "getsockname", "getpeername",
        "setsockopt", "getsockopt", "nanosleep", "clock_nanosleep", "clock_gettime",
        "clock_getres", "gettimeofday", "time", "getitimer", "setitimer", "alarm", "pause",
        "getpid", "getppid", "gettid", "getuid", "geteuid", "getgid", "getegid", "getresuid",
        "getresgid", "getgroups", "getpgid", "getpgrp", "getsid", "getrlimit", "setrlimit",
        "prlimit64", "getrusage", "times", "sysinfo", "uname", "getpriority", "sched_yield",
        "sched_getaffinity", "sched_getparam", "sched_getscheduler", "sched_get_priority_max",
        "sched_get_priority_min", "getcpu", "futex", "futex_waitv", "set_robust_list",
        "get_robust_list", "set_tid_address", "rseq", "membarrier", "arch_prctl", "prctl",
        "getrandom", "memfd_create", "exit", "exit_group", "wait4", "waitid", "restart_syscall",
        "get_mempolicy", "mbind", "set_mempolicy", "seccomp", "pidfd_open",
    )
    # Clean exceptions for what well-meaning code tries: starting programs, mounting, networking.
    eperm: tuple = (
        "fork", "vfork", "execve", "execveat", "mount", "umount2", "pivot_root", "chroot",
        "unshare", "setns", "setsid", "setpgid", "tkill", "tgkill", "rt_sigqueueinfo",
        "rt_tgsigqueueinfo", "pidfd_send_signal", "setpriority", "personality",
        "mlock", "mlock2", "mlockall", "inotify_init1", "fanotify_init", "name_to_handle_at", "syslog",
    )
    # libc retries these with an older syscall (pthread_create: clone3 -> clone).
    enosys: tuple = ("clone3", "openat2")
    # Only attacks reach for these: the process dies on the spot.
    kill: tuple = (
        "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "bpf",
        "perf_event_open", "kexec_load", "kexec_file_load", "init_module", "finit_module",
        "delete_module", "keyctl", "add_key", "request_key", "io_uring_setup", "io_uring_enter",
        "io_uring_register", "userfaultfd", "kcmp", "pidfd_getfd", "open_by_handle_at",
        "iopl", "ioperm", "reboot", "swapon", "swapoff", "acct", "quotactl", "lookup_dcookie",
        "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
        "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "uselib", "vhangup",
        "modify_ldt", "move_pages", "migrate_pages",
    )
    # Argument rules the filter applies on top of the lists above.
    socket_families: tuple = ("AF_UNIX",)
    threads: bool = True          # clone with CLONE_THREAD (and no namespace flags)
    processes: bool = False       # any other clone
    kill_own_group_only: bool = True   # kill(0, sig) only; kill(pid), kill(-1) refused
    foreign_abis: str = "kill"    # x32 and i386 entry points


@dataclass(slots=True)
class Policy:
    limits: Limits = field(default_factory=Limits)
    namespaces: Namespaces = field(default_factory=Namespaces)
    syscalls: SyscallPolicy = field(default_factory=SyscallPolicy)
    # Modules the zygote imports once so every child starts with them loaded.
    preload: tuple = ("numpy", "pandas", "matplotlib")
    # Of those, what a one-shot cell whose code names none of the others starts with: it forks
    # from a copy of the zygote made before the rest was imported (far less to copy per fork).
    # A cell that imports something more anyway still gets it, at the import's usual cost.
    lean_preload: tuple = ("numpy",)
    # When the host runs as root, children run as this uid/gid (root ignores RLIMIT_NPROC).
    unprivileged_uid: int = 65534
    unprivileged_gid: int = 65534

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(limits=Limits(**d["limits"]), namespaces=Namespaces(**_tuples(d["namespaces"])),
                   syscalls=SyscallPolicy(**_tuples(d["syscalls"])), preload=tuple(d["preload"]),
                   lean_preload=tuple(d.get("lean_preload", ("numpy",))),
                   unprivileged_uid=d["unprivileged_uid"], unprivileged_gid=d["unprivileged_gid"])

    def describe(self):
        """The policy as indented JSON, for logs (`print(sb.policy.describe())`)."""
        return json.dumps(self.to_dict(), indent=2, default=list)


def _tuples(d):
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
