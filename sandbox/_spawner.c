/* The one-shot template's fork loop, in C: oci_engine.sandbox._spawner.serve().
 *
 * Every spare is a fork of the template, and whatever the template writes between forks is a
 * page it shares with the spares still alive: the write copies it (and splits the huge page it
 * sits in, which the next fork then copies entry by entry). A Python loop writes to a hundred
 * such pages per fork (refcounts, frames, buffers); this loop writes only its own stack and
 * static buffer. It also does a new child's isolation before any Python runs in it (signals,
 * session, fds, work directory, limits, the child stage of the seccomp filter) and fills its
 * random generators' states with OS entropy (reseed.c_targets), where the Python version
 * touched, and so copied, some 300 pages.
 *
 * It serves the same frames as the Python loop in child.template(): spare orders in (header
 * SPARE_ORDER, body the work directory, fds channel/stdout/stderr), "forked" and "exited" out.
 * It returns only in a forked child, isolated, with the work directory as bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define CTRL_FD 3
#define CHANNEL_FD 3
#define OUT_FD 4
#define ERR_FD 5
#define MAX_FDS 64
#define BUF_SIZE (1 << 16)

static const char SPARE_ORDER[] = "{\"op\":\"spare\",\"nfds\":3}";

/* Generator states to fill with OS entropy in each child: [fill, fill + len) and an index. */
struct entropy_target {
    unsigned char *fill;
    size_t len;
    int32_t *index;
    int32_t index_value;
};
#define MAX_TARGETS 4
static struct entropy_target targets[MAX_TARGETS];
static size_t n_targets;

static unsigned char buf[BUF_SIZE];
static size_t buf_len;
static int fdq[4 * MAX_FDS];
static size_t fdq_len;

static void on_sigchld(int sig) { (void)sig; }

static void write_all(int fd, const char *data, size_t n) {
    while (n > 0) {
        ssize_t k = write(fd, data, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            _exit(0);  /* the zygote is gone */
        }
        data += k;
        n -= (size_t)k;
    }
}

static void send_header(const char *header) {
    char frame[128];
    uint32_t n = (uint32_t)strlen(header);
    memcpy(frame, &n, 4);  /* total = header only (little-endian host, as struct "<II") */
    memcpy(frame + 4, &n, 4);
    memcpy(frame + 8, header, n);
    write_all(CTRL_FD, frame, 8 + n);
}

static void reap(void) {
    int status;
    pid_t pid;
    char header[96];
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        snprintf(header, sizeof header, "{\"op\":\"exited\",\"pid\":%d,\"status\":%d}", (int)pid,
                 status);
        send_header(header);
    }
}

/* Read what the zygote sent: bytes into buf, fds onto the queue. 0 at end of stream. */
static int fill(void) {
    union {
        char space[CMSG_SPACE(MAX_FDS * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {buf + buf_len, BUF_SIZE - buf_len};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.space;
    msg.msg_controllen = sizeof control.space;
    ssize_t n = recvmsg(CTRL_FD, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return errno == EINTR || errno == EAGAIN ? 1 : 0;
    if (n == 0 || (msg.msg_flags & MSG_CTRUNC)) return 0;
    buf_len += (size_t)n;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int *fds = (int *)CMSG_DATA(c);
        for (size_t i = 0; i < k; i++) {
            if (fdq_len < sizeof fdq / sizeof fdq[0]) fdq[fdq_len++] = fds[i];
            else close(fds[i]);
        }
    }
    return 1;
}

static int move_above(int fd) { return fcntl(fd, F_DUPFD, ERR_FD + 1); }

/* In the new child, before any Python runs: what child.isolate() does for a one-shot spare. */
static int isolate(int devnull, const int fds[3], const char *workdir, long nproc, long cpu_soft,
                   long cpu_hard, const struct sock_fprog *prog, const sigset_t *mask) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    if (sigaction(SIGCHLD, &dfl, NULL) != 0) return -1;
    if (sigprocmask(SIG_SETMASK, mask, NULL) != 0) return -1;
    if (setsid() < 0) return -1;
    if (dup2(devnull, 0) < 0) return -1;
    /* Fresh copies above 5 first: a received fd may itself sit on one of the target numbers. */
    int tmp[3];
    for (int i = 0; i < 3; i++)
        if ((tmp[i] = move_above(fds[i])) < 0) return -1;
    if (dup2(tmp[0], CHANNEL_FD) < 0 || dup2(tmp[1], OUT_FD) < 0 || dup2(tmp[2], ERR_FD) < 0 ||
        dup2(tmp[1], 1) < 0 || dup2(tmp[2], 2) < 0)
        return -1;
    if (syscall(SYS_close_range, ERR_FD + 1, ~0U, 0) != 0) {
        struct rlimit nofile;
        long top = getrlimit(RLIMIT_NOFILE, &nofile) == 0 ? (long)nofile.rlim_cur : 1024;
        for (long fd = ERR_FD + 1; fd < top; fd++) close((int)fd);
    }
    if (chdir(workdir) != 0) return -1;
    struct rlimit lim = {(rlim_t)nproc, (rlim_t)nproc};
    if (setrlimit(RLIMIT_NPROC, &lim) != 0) return -1;
    lim.rlim_cur = (rlim_t)cpu_soft;
    lim.rlim_max = (rlim_t)cpu_hard;
    if (setrlimit(RLIMIT_CPU, &lim) != 0) return -1;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog) != 0) return -1;
    for (size_t t = 0; t < n_targets; t++) {
        for (size_t got = 0; got < targets[t].len;) {
            long k = syscall(SYS_getrandom, targets[t].fill + got, targets[t].len - got, 0);
            if (k < 0 && errno != EINTR) return -1;
            if (k > 0) got += (size_t)k;
        }
        *targets[t].index = targets[t].index_value;
    }
    return 0;
}

static PyObject *serve(PyObject *self, PyObject *args) {
    (void)self;
    int devnull;
    unsigned long long prog_addr;
    unsigned long prog_len;
    long nproc, cpu_soft, cpu_hard;
    PyObject *entropy;
    if (!PyArg_ParseTuple(args, "iKklllO", &devnull, &prog_addr, &prog_len, &nproc, &cpu_soft,
                          &cpu_hard, &entropy))
        return NULL;
    PyObject *seq = PySequence_Fast(entropy, "entropy targets must be a sequence");
    if (seq == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n && i < MAX_TARGETS; i++) {
        unsigned long long fill, index;
        unsigned long len;
        int value;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "KkKi", &fill, &len, &index,
                              &value)) {
            Py_DECREF(seq);
            return NULL;
        }
        targets[i] = (struct entropy_target){(unsigned char *)(uintptr_t)fill, len,
                                             (int32_t *)(uintptr_t)index, value};
        n_targets = (size_t)i + 1;
    }
    Py_DECREF(seq);
    struct sock_fprog prog = {(unsigned short)prog_len, (struct sock_filter *)(uintptr_t)prog_addr};

    /* SIGCHLD stays blocked except inside ppoll, so no exit is missed between checks. */
    sigset_t chld, old, during_poll;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &chld, &old) != 0) return PyErr_SetFromErrno(PyExc_OSError);
    during_poll = old;
    sigdelset(&during_poll, SIGCHLD);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_NOCLDSTOP;
    if (sigaction(SIGCHLD, &sa, NULL) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        sigprocmask(SIG_SETMASK, &old, NULL);
        return NULL;
    }

    const size_t order_len = sizeof SPARE_ORDER - 1;
    for (;;) {
        struct pollfd p = {CTRL_FD, POLLIN, 0};
        int r = ppoll(&p, 1, NULL, &during_poll);
        reap();
        if (r <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR))) continue;
        if (!fill()) _exit(0);  /* the zygote is gone */
        size_t off = 0;
        while (buf_len - off >= 8) {
            uint32_t total, hlen;
            memcpy(&total, buf + off, 4);
            memcpy(&hlen, buf + off + 4, 4);
            if (hlen > total || total > BUF_SIZE - 8) _exit(1);  /* not our zygote's frames */
            if (buf_len - off < 8 + (size_t)total) break;
            const unsigned char *header = buf + off + 8;
            size_t body_len = total - hlen;
            int is_order = hlen == order_len && memcmp(header, SPARE_ORDER, order_len) == 0;
            if (is_order && fdq_len >= 3) {
                int fds[3] = {fdq[0], fdq[1], fdq[2]};
                memmove(fdq, fdq + 3, (fdq_len - 3) * sizeof fdq[0]);
                fdq_len -= 3;
                char workdir[4096];
                size_t wlen = body_len < sizeof workdir - 1 ? body_len : sizeof workdir - 1;
                memcpy(workdir, header + hlen, wlen);
                workdir[wlen] = 0;
                pid_t pid = fork();
                if (pid == 0) {
                    if (isolate(devnull, fds, workdir, nproc, cpu_soft, cpu_hard, &prog, &old) != 0)
                        return PyErr_SetFromErrno(PyExc_OSError);
                    return PyBytes_FromStringAndSize(workdir, (Py_ssize_t)wlen);
                }
                char reply[64];
                if (pid > 0)
                    snprintf(reply, sizeof reply, "{\"op\":\"forked\",\"pid\":%d}", (int)pid);
                else
                    snprintf(reply, sizeof reply, "{\"op\":\"forked\",\"pid\":null}");
                send_header(reply);
                for (int i = 0; i < 3; i++) close(fds[i]);
            }
            off += 8 + (size_t)total;
        }
        memmove(buf, buf + off, buf_len - off);
        buf_len -= off;
    }
}

static PyMethodDef methods[] = {
    {"serve", serve, METH_VARARGS,
     "serve(devnull, prog_addr, prog_len, nproc, cpu_soft, cpu_hard, entropy) -> workdir bytes, "
     "in a forked, isolated and reseeded child only; the template itself never returns. "
     "entropy: ((fill_addr, nbytes, index_addr, index_value), ...), at most 4."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_spawner", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__spawner(void) { return PyModule_Create(&module); }
