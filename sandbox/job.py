"""The zygote's record of one cell in flight."""
import os


class Job:
    __slots__ = ("id", "pid", "chan", "reader", "header", "body", "workdir", "session", "done",
                 "reason", "out", "err", "taken", "kill_pending", "kind", "quiet", "adopting")

    def __init__(self, job_id):
        self.id, self.pid, self.chan, self.reader = job_id, None, None, None
        self.header, self.body, self.workdir, self.session = None, b"", None, None
        self.done, self.reason = False, None
        self.taken = self.kill_pending = False
        self.kind = None  # a one-shot spare's template kind
        self.quiet = False  # the host had its result: it needs no exit report
        self.adopting = False  # a session cell that succeeded; it takes over once its pid is known
        # The cell's stdout/stderr memory files, held here so a killed cell's output survives.
        self.out = os.memfd_create("stdout", os.MFD_CLOEXEC)
        self.err = os.memfd_create("stderr", os.MFD_CLOEXEC)

    def close_output(self):
        for fd in (self.out, self.err):
            if fd is not None:
                os.close(fd)
        self.out = self.err = None
