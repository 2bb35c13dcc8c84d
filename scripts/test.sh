#!/usr/bin/env bash
# Install cmf with everything the tests need, then run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k init).
source "$(dirname "$0")/_env.sh"
install_cmf "test"
ensure_system_packages
cd "$ROOT"
python -m pytest -q "$@"
