"""DAPO-strict math reward (the paper's rule; verl calls it ``math_dapo``).

Rule, applied to the response after the runner stripped the tokenizer's EOS text:

1. Look only at the final ``ANSWER_WINDOW_CHARS`` (300) characters of the response.
2. Take the last match of ``answer\\s*:\\s*(rest of the line)`` (case-insensitive). As in the
   reference implementation, ``\\s*`` may cross a newline, so ``"Answer:\\n42"`` counts, and the
   marker may follow other text on its line (``"Final Answer: 42"``).
3. With no such line, fall back to the content of the last ``\\boxed{...}`` (balanced braces) in the
   window. With neither, the answer is invalid: ``pred`` is None and the score is -1.
4. Normalise the candidate and the ground truth with :func:`normalize_final_answer` (Minerva-style)
   and compare the two strings. Equal: score +1, ``acc`` True; otherwise score -1.

One deliberate difference from the Minerva normaliser: commas are dropped only from numbers written
with thousands groups (``1,234,567`` or ``-1,234``), so a list such as ``1,2`` is not read as ``12``.
"""

from __future__ import annotations

import re

from dapo_rl.rewards.base import RewardResult
from dapo_rl.rewards.traits import reward_traits

ANSWER_WINDOW_CHARS = 300
"""Only the final 300 characters of a response are searched for the answer (the paper's rule)."""

_ANSWER_LINE = re.compile(r"answer\s*:\s*([^\n]+)", re.IGNORECASE)

# Minerva-style normalisation tables (Lewkowycz et al. 2022, appendix): plain substring rewrites,
# applied in order, then substrings (mostly unit words and spacing macros) that are deleted.
_SUBSTITUTIONS: tuple[tuple[str, str], ...] = (
    ("an ", ""),
    ("a ", ""),
    (".$", "$"),
    ("\\$", ""),
    ("\\ ", ""),
    (" ", ""),
    ("mbox", "text"),
    (",\\text{and}", ","),
    ("\\text{and}", ","),
    ("\\text{m}", "\\text{}"),
)
_REMOVED_SUBSTRINGS: tuple[str, ...] = (
    "square",
    "ways",
    "integers",
    "dollars",
    "mph",
    "inches",
    "hours",
    "km",
    "units",
    "\\ldots",
    "sue",
    "points",
    "feet",
    "minutes",
    "digits",
    "cents",
    "degrees",
    "cm",
    "gm",
    "pounds",
    "meters",
    "meals",
    "edges",
    "students",
    "childrentickets",
    "multiples",
    "\\text{s}",
    "\\text{.}",
    "\\text{\ns}",
    "\\text{}^2",
    "\\text{}^3",
    "\\text{\n}",
    "\\text{}",
    "\\mathrm{th}",
    "^\\circ",
    "^{\\circ}",
    "\\;",
    ",\\!",
    "{,}",
    '"',
    "\\dots",
)
_REGEX_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(.*?)(\$)(.*?)(\$)(.*)"), r"$\3$"),  # keep only the first $...$ span
    (re.compile(r"(\\text\{)(.*?)(\})"), r"\2"),
    (re.compile(r"(\\textbf\{)(.*?)(\})"), r"\2"),
    (re.compile(r"(\\overline\{)(.*?)(\})"), r"\2"),
    (re.compile(r"(\\boxed\{)(.*)(\})"), r"\2"),
    (re.compile(r"(frac)([^{])(.)"), r"frac{\2}{\3}"),  # \frac12 -> \frac{1}{2}
    (re.compile(r"(sqrt)([^{])"), r"sqrt{\2}"),  # \sqrt2 -> \sqrt{2}
)
_GROUPED_INTEGER = re.compile(r"-?\d{1,3}(,\d{3})+")


def normalize_final_answer(answer: str) -> str:
    """Minerva-style normalisation of a final answer string.

    Keeps what follows the last ``=``, applies the substitution and removal tables (spaces, ``$``,
    ``\\text{}``, ``^\\circ``, unit words), unwraps ``\\text{}``/``\\textbf{}``/``\\overline{}``/
    ``\\boxed{}``, adds braces to ``\\frac12`` and ``\\sqrt2``, and drops thousands commas.
    """
    text = answer.split("=")[-1]
    for old, new in _SUBSTITUTIONS:
        text = text.replace(old, new)
    for gone in _REMOVED_SUBSTRINGS:
        text = text.replace(gone, "")
    for pattern, repl in _REGEX_REWRITES:
        text = pattern.sub(repl, text)
    text = text.replace("$", "").strip()
    if _GROUPED_INTEGER.fullmatch(text):
        text = text.replace(",", "")
    return text


def last_boxed_content(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` in ``text`` (balanced braces), or None."""
    start = text.rfind("\\boxed{")
    while start != -1:
        depth = 0
        for i in range(start + len("\\boxed"), len(text)):
            ch = text[i]
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start + len("\\boxed{") : i]
        # unbalanced (e.g. truncated): try the previous occurrence
        start = text.rfind("\\boxed{", 0, start)
    return None


def extract_dapo_answer(response: str) -> tuple[str | None, str]:
    """The raw (un-normalised) answer of ``response`` and where it came from.

    Returns ``(candidate, source)`` with source ``"answer_line"``, ``"boxed"`` or ``"none"``.
    """
    window = response[-ANSWER_WINDOW_CHARS:]
    matches = _ANSWER_LINE.findall(window)
    if matches:
        return matches[-1], "answer_line"
    boxed = last_boxed_content(window)
    if boxed is not None:
        return boxed, "boxed"
    return None, "none"


@reward_traits(wrong_score=-1.0, isolate=False)
def math_dapo_reward(response: str, ground_truth: str, **extra: object) -> RewardResult:
    """DAPO-strict math reward: +1 when the normalised answer equals the normalised ground truth,
    -1 otherwise (including no parsable answer). See the module docstring for the exact rule."""
    candidate, source = extract_dapo_answer(response)
    if candidate is None:
        return RewardResult(score=-1.0, acc=False, pred=None, info={"source": source})
    pred = normalize_final_answer(candidate)
    correct = pred == normalize_final_answer(str(ground_truth))
    return RewardResult(score=1.0 if correct else -1.0, acc=correct, pred=pred, info={"source": source})
