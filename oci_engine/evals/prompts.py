"""What the model is asked, in three styles.

- "oci": OpenCodeInterpreter checkpoints were evaluated with Magicoder-style instructions
  (`@@ Instruction` / `@@ Response`) inside one user turn of the chat template; a refinement
  round appends the reply and an `Execution result:` instruction to that same turn.
- "chat": any instruct model: the same instruction as a user message, replies as assistant
  turns, feedback as the next user turn.
- "base": plain completion: the model continues the prompt's code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from oci_engine.evals.tasks import Task

STYLES = ("auto", "oci", "chat", "base")
OCI_SYSTEM = ("You are an exceptionally intelligent coding assistant that consistently delivers accurate "
              "and reliable responses to user instructions.")
_ANSWER_FORMAT = ("Please return all completed codes in one code block.\n"
                  "This code block should be in the following format:\n```python\n# Your codes here\n```")
FIX_REQUEST = "Please fix the code and return the complete corrected code in one code block."


def instruction(task: Task) -> str:
    """The paper's task wording: complete the given code (HumanEval) or solve the problem so the
    shown test passes (MBPP)."""
    if task.prompt:
        return ("Here is the given code to do completion:\n```python\n" + task.prompt.strip() + "\n```\n"
                "Please continue to complete the function with python programming language. You are not "
                "allowed to modify the given code and do the completion only.\n\n" + _ANSWER_FORMAT)
    examples = "\n".join(task.public_tests)
    return ("Here is the given problem and test examples:\n" + task.description + "\n" + examples + "\n\n"
            "Please use the python programming language to solve this problem.\n"
            "Please make sure that your code includes the functions from the test samples and that the "
            "input and output formats of these functions match the test samples.\n\n" + _ANSWER_FORMAT)


def base_prompt(task: Task) -> str:
    if task.prompt:
        return task.prompt
    return '"""\n' + task.description + "\n" + "\n".join(task.public_tests) + '\n"""\n'


@dataclass(slots=True)
class Dialogue:
    """One sample's conversation so far, in the shape its style sends to the engine."""
    style: str
    task: Task
    text: str = ""                                           # oci: the growing user turn; base: the prompt
    messages: list[dict] = field(default_factory=list)      # chat

    @classmethod
    def start(cls, style: str, task: Task) -> "Dialogue":
        d = cls(style, task)
        if style == "oci":
            d.text = OCI_SYSTEM + "\n\n@@ Instruction\n" + instruction(task) + "\n\n@@ Response\n"
        elif style == "chat":
            d.messages = [{"role": "user", "content": instruction(task)}]
        else:
            d.text = base_prompt(task)
        return d

    def request(self):
        """A chat conversation (list of messages) or a completion prompt (str)."""
        if self.style == "oci":
            return [{"role": "user", "content": self.text}]
        if self.style == "chat":
            return list(self.messages)
        return self.text

    def add_feedback(self, reply: str, feedback: str) -> None:
        result = "Execution result: \n" + feedback
        if self.style == "oci":
            self.text += reply.strip() + "\n\n@@ Instruction\n" + result + "\n\n@@ Response\n"
        elif self.style == "chat":
            self.messages += [{"role": "assistant", "content": reply},
                              {"role": "user", "content": result + "\n\n" + FIX_REQUEST}]
        else:
            comment = "\n".join("# " + line for line in result.splitlines())
            self.text += reply.rstrip() + "\n\n" + comment + "\n# Fixed version:\n" + base_prompt(self.task)


def resolve_style(style: str, model_name: str, tokenizer) -> str:
    if style != "auto":
        return style
    if "opencodeinterpreter" in model_name.lower().replace("-", "").replace("_", ""):
        return "oci"
    # A checkpoint without its own chat template is a base model (the tokenizer would fall back
    # to ChatML, which such a model was never trained on).
    return "chat" if getattr(tokenizer, "chat_template", None) else "base"


# Base models continue past the function: stop at the next top-level statement.
BASE_STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert "]
