#!/usr/bin/env bash
# Build (idempotently) a separate venv holding the ORIGINAL cmflib 0.1.0 from PyPI, for the
# compatibility tests in tests/compat.  Usage: original_env.sh [VENV_DIR]
# (default VENV_DIR: <repo>/.venv-original; CMF_ORIGINAL_PYTHON may name the interpreter).
#
# Install strategy: `cmflib==0.1.0 --no-deps` plus cmflib's declared requirements MINUS
# ray and scikit-learn, all pinned by constraints-original.txt.  cmflib never imports
# scikit-learn, and ray only in cmflib/cmf_ray_logger.py (a Ray Tune callback), so neither
# is needed to import cmflib.cmf / cmflib.cmfquery, run `cmf init` or log a pipeline.
# Measured on this 2-core machine with an empty pip cache: full install 78 s / 956 MB,
# this one 55 s / 578 MB.  Everything else cmflib declares (dvc[s3,ssh], pyarrow, minio,
# boto3, paramiko, neo4j, scitokens, ...) is kept so the original behaves as shipped.
#
# Quiet on success; on failure prints pip's log to stderr and exits non-zero.  A marker
# file (holding a hash of the pins and of this strategy) makes reruns instant; a change
# of either triggers a rebuild.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${1:-$repo/.venv-original}"
constraints="$here/constraints-original.txt"
marker="$venv/.cmf-original-complete"

# cmflib 0.1.0 Requires-Dist, without ray and scikit_learn (versions come from the constraints).
deps=(ml-metadata "dvc[s3,ssh]" pathspec pandas retrying pyarrow neo4j tabulate click minio
      paramiko scitokens cryptography readchar protobuf boto3)

want="$( { cat "$constraints"; echo "cmflib==0.1.0 --no-deps + ${deps[*]}"; } | sha256sum | cut -d' ' -f1)"

if [[ -f "$marker" && "$(cat "$marker")" == "$want" && -x "$venv/bin/python" ]]; then
    exit 0
fi

# Serialise concurrent builds of the same venv (e.g. pytest-xdist workers).
lock="${TMPDIR:-/tmp}/cmf-original-env-$(printf '%s' "$venv" | sha256sum | cut -c1-16).lock"
exec 9>"$lock"
flock 9
if [[ -f "$marker" && "$(cat "$marker")" == "$want" && -x "$venv/bin/python" ]]; then
    exit 0
fi

pick_python() {
    local candidate
    for candidate in "${CMF_ORIGINAL_PYTHON:-}" python3.11 python3; do
        [[ -n "$candidate" ]] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        # The pins are resolved for CPython 3.11 (numpy 2.4 etc. need >= 3.11; ml-metadata < 3.12).
        if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

python="$(pick_python)" || { echo "original_env.sh: no CPython 3.11 found (set CMF_ORIGINAL_PYTHON)" >&2; exit 1; }

log="$(mktemp "${TMPDIR:-/tmp}/cmf-original-env.XXXXXX.log")"
trap 'rm -f "$log"' EXIT

fail() {
    echo "original_env.sh: $1 (venv: $venv)" >&2
    grep -v 'is ignored' "$log" >&2 || true
    exit 1
}

rm -rf "$venv"
# Our own venv may be active; the new venv must not inherit anything from it.
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME PIP_REQUIRE_VIRTUALENV
"$python" -m venv "$venv" >>"$log" 2>&1 || fail "python -m venv failed"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check --no-input -q -c "$constraints")
"${pip[@]}" --no-deps "cmflib==0.1.0" >>"$log" 2>&1 || fail "installing cmflib failed"
"${pip[@]}" "${deps[@]}" >>"$log" 2>&1 || fail "installing cmflib's dependencies failed"
# -I: never pick up a `cmflib` package from the current directory (this repo has one).
CMF_LOG_FILE=/dev/null "$venv/bin/python" -I -c 'import cmflib.cmf, cmflib.cmfquery' \
    >>"$log" 2>&1 || fail "the installed cmflib does not import"
[[ -x "$venv/bin/cmf" && -x "$venv/bin/dvc" ]] || fail "cmf/dvc entry points missing"

printf '%s' "$want" >"$marker"
