"""Prompt templates and render_prompt, with a local tokenizer carrying the Qwen2.5 chat template."""

from __future__ import annotations

import pytest
from _helpers_data import QWEN25_TEMPLATE, SHARED_DATA, SKIP_REASON, tiny_tokenizer

from dapo_rl.data import TEMPLATES, PromptRow, apply_template, read_rows, render_prompt
from dapo_rl.registry import RegistryError

needs_template = pytest.mark.skipif(not QWEN25_TEMPLATE.is_file(), reason=SKIP_REASON)

PAPER_TEMPLATE = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n{problem}\n\n"
    'Remember to put your answer on its own line after "Answer:".'
)
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def test_registered_templates() -> None:
    assert {"dapo", "boxed", "plain"} <= set(TEMPLATES.names())
    assert TEMPLATES.get("dapo") == PAPER_TEMPLATE  # semantics §11, verbatim
    assert apply_template("boxed", "P").startswith("P\n\n")
    assert apply_template("boxed", "P").endswith("put your final answer within \\boxed{}.")
    assert apply_template("plain", "P") == "P"


def test_braces_in_problem_are_safe() -> None:
    problem = "Let $f(x) = \\frac{x}{2}$ and {problem} {0}."
    assert apply_template("dapo", problem) == PAPER_TEMPLATE.replace("{problem}", problem)


def test_custom_template_string_and_errors() -> None:
    assert apply_template("Q: {problem}\nA:", "2+2") == "Q: 2+2\nA:"
    with pytest.raises(RegistryError, match="Valid names"):
        apply_template("dappo", "x")
    with pytest.raises(ValueError, match="exactly one"):
        apply_template("{problem} and {problem}", "x")


def test_string_prompt_without_chat_template() -> None:
    row = PromptRow(prompt="What is 2+2?", answer="4", uid="t:0")
    assert render_prompt(row, "dapo") == PAPER_TEMPLATE.replace("{problem}", "What is 2+2?")
    assert render_prompt(row, "plain", system_prompt="Be brief.") == "Be brief.\n\nWhat is 2+2?"


def test_message_prompt_template_applies_to_last_user_message() -> None:
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": "second"},
    ]
    row = PromptRow(prompt=messages, answer="1", uid="t:1")
    text = render_prompt(row, "Q: {problem}")
    assert text == "sys\n\nfirst\n\nreply\n\nQ: second"
    assert messages[3]["content"] == "second"  # the row is not modified


def test_no_user_message_is_an_error() -> None:
    row = PromptRow(prompt=[{"role": "system", "content": "s"}], answer="1", uid="f.jsonl:9")
    with pytest.raises(ValueError, match=r"f\.jsonl:9.*no user message"):
        render_prompt(row, "plain")


@needs_template
def test_qwen25_chat_template() -> None:
    tok = tiny_tokenizer(QWEN25_TEMPLATE.read_text())
    row = PromptRow(prompt="What is 2+2?", answer="4", uid="t:0")
    text = render_prompt(row, "dapo", tokenizer=tok, use_chat_template=True)
    user = PAPER_TEMPLATE.replace("{problem}", "What is 2+2?")
    assert text == (
        f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{user}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    text = render_prompt(row, "plain", tokenizer=tok, use_chat_template=True, system_prompt="Think.")
    assert text.startswith("<|im_start|>system\nThink.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>")
    assert QWEN_SYSTEM not in text


@needs_template
def test_dapo_math_row_through_chat_template() -> None:
    path = SHARED_DATA / "dapo_math_17k" / "dapo_math_17k.parquet"
    if not path.is_file():
        pytest.skip(SKIP_REASON)
    rows, _ = read_rows(path)
    tok = tiny_tokenizer(QWEN25_TEMPLATE.read_text())
    text = render_prompt(rows[0], "dapo", tokenizer=tok, use_chat_template=True)
    problem = rows[0].prompt[0]["content"]
    assert "<|im_start|>user\nSolve the following math problem" in text
    assert f"\n\n{problem}\n\nRemember to put your answer" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_chat_template_missing_is_an_error() -> None:
    row = PromptRow(prompt="x", answer="1", uid="t:0")
    with pytest.raises(ValueError, match="has no chat template"):
        render_prompt(row, "plain", tokenizer=tiny_tokenizer(), use_chat_template=True)
    with pytest.raises(ValueError, match="needs a tokenizer"):
        render_prompt(row, "plain", use_chat_template=True)
