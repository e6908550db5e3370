"""``driftwatch init --from-csv data.csv``: a monitor config inferred from a table of your model's inputs.

Every column (except ``--target`` and ``--prediction``, and ``--ignore``\\ d ones) becomes a
feature, its kind and expectations inferred from the values as the worker will read them
(:mod:`detectors.values`, the code the decoder and the reference loader share):

* ``boolean`` when every value is a truth value written as a word (``True``/``false``/``yes``);
* ``numeric`` when every value is a number (``min``/``max`` = the range seen);
* ``categorical`` otherwise, with ``allowed`` = the values seen when there are at most
  :data:`MAX_ALLOWED` of them;
* ``nullable: false`` when no value is missing.

The file itself becomes the reference (``reference: {file: ...}``, relative to the config),
with ``--target`` as its label column and ``--prediction`` as its prediction column. The task is
``regression`` when the target (or prediction) is numeric with many distinct values, else
``classification``. The result is a starting point that ``driftwatch check-config`` accepts as
written; tighten the ranges and categories by hand.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from detectors.values import not_none

MAX_ALLOWED = 50
"""Most distinct values listed as ``allowed`` for a categorical feature (more: no allowed list)."""
REGRESSION_DISTINCT = 20
"""A numeric target with more distinct values than this makes the task ``regression``."""
_BOOL_WORDS = {"true", "false", "yes", "no"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from-csv",
        dest="csv",
        type=Path,
        required=True,
        help="a CSV (or .csv.gz) of the model's inputs, one row per prediction, with a header row",
    )
    parser.add_argument("--target", help="column of the true label (kept out of the features; the reference's label)")
    parser.add_argument("--prediction", help="column of the model's prediction (the reference's prediction)")
    parser.add_argument("--model-id", help="model id the serving app sends (default: the CSV's name)")
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="COLUMN",
        help="a column that is not a model input (e.g. an id); repeatable",
    )
    parser.add_argument("--window", type=int, default=1000, help="events per window (default 1000)")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="config file to write (default: monitors.yaml next to the CSV; '-' for stdout)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing config file")


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV (``.gz`` decompressed); raises ValueError saying what is wrong."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error, EOFError) as e:
        raise ValueError(f"{path}: cannot read it as CSV: {e}") from None
    if len(rows) < 2:
        raise ValueError(f"{path}: needs a header row and at least one row of values")
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if r]
    bad = next((i for i, r in enumerate(body) if len(r) != len(header)), None)
    if bad is not None:
        raise ValueError(f"{path}: row {bad + 1} has {len(body[bad])} cells, the header has {len(header)}")
    if len(set(header)) != len(header) or not all(header):
        raise ValueError(f"{path}: column names must be unique and not empty: {header}")
    return header, body


def _number(x: float) -> float | int:
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else float(x)


def infer_feature(name: str, cells: list[str]) -> dict[str, Any]:
    """The feature entry of one column (see module docstring)."""
    from detectors.values import parse_categories, parse_numeric

    feature: dict[str, Any] = {"name": name}
    cats, _bad = parse_categories(cells, text=True)  # empty cells are missing
    present = not_none(cats)
    numbers, bad = parse_numeric(cells, text=True)  # empty, NA, NaN, null cells are missing
    if present.any() and {c.strip().lower() for c in cats[present].tolist()} <= _BOOL_WORDS:
        feature["kind"] = "boolean"
    elif bad is None and (~np.isnan(numbers)).any() and not np.isinf(numbers).any():
        feature["kind"] = "numeric"
        present = ~np.isnan(numbers)
        seen = numbers[present]
        feature["min"], feature["max"] = _number(seen.min()), _number(seen.max())
    else:
        feature["kind"] = "categorical"
        distinct = sorted(set(cats[present].tolist()))
        if 0 < len(distinct) <= MAX_ALLOWED:
            feature["allowed"] = distinct
    if bool(present.all()):
        feature["nullable"] = False
    return feature


def infer_task(cells: list[str]) -> str:
    """``regression`` for a numeric column with many distinct values, else ``classification``."""
    from detectors.values import parse_numeric

    numbers, bad = parse_numeric(cells, text=True)
    seen = numbers[~np.isnan(numbers)]
    if bad is None and seen.size and len(np.unique(seen)) > REGRESSION_DISTINCT:
        return "regression"
    return "classification"


def build_config(
    path: Path,
    output: Path,
    *,
    target: str | None = None,
    prediction: str | None = None,
    model_id: str | None = None,
    ignore: list[str] | None = None,
    window: int = 1000,
) -> dict:
    """The monitor config of the table at ``path``, its reference path relative to ``output``."""
    header, body = read_table(path)
    for what, col in (("--target", target), ("--prediction", prediction), *(("--ignore", c) for c in ignore or [])):
        if col is not None and col not in header:
            raise ValueError(f"{path}: {what} {col!r} is not a column; columns: {header}")
    skip = {c for c in (target, prediction, *(ignore or [])) if c}
    columns = {h: [r[i] for r in body] for i, h in enumerate(header)}
    features = [infer_feature(h, columns[h]) for h in header if h not in skip]
    if not features:
        raise ValueError(f"{path}: no column is left to monitor as a feature")
    reference: dict[str, Any] = {"file": os.path.relpath(path.resolve(), output.resolve().parent)}
    if prediction:
        reference["prediction"] = prediction
    if target:
        reference["label"] = target
    task_col = target or prediction
    model = {
        "model_id": model_id or _model_id(path),
        "task": infer_task(columns[task_col]) if task_col else "classification",
        "features": features,
        "window": {"size_events": max(10, int(window))},
        "reference": reference,
    }
    return {"models": [model]}


def _model_id(path: Path) -> str:
    stem = re.sub(r"(\.csv)?(\.gz)?$", "", path.name, flags=re.I)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "model"


def _dump(cfg: dict, source: Path) -> str:
    lines = [
        f"# driftwatch monitor config inferred from {source.name} by `driftwatch init --from-csv`:",
        "# kinds, ranges (min/max = the range seen), allowed categories and nullable come from the data;",
        "# review them, then `driftwatch check-config` this file and start a worker with it.",
        "# A model's events are counted only once its model_id is declared here (others are dead-lettered).",
        "",
    ]
    body = yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=110)
    return "\n".join(lines) + body


def run(args: argparse.Namespace) -> int:
    to_stdout = args.output is not None and str(args.output) == "-"
    output = Path("monitors.yaml") if to_stdout else (args.output or args.csv.parent / "monitors.yaml")
    if not to_stdout and output.exists() and not args.force:
        print(f"driftwatch init: {output} exists; use --force to overwrite it or -o for another file", file=sys.stderr)
        return 1
    try:
        cfg = build_config(
            args.csv,
            output,
            target=args.target,
            prediction=args.prediction,
            model_id=args.model_id,
            ignore=args.ignore,
            window=args.window,
        )
    except ValueError as e:
        print(f"driftwatch init: {e}", file=sys.stderr)
        return 1
    text = _dump(cfg, args.csv)
    if to_stdout:
        sys.stdout.write(text)
        return 0
    output.write_text(text, encoding="utf-8")
    m = cfg["models"][0]
    kinds: dict[str, int] = {}
    for f in m["features"]:
        kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
    print(
        f"wrote {output}: model {m['model_id']!r} ({m['task']}), {len(m['features'])} features "
        f"({', '.join(f'{n} {k}' for k, n in kinds.items())}), reference {m['reference']['file']}"
    )
    print(f"next: driftwatch check-config {output}  ·  driftwatch worker --monitors {output}")
    print(f"      and send events with model_id {m['model_id']!r} (docs/producer.md)")
    return 0
