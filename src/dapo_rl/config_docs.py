"""Generate ``docs/config.md`` from the schema: ``python -m dapo_rl.config_docs > docs/config.md``."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from dapo_rl.config import DapoConfig


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    return text.replace("typing.", "").replace("NoneType", "None")


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(_rows(ann, f"{key}."))
            continue
        default = json.dumps(info.default)
        doc = " ".join((info.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{key}` | `{_type_name(ann)}` | `{default}` | {doc} |")
    return rows


def render() -> str:
    sections = []
    for name, info in DapoConfig.model_fields.items():
        name = info.alias or name  # `async`, a keyword, is the field `async_`
        section = info.annotation
        assert isinstance(section, type) and issubclass(section, BaseModel)
        header = "| key | type | default | meaning |\n|---|---|---|---|"
        sections.append(f"## `{name}`\n\n{header}\n" + "\n".join(_rows(section, f"{name}.")))
    intro = (
        "# Configuration reference\n\n"
        "Generated from `src/dapo_rl/config.py` by `make docs`; a test fails when this page drifts.\n"
        "Defaults are the DAPO paper's values where the paper sets one; `dapo train` with no `--config`\n"
        "applies the embedded `tiny` preset on top. Override any key on the command line:\n\n"
        "```bash\ndapo train --config gsm8k algorithm.clip_ratio_high=0.3 batch.prompts_per_step=64\n"
        "dapo config show --config paper_32b      # print the resolved configuration\n```\n\n"
        "Units are in the names: `*_steps` are rollout steps, `*_updates` optimizer updates,\n"
        "`*_tokens` tokens, `prompts_*` prompt groups, `samples_*` responses.\n"
        "Updates per step = `prompts_per_step / prompts_per_update x epochs_per_step`.\n"
    )
    return intro + "\n" + "\n\n".join(sections) + "\n"


if __name__ == "__main__":
    print(render(), end="")
