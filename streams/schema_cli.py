"""``driftwatch schema export DIR``: write the wire events' JSON Schema files."""

from __future__ import annotations

import argparse
from pathlib import Path

from streams.schemas import export_json_schemas


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["export"])
    parser.add_argument("directory", type=Path, nargs="?", default=Path("schemas"))


def run(args: argparse.Namespace) -> int:
    for p in export_json_schemas(args.directory):
        print(p)
    return 0
