#!/usr/bin/env bash
# Install cmf and run the main job end to end on the embedded default:
# a local artifact repository and a SQLite MLMD store, in a throw-away workspace.
source "$(dirname "$0")/_env.sh"
install_cmf "server"

WORK="$(mktemp -d)"
SERVER_PID=""
trap '[ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; rm -rf "$WORK"' EXIT
export GIT_AUTHOR_NAME="${GIT_AUTHOR_NAME:-cmf demo}" GIT_AUTHOR_EMAIL="${GIT_AUTHOR_EMAIL:-demo@example.org}"
export GIT_COMMITTER_NAME="$GIT_AUTHOR_NAME" GIT_COMMITTER_EMAIL="$GIT_AUTHOR_EMAIL"
mkdir -p "$WORK/project" && cd "$WORK/project"

echo "== cmf backends"
cmf backends
echo "== cmf init local"
git init -q --bare "$WORK/origin.git"
PORT="$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cmf init local --path "$WORK/artifact-store" --git-remote-url "$WORK/origin.git" \
    --cmf-server-url "http://127.0.0.1:$PORT"
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

echo "== a second user shares the pipeline through a metadata server (cmf server on port $PORT)"
cmf server --port "$PORT" --data-dir "$WORK/server-data" --log-level warning &
SERVER_PID=$!
python -c "import socket,sys,time
for _ in range(100):
    try: socket.create_connection(('127.0.0.1', $PORT), 0.2); sys.exit(0)
    except OSError: time.sleep(0.1)
sys.exit('cmf server did not start')"
echo "== user 1: cmf repo push -p demo (artifacts, metadata, git)"
cmf repo push -p demo
git --git-dir "$WORK/origin.git" symbolic-ref HEAD "refs/heads/$(git symbolic-ref --short HEAD)"
echo "== user 2: clone, cmf init, cmf repo pull -p demo"
git clone -q "$WORK/origin.git" "$WORK/second" && cd "$WORK/second"
cmf init local --path "$WORK/artifact-store" --git-remote-url "$WORK/origin.git" \
    --cmf-server-url "http://127.0.0.1:$PORT" > /dev/null
rm -f mlmd
cmf repo pull -p demo
cmf artifact list -p demo
if [ "$(sha)" = "$before" ]; then echo "== verified: user 2 has user 1's pipeline and data"; else echo "user 2's data differs" >&2; exit 1; fi
echo "== demo finished: workspace set up in $WORK/project (removed on exit)"
