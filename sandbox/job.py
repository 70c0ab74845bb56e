"""The zygote's record of one cell in flight."""


class Job:
    __slots__ = ("id", "pid", "chan", "reader", "header", "body", "workdir", "session", "done",
                 "reason")

    def __init__(self, job_id):
        self.id, self.pid, self.chan, self.reader = job_id, None, None, None
        self.header, self.body, self.workdir, self.session = None, b"", None, None
        self.done, self.reason = False, None
