"""`oci-engine chat`: the code interpreter in a terminal. Replies stream; code cells and their
results are set apart (in colour on a terminal)."""
from __future__ import annotations

import sys

from oci_engine.commands.engine_flags import add_engine_arguments, engine_kwargs


def add_arguments(p) -> None:
    add_engine_arguments(p)
    p.add_argument("--max-rounds", type=int, default=3, help="model replies per message (default 3)")
    p.add_argument("--max-tokens", type=int, default=1024, help="tokens per reply")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per code cell")


class _Style:
    def __init__(self, enabled: bool):
        self.on = enabled

    def __call__(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.on else text


def render_event(ev, out, style) -> None:
    t, d = ev.type, ev.data
    if t == "round" and d["round"] > 1:
        out.write(style("2", f"\n── round {d['round']} ──\n"))
    elif t == "token":
        out.write(d["text"])
    elif t == "reply":
        out.write("\n")
    elif t == "execution":
        out.write(style("36", "┌─ execution result" + (f" ({d['duration_s'] * 1000:.1f} ms)" if d.get("duration_s")
                                                        else "") + "\n"))
        body = d["feedback"] if d.get("skipped") else (d["stdout"] or "")
        if body:
            out.write(style("36", body if body.endswith("\n") else body + "\n"))
        if d.get("stderr"):
            out.write(style("33", d["stderr"] if d["stderr"].endswith("\n") else d["stderr"] + "\n"))
        if d.get("timed_out"):
            out.write(style("31", "Execution timed out.\n"))
        elif d.get("error"):
            out.write(style("31", d["error"] + "\n"))
        if d.get("images"):
            out.write(style("36", f"[{len(d['images'])} figure(s); the web page shows them]\n"))
        out.write(style("36", "└─\n"))
    elif t == "done" and d.get("cancelled"):
        out.write(style("33", "\n[stopped]\n"))
    out.flush()


def run(args) -> int:
    from oci_engine import LLM, Interpreter, SamplingParams

    print(f"loading {args.model} …", file=sys.stderr)
    llm = LLM(args.model, **engine_kwargs(args))
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens)
    style = _Style(sys.stdout.isatty())
    with Interpreter(llm, max_rounds=args.max_rounds, system_prompt=args.system, sampling_params=params,
                     timeout=args.timeout) as it:
        print(style("2", "Type a message; Ctrl-C stops a reply, Ctrl-D quits, /reset starts over."), file=sys.stderr)
        while True:
            try:
                line = input(style("1", "\n>>> ") if style.on else "\n>>> ")
            except EOFError:
                print()
                return 0
            except KeyboardInterrupt:
                print()
                continue
            if not line.strip():
                continue
            if line.strip() == "/reset":
                it.reset()
                print(style("2", "[conversation reset]"))
                continue
            try:
                for ev in it.stream(line):
                    render_event(ev, sys.stdout, style)
            except KeyboardInterrupt:
                it.cancel()
                print(style("33", "\n[stopped]"))
