"""The wire: the event contract producers and the worker share, and the producer SDK.

* :mod:`streams.wire.constants` — the schema version and other dependency-free constants;
* :mod:`streams.wire.schemas` — the pydantic models of the events and their JSON Schemas
  (exported to ``streams/wire/schemas/*.schema.json``);
* :mod:`streams.wire.producer` — the producer SDK a serving app adds (public path:
  :mod:`streams.producer`).

Nothing here imports Faust, numpy or the worker: ``pip install driftwatch`` is this room.
"""
