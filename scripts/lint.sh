#!/usr/bin/env bash
# scripts/lint.sh -- the static checks .ci/run runs before the tests; fails on any finding.
#   ruff check   lint rules of pyproject.toml [tool.ruff.lint] over the whole checkout
#   ruff format  --check: the tree is as `ruff format .` writes it ([tool.ruff.format])
#   mypy         type check of detectors/, streams/, dashboard/ ([tool.mypy] in pyproject.toml)
# Needs the [lint] extra in .venv (scripts/bootstrap.sh installs it with [test]).
# Fix findings rather than silencing them: a `# noqa` or `# type: ignore` says why, on its line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=.venv/bin/python
echo "lint: ruff check" >&2
"$PY" -m ruff check .
echo "lint: ruff format --check" >&2
"$PY" -m ruff format --check .
echo "lint: mypy" >&2
"$PY" -m mypy
