"""InfluxQL text: identifiers and string literals, quoted one way everywhere.

Every statement driftwatch builds (the worker's checkpoint reads, the database admin, the
local stack's ``CREATE USER``, the dashboard's queries, the benchmarks) quotes names and values
with these two functions; a value never reaches InfluxDB unquoted. Standard library only.

>>> quote_ident('my "db"')
'"my \\\\"db\\\\""'
>>> quote_literal("it's")
"'it\\\\'s'"
"""

from __future__ import annotations

__all__ = ["quote_ident", "quote_literal"]


def quote_ident(name: object) -> str:
    """An identifier (database, measurement, tag or field name) in double quotes."""
    return '"' + str(name).replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(value: object) -> str:
    """A string literal (a tag value, a password) in single quotes, backslash escapes."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
