# Sourced by demo.sh and test.sh: create .venv with a supported Python and install cmf into it.
# Usage: install_cmf "<extras>"   (e.g. "" or "test")
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CMF_VENV:-$ROOT/.venv}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 DVC_NO_ANALYTICS=1

pick_python() {
    for py in ${PYTHON:-} python3.11 python3.10 python3.9 python3; do
        if command -v "$py" >/dev/null 2>&1 &&
           "$py" -c 'import sys; sys.exit(not ((3, 9) <= sys.version_info[:2] <= (3, 11)))' 2>/dev/null; then
            echo "$py"; return 0
        fi
    done
    echo "cmf needs Python 3.9, 3.10 or 3.11 (ml-metadata has no wheels for others); set PYTHON=..." >&2
    return 1
}

install_cmf() {
    local extras="$1" spec="$ROOT"
    [ -n "$extras" ] && spec="$ROOT[$extras]"
    if [ ! -x "$VENV/bin/python" ]; then
        "$(pick_python)" -m venv "$VENV"
    fi
    echo "== installing cmf${extras:+[$extras]} into $VENV (pinned by constraints.txt)"
    # The machine's pip config may warn about missing local package indexes: harmless noise, filtered.
    "$VENV/bin/python" -m pip install -q -c "$ROOT/constraints.txt" -e "$spec" 2>&1 |
        { grep -v "is ignored: it is neither a file nor a directory" || true; }
    export PATH="$VENV/bin:$PATH"
}

# Install the Debian packages the tests need when missing: the test servers (sshd, XRootD; PostgreSQL is
# looked for under /usr/lib/postgresql), Chromium, the real browser the UI tests drive, and xfsprogs, for
# an XFS image (loop-mounted) on which the reflink tests make real copy-on-write clones.
ensure_system_packages() {
    local missing=()
    [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
    command -v xrootd >/dev/null 2>&1 || missing+=(xrootd-server)
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || missing+=(postgresql)
    command -v mkfs.xfs >/dev/null 2>&1 || missing+=(xfsprogs)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "the tests need: ${missing[*]} (Debian packages); install them, or run as root with apt-get" >&2
        return 1
    fi
    echo "== installing ${missing[*]} (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
}
