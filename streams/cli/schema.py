"""``driftwatch schema export [DIR]``: the wire events' JSON Schemas, for producers in other languages.

With ``DIR``: one ``<name>.schema.json`` file per event type (inference, inference batch,
label, label batch), the files shipped in ``streams/wire/schemas/``. Without it: all of them
as one JSON object ``{name: schema}`` on stdout, to pipe or redirect — nothing is written
to the current folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from streams.wire.schemas import export_json_schemas, json_schemas


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["export"])
    parser.add_argument(
        "directory",
        type=Path,
        nargs="?",
        default=None,
        help="write <name>.schema.json files here (default: print them all as one JSON object on stdout)",
    )


def run(args: argparse.Namespace) -> int:
    if args.directory is None:
        print(json.dumps(json_schemas(), indent=2, sort_keys=True))
        return 0
    for p in export_json_schemas(args.directory):
        print(p)
    return 0
