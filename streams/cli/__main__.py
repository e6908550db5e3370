"""``python -m streams.cli``: the ``driftwatch`` command without the console script."""

from streams.cli import main

raise SystemExit(main())
