"""Wire-contract constants shared by the producer SDK and the worker, with no dependencies.

The SDK (:mod:`streams.wire.producer`) is what a serving app installs with a plain
``pip install driftwatch``: it must not import pydantic models, numpy or the worker's
modules just to learn the schema version. :mod:`streams.wire.schemas` (the pydantic models
and JSON Schemas) re-exports these names.
"""

from __future__ import annotations

from typing import Literal

#: ``schema_version`` of every event and batch on the wire (see :mod:`streams.wire.schemas`).
SCHEMA_VERSION: Literal[1] = 1
