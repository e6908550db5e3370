"""The wire: the event contract producers and the worker share, and the producer SDK.

* :mod:`streams.wire.contract` — the one definition of the events (fields, kinds, what is
  required, limits, dead-letter reasons), dependency-free;
* :mod:`streams.wire.schemas` — the pydantic models of the events and their JSON Schemas
  (exported to ``streams/wire/schemas/*.schema.json``), built from the contract;
* :mod:`streams.wire.producer` — the producer SDK a serving app adds (public path:
  :mod:`streams.producer`).

Nothing here imports Faust, numpy or the worker: ``pip install driftwatch`` is this room.
"""
