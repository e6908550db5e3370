"""``driftwatch settings``: show the effective settings (secrets masked) or the reference table.

``driftwatch settings --reference`` prints the Markdown table of every setting,
its environment variable, default and description; docs/operations.md embeds it
and a test keeps the two in step.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from streams.settings import Settings

_ROOT = Path(__file__).resolve().parents[2]


def _type_name(annotation: object) -> str:
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    for prefix in ("typing.", "pathlib.", "pydantic.types."):
        text = text.replace(prefix, "")
    return text.replace("|", "\\|")


def settings_models() -> list[type[Settings]]:
    """Every settings model read from ``DRIFTWATCH_*``: the service's and the dashboard's own knobs."""
    from dashboard.config import DashboardSettings  # pydantic only: no Streamlit import

    return [Settings, DashboardSettings]


def reference_table() -> str:
    """Markdown table of every setting, generated from the settings models (:func:`settings_models`)."""
    rows = ["| variable | type | default | description |", "|---|---|---|---|"]
    fields: dict[str, Any] = {}
    for model in settings_models():
        for name, field in model.model_fields.items():
            fields.setdefault(name, field)
    for name, field in fields.items():
        ann = _type_name(field.annotation)
        default = field.get_default(call_default_factory=True)
        if isinstance(default, SecretStr) or "password" in name or "token" in name:
            default = None if default is None else "***"
        if isinstance(default, Path) and default.is_absolute():
            default = default.relative_to(_ROOT)  # the same table wherever the project lives
        shown = "" if default is None else f"`{default}`"
        desc = (field.description or "").replace("|", "\\|")
        secret = f" Secret: also `DRIFTWATCH_{name.upper()}_FILE`." if "SecretStr" in ann else ""
        rows.append(f"| `DRIFTWATCH_{name.upper()}` | {ann} | {shown} | {desc}{secret} |")
    return "\n".join(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", action="store_true", help="print the Markdown reference table")


def run(args: argparse.Namespace) -> int:
    if args.reference:
        print(reference_table())
        return 0
    shown = Settings().model_dump(mode="json")  # SecretStr dumps as '**********'
    print(json.dumps(shown, indent=2, default=str))
    return 0
