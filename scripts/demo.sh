#!/usr/bin/env bash
# Install cmf and run the main job end to end on the embedded default:
# a local artifact repository and a SQLite MLMD store, in a throw-away workspace.
source "$(dirname "$0")/_env.sh"
install_cmf ""

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export GIT_AUTHOR_NAME="${GIT_AUTHOR_NAME:-cmf demo}" GIT_AUTHOR_EMAIL="${GIT_AUTHOR_EMAIL:-demo@example.org}"
export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
mkdir -p "$WORK/project" && cd "$WORK/project"

echo "== cmf backends"
cmf backends
echo "== cmf init local"
cmf init local --path "$WORK/artifact-store" --git-remote-url "$WORK/origin.git"
echo "== cmf init show"
cmf init show
echo "== log a two-stage pipeline with the cmflib API (examples/demo_pipeline.py)"
python "$ROOT/examples/demo_pipeline.py"
echo "== cmf artifact list -p demo"
cmf artifact list -p demo
echo "== cmf execution list -p demo"
cmf execution list -p demo
echo "== cmf metadata export -p demo"
cmf metadata export -p demo -j "$WORK/demo.json"
echo "== dvc status (the logged data is versioned as dvc add would)"
dvc status
echo "== cmf artifact push -p demo"
cmf artifact push -p demo
sha() { find data/raw data/train.csv model.pkl -type f -print0 | sort -z | xargs -0 md5sum; }
before="$(sha)"
echo "== delete the data, then cmf artifact pull -p demo"
rm -rf data/raw data/train.csv model.pkl .dvc/cache
cmf artifact pull -p demo
if [ "$(sha)" = "$before" ]; then echo "== verified: every pulled file has its logged md5"; else echo "pulled data differs" >&2; exit 1; fi
echo "== demo finished: workspace set up in $WORK/project (removed on exit)"
