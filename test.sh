#!/usr/bin/env bash
# ./test.sh [pytest args]  -- install what is missing, then run the tests.
# Without arguments: the whole suite (tests/ and the packages' doctests: pyproject.toml's
# testpaths). Every argument goes to pytest. Examples:
#   ./test.sh -m "not slow"          # the fast tier, for daily work (CONTRIBUTING.md)
#   ./test.sh tests/streams/devstack/test_localstack.py
#   ./test.sh -m "not browser" -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/bootstrap.sh --with-browser
exec .venv/bin/python -m pytest "$@"
