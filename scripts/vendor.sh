#!/usr/bin/env bash
# Fetch the released files of the UI's third-party JavaScript from the npm registry into
# cmf_core/server/ui/static/vendored/<package>/ (with its LICENSE), and list them in VERSIONS.
# Run by a developer when a version changes; the files are committed, so nobody installing cmf needs Node.
# Needs npm (only for `npm pack`, which downloads the published tarball; nothing is built).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/cmf_core/server/ui/static/vendored"
# package@version  file in the tarball (repeatable, space-separated)
PACKAGES=(
    "uplot@1.6.32 dist/uPlot.iife.min.js dist/uPlot.min.css"        # step-metric charts (MIT)
)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
: > "$WORK/VERSIONS"
for entry in "${PACKAGES[@]}"; do
    read -r spec files <<< "$entry"
    name="${spec%@*}"
    (cd "$WORK" && npm pack --silent "$spec" > /dev/null)
    mkdir -p "$WORK/$name" && tar xzf "$WORK/${name}-${spec#*@}.tgz" -C "$WORK/$name"
    rm -rf "${DEST:?}/$name" && mkdir -p "$DEST/$name"
    for file in $files LICENSE; do cp "$WORK/$name/package/$file" "$DEST/$name/"; done
    echo "$spec $(node -p "require('$WORK/$name/package/package.json').license") $files" >> "$WORK/VERSIONS"
done
cp "$WORK/VERSIONS" "$DEST/VERSIONS"
echo "vendored into $DEST:"; cat "$DEST/VERSIONS"
