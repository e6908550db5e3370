#!/usr/bin/env bash
# ./test.sh [pytest args]  -- install what is missing, then run the tests.
# Without arguments: the whole suite under tests/. Examples:
#   ./test.sh tests/streams/devstack/test_localstack.py
#   ./test.sh -m "not browser" -x
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
bash scripts/bootstrap.sh --with-browser
if [ "$#" -eq 0 ]; then
  set -- tests
fi
exec .venv/bin/python -m pytest "$@"
