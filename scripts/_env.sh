# Sourced by demo.sh and test.sh: create a venv with a supported Python (3.9-3.13) and install cmf into it.
# Usage: install_cmf "<extras>"   (e.g. "" or "test"); PYTHON=... picks the interpreter, CMF_VENV=... the venv.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PIP_DISABLE_PIP_VERSION_CHECK=1 DVC_NO_ANALYTICS=1

# Print the Python to build the venv with: $PYTHON if set (a command or a path), else the first supported one on
# PATH, 3.11 first (ml-metadata, the tests' oracle, has wheels up to 3.11). A shim that does not run is skipped.
pick_python() {
    local py candidates=(python3.11 python3.12 python3.13 python3.10 python3.9 python3)
    [ -n "${PYTHON:-}" ] && candidates=("$PYTHON")
    for py in "${candidates[@]}"; do
        if command -v "$py" >/dev/null 2>&1 &&
           "$py" -c 'import sys; sys.exit(not ((3, 9) <= sys.version_info[:2] <= (3, 13)))' 2>/dev/null; then
            echo "$py"; return 0
        fi
    done
    echo "cmf needs Python 3.9 to 3.13${PYTHON:+, which PYTHON=$PYTHON is not (or it does not run)};" \
         "set PYTHON=... (a command or a path)" >&2
    return 1
}

# Print "X.Y", the version of the Python given.
python_version() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}

# Print the venv to install into: $CMF_VENV if set; else .venv, unless PYTHON names another version than the
# existing .venv's: then .venv-X.Y, so that runs on two Pythons (as in CI) do not reinstall one venv in turn.
venv_dir() {
    local python="$1" version
    if [ -n "${CMF_VENV:-}" ]; then echo "$CMF_VENV"; return; fi
    if [ -n "${PYTHON:-}" ] && [ -x "$ROOT/.venv/bin/python" ]; then
        version="$(python_version "$python")"
        if [ "$version" != "$(python_version "$ROOT/.venv/bin/python")" ]; then echo "$ROOT/.venv-$version"; return; fi
    fi
    echo "$ROOT/.venv"
}

install_cmf() {
    local extras="$1" spec="$ROOT" python="" venv
    [ -n "$extras" ] && spec="$ROOT[$extras]"
    if [ -n "${PYTHON:-}" ] || [ ! -x "${CMF_VENV:-$ROOT/.venv}/bin/python" ]; then
        python="$(pick_python)"
    fi
    venv="$(venv_dir "$python")"
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv"
    elif [ -n "$python" ] && [ "$(python_version "$python")" != "$(python_version "$venv/bin/python")" ]; then
        echo "$venv holds Python $(python_version "$venv/bin/python"), PYTHON=$PYTHON is" \
             "$(python_version "$python"): set CMF_VENV=... to another venv" >&2
        return 1
    fi
    echo "== installing cmf${extras:+[$extras]} into $venv" \
         "(Python $(python_version "$venv/bin/python"), pinned by constraints.txt)"
    # The machine's pip config may warn about missing local package indexes: harmless noise, filtered.
    "$venv/bin/python" -m pip install -q -c "$ROOT/constraints.txt" -e "$spec" 2>&1 |
        { grep -v "is ignored: it is neither a file nor a directory" || true; }
    export PATH="$venv/bin:$PATH"
}

# Install the Debian packages the tests need when missing: the test servers (sshd, XRootD, MariaDB; PostgreSQL
# is looked for under /usr/lib/postgresql), Chromium, the real browser the UI tests drive, and xfsprogs, for
# an XFS image (loop-mounted) on which the reflink tests make real copy-on-write clones.
ensure_system_packages() {
    local missing=()
    [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
    command -v xrootd >/dev/null 2>&1 || missing+=(xrootd-server)
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
    [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
    command -v mkfs.xfs >/dev/null 2>&1 || missing+=(xfsprogs)
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)  # the C/Fortran API (cmf_core/native)
    command -v gcc >/dev/null 2>&1 || missing+=(gcc)
    command -v gfortran >/dev/null 2>&1 || missing+=(gfortran)
    command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "the tests need: ${missing[*]} (Debian packages); install them, or run as root with apt-get" >&2
        return 1
    fi
    echo "== installing ${missing[*]} (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
}
