"""``driftwatch check-config FILE``: validate a monitor config and say what is wrong."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streams.monitors import ConfigError, load_monitors


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="monitor config (YAML)")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_monitors(args.file)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 1
    for m in cfg.models:
        win = m.window
        size = f"{win.size_events} events" if win.size_events else f"{win.size_seconds}s (+{win.grace_seconds}s grace)"
        print(f"ok  {m.model_id}: {len(m.features)} features, {m.task}, window {size}")
    return 0
