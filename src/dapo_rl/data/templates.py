"""Prompt templates and :func:`render_prompt`, which turns a PromptRow into the model's input text.

A template is a string with exactly one ``{problem}`` placeholder (filled by plain substitution, so
braces in the problem text are safe). Registered templates (``TEMPLATES.get(name)``):

- ``dapo``: the DAPO paper's instruction (Answer-line format, scored by ``math_dapo``);
- ``boxed``: "... put your final answer within \\boxed{}." (scored by ``math_verify``);
- ``plain``: the problem as is (for prompts that already carry their instructions, e.g. Countdown).

Register another with ``TEMPLATES.register("mine", "Q: {problem}\\nA:")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dapo_rl.data.types import PromptRow
from dapo_rl.registry import Registry

PLACEHOLDER = "{problem}"

DAPO_TEMPLATE = (
    "Solve the following math problem step by step. The last line of your response should be of the "
    "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
    "{problem}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)
BOXED_TEMPLATE = "{problem}\n\nPlease reason step by step, and put your final answer within \\boxed{}."
PLAIN_TEMPLATE = "{problem}"

TEMPLATES: Registry[str] = Registry("prompt template")
TEMPLATES.register("dapo", DAPO_TEMPLATE)
TEMPLATES.register("boxed", BOXED_TEMPLATE)
TEMPLATES.register("plain", PLAIN_TEMPLATE)


def apply_template(template: str | Callable[[str], str], problem: str) -> str:
    """Fill ``template`` (a registered name, a template string, or ``fn(problem) -> str``)."""
    if callable(template):
        text = template(problem)
        if not isinstance(text, str):
            raise TypeError(f"prompt template function returned {type(text).__name__}, expected str")
        return text
    text = TEMPLATES.get(template) if PLACEHOLDER not in template else template
    if text.count(PLACEHOLDER) != 1:
        raise ValueError(f"a prompt template needs exactly one {PLACEHOLDER} placeholder: {text!r}")
    before, after = text.split(PLACEHOLDER)
    return before + problem + after


def build_messages(
    row: PromptRow, template: str | Callable[[str], str], system_prompt: str | None = None
) -> list[dict[str, str]]:
    """The chat messages of ``row`` with ``template`` applied to the last user message.

    A string prompt becomes one user message. ``system_prompt`` is prepended as a system message,
    or replaces the content of the row's own leading system message.
    """
    if isinstance(row.prompt, str):
        messages = [{"role": "user", "content": row.prompt}]
    else:
        messages = [dict(m) for m in row.prompt]
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        raise ValueError(f"row {row.uid}: the prompt has no user message to apply the template to")
    last = users[-1]
    messages[last]["content"] = apply_template(template, messages[last]["content"])
    if system_prompt is not None:
        if messages[0].get("role") == "system":
            messages[0]["content"] = system_prompt
        else:
            messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def render_prompt(
    row: PromptRow,
    template: str | Callable[[str], str],
    tokenizer: Any = None,
    use_chat_template: bool = False,
    system_prompt: str | None = None,
) -> str:
    """The input text for ``row``.

    ``template`` is a registered name (``dapo``, ``boxed``, ``plain``) or a string with one
    ``{problem}``; for message-list prompts it applies to the last user message. With
    ``use_chat_template`` the messages go through ``tokenizer.apply_chat_template(...,
    add_generation_prompt=True, tokenize=False)``; a tokenizer without a chat template is a
    ``ValueError``. Without it, the message contents are joined by blank lines (system first), which
    for the usual single user message is just the templated problem.
    """
    messages = build_messages(row, template, system_prompt)
    if not use_chat_template:
        return "\n\n".join(m["content"] for m in messages)
    if tokenizer is None:
        raise ValueError("use_chat_template=True needs a tokenizer")
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(
            f"use_chat_template=True but the tokenizer {name!r} has no chat template; set "
            "use_chat_template=False (base models) or give the tokenizer a chat_template"
        )
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(text, str):
        raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text
