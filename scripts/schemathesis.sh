#!/usr/bin/env bash
# Property-based tests of the coordinator's control API against docs/openapi.json with Schemathesis.
#
# Starts a real coordinator and agent on free loopback ports, creates an app and deploys a tiny slug so
# the app-scoped endpoints have data, runs Schemathesis, and stops everything it started.
# Exits non-zero when Schemathesis reports a failure. See docs/OPENAPI.md.
#
# Environment:
#   ST_MAX_EXAMPLES  test cases per operation and phase (default 100)
#   ST_CHECKS        checks to run (default: every check, as configured per operation below)
#   ST_EXCLUDE_CHECKS  checks to skip (default `ignored_auth`, see docs/OPENAPI.md)
#   ST_PHASES        phases (default `examples,coverage,fuzzing,stateful`)
#   ST_SEED          Hypothesis seed (default: random)
#   ST_WORKERS       Schemathesis workers (default 2; 1 on a Python with the thread-unsafe `ast`
#                    of CPython < 3.11.8 / 3.12.0, which crashes Hypothesis now and then)
#   ST_PYTHON        the interpreter for the venv (default: python3.13, python3.12 or python3)
#   ST_AUTH_PASS=1   also run the `ignored_auth` check in a final, rate-limited pass (slow: a few minutes)
#   ST_NO_BUILD=1    use target/debug as it is instead of `cargo build -p dyno-coordinator -p dyno-agent`
#   ST_KEEP=1        keep the temporary directory (logs, reports) after the run
#   ST_REPORT_DIR    where the JUnit report and the NDJSON event log go (default: the temporary directory)
#   Extra arguments go to `schemathesis run` as they are.
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SPEC="$ROOT/docs/openapi.json"
BIN="$ROOT/target/debug"
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/dyno/schemathesis-venv"
MAX_EXAMPLES="${ST_MAX_EXAMPLES:-100}"
CHECKS="${ST_CHECKS:-}"
EXCLUDE_CHECKS="${ST_EXCLUDE_CHECKS-ignored_auth}"
PHASES="${ST_PHASES:-examples,coverage,fuzzing,stateful}"
APP=st-app          # the app every app-scoped operation is sent to
DOOMED=st-doomed    # DELETE /apps/{app} destroys this one instead
NOAPP=st-nowhere    # never created: run and log-drain creation are only validated, never carried out

log() { printf '\n==> %s\n' "$*" >&2; }

# --- Schemathesis, pinned, in its own venv ----------------------------------------------------------
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -qx "schemathesis, version $SCHEMATHESIS_VERSION"; then
    PYTHON="${ST_PYTHON:-}"
    if [[ -z "$PYTHON" ]]; then
        for p in python3.13 python3.12 python3; do
            "$p" -c 'import venv' >/dev/null 2>&1 && { PYTHON="$p"; break; }
        done
    fi
    log "installing schemathesis $SCHEMATHESIS_VERSION into $VENV ($($PYTHON --version))"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
# CPython before 3.11.8 (and 3.12.0) builds ASTs thread-unsafely ("AST constructor recursion depth
# mismatch"), which Hypothesis trips over with more than one worker.
if "$VENV/bin/python" -c 'import sys; v = sys.version_info[:3]; sys.exit(0 if v >= (3, 12, 1) or (3, 11, 8) <= v < (3, 12) else 1)'; then
    WORKERS="${ST_WORKERS:-2}"
else
    WORKERS="${ST_WORKERS:-1}"
fi

# --- binaries: the tree's own, so the run tests the source as it is --------------------------------
if [[ "${ST_NO_BUILD:-0}" != 1 ]]; then
    log "building the coordinator and the agent (debug)"
    (cd "$ROOT" && cargo build -p dyno-coordinator -p dyno-agent)
fi
for b in dyno-coordinator dyno-agent; do
    [[ -x "$BIN/$b" ]] || { echo "$BIN/$b is missing: build it or drop ST_NO_BUILD" >&2; exit 1; }
done

# --- platform --------------------------------------------------------------------------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/dyno-schemathesis.XXXXXX")"
REPORT_DIR="${ST_REPORT_DIR:-$TMP/report}"
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ "${ST_KEEP:-0}" == 1 || $rc -ne 0 ]]; then
        echo "logs and reports kept in $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
API_PORT="$(free_port)"
ROUTER_PORT="$(free_port)"
while [[ "$ROUTER_PORT" == "$API_PORT" ]]; do ROUTER_PORT="$(free_port)"; done
URL="http://127.0.0.1:$API_PORT"
TOKEN="st-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
export DYNO_TOKEN="$TOKEN"

log "coordinator on $URL (state in $TMP)"
RUST_LOG="${RUST_LOG:-info}" "$BIN/dyno-coordinator" --listen "127.0.0.1:$API_PORT" \
    --router "127.0.0.1:$ROUTER_PORT" --state-dir "$TMP/coordinator" --token "$TOKEN" \
    --stop-grace-secs 2 >"$TMP/coordinator.log" 2>&1 &
PIDS+=("$!")
for i in $(seq 100); do
    curl -fsS "$URL/healthz" >/dev/null 2>&1 && break
    [[ $i == 100 ]] && { echo "coordinator did not start" >&2; tail -20 "$TMP/coordinator.log" >&2; exit 1; }
    sleep 0.1
done

log "agent h1"
# 4 GiB for dynos: scaling fuzz places at most a handful of dynos on this machine.
RUST_LOG="${RUST_LOG:-info}" "$BIN/dyno-agent" --coordinator "$URL" --token "$TOKEN" \
    --state-dir "$TMP/agent" --name h1 --memory-mb 4096 --stop-grace-secs 2 >"$TMP/agent.log" 2>&1 &
PIDS+=("$!")

api() { # METHOD PATH [curl args...]: the body on stdout; fails on an HTTP error
    local method=$1 path=$2
    shift 2
    curl -fsS -X "$method" -H "Authorization: Bearer $TOKEN" "$@" "$URL$path"
}
json_get() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

for i in $(seq 100); do
    [[ "$(api GET /hosts | json_get '",".join(h["state"] for h in d)')" == *connected* ]] && break
    [[ $i == 100 ]] && { echo "agent did not connect" >&2; tail -20 "$TMP/agent.log" >&2; exit 1; }
    sleep 0.2
done

log "app $APP: deploy a web and a worker process type"
SRC="$TMP/src"
mkdir -p "$SRC"
cat >"$SRC/Procfile" <<'EOF'
web: exec python3 -m http.server "$PORT" --bind 127.0.0.1
worker: exec sleep 100000
EOF
tar -C "$SRC" -czf "$TMP/slug.tgz" Procfile
for app in "$APP" "$DOOMED"; do
    api POST /apps -H 'Content-Type: application/json' -d "{\"name\":\"$app\"}" >/dev/null
done
api POST "/apps/$APP/releases?description=schemathesis" -H 'Content-Type: application/octet-stream' \
    --data-binary @"$TMP/slug.tgz" >/dev/null
api POST "/apps/$APP/formation/scale" -H 'Content-Type: application/json' \
    -d '{"args":["web=1","worker=1"]}' >/dev/null
api PATCH "/apps/$APP/config-vars" -H 'Content-Type: application/json' -d '{"GREETING":"hi"}' >/dev/null
api POST "/apps/$APP/domains" -H 'Content-Type: application/json' -d '{"hostname":"st.example.com"}' >/dev/null
# A drain to a loopback port nothing listens on: it only queues and retries.
DRAIN="$(api POST "/apps/$APP/log-drains" -H 'Content-Type: application/json' \
    -d "{\"url\":\"syslog://127.0.0.1:$(free_port)\"}" | json_get 'd["id"]')"
SLUG="$(api GET "/apps/$APP/releases" | json_get 'd[0]["slug"]["id"]')"
for i in $(seq 150); do
    up="$(api GET "/apps/$APP/dynos" | json_get 'sum(x["state"]=="up" for x in d)')"
    [[ "$up" == 2 ]] && break
    [[ $i == 150 ]] && { echo "the app's dynos did not come up" >&2; api GET "/apps/$APP/dynos" >&2; exit 1; }
    sleep 0.2
done
# One attached one-off dyno through the API, so logs and events hold a run too.
api POST "/apps/$APP/run" -H 'Content-Type: application/json' -d '{"command":"echo hello from run"}' >/dev/null

# --- Schemathesis configuration ------------------------------------------------------------------------
# NDJSON streams (logs, run) are validated line by line: each line against the items of the array
# the document gives as their schema.
cat >"$TMP/hooks.py" <<'EOF'
import json

import schemathesis


@schemathesis.deserializer("application/x-ndjson")
def ndjson(ctx, response):
    return [json.loads(line) for line in response.content.decode("utf-8").split("\n") if line.strip()]
EOF

# [[operations]] are matched top down and the first that sets an option wins: specific ones first.
CONFIG="$TMP/schemathesis.toml"
cat >"$CONFIG" <<EOF
hooks = "$TMP/hooks.py"

[auth.openapi.bearerAuth]
bearer = "\${DYNO_TOKEN}"

# Failures for st replay ID go here, not into the work tree.
[cache]
directory = "$TMP/cache"

[generation]
# Hypothesis's example database would make later runs replay earlier ones' failures only.
database = "none"
# Never fake the Authorization header: the coordinator refuses an address for the rest of the
# minute after 20 wrong tokens, which would turn the rest of the run into 429s.
with-security-parameters = false

# Destroys an app: give it one of its own.
[[operations]]
include-operation-id = "destroyApp"
parameters = { "path.app" = "$DOOMED" }

# Would run arbitrary generated commands on this machine (run, createDyno: hundreds of one-offs, the
# attached ones waiting 60 s each for a client), or make the coordinator connect to generated hosts
# (drains): send them to an app that does not exist, so only validation runs.
[[operations]]
include-operation-id = ["run", "createDyno", "createDrain"]
parameters = { "path.app" = "$NOAPP" }
# Rules OpenAPI 3.0 cannot state (env keys are config var keys, a blank command): 422 for some
# schema-valid bodies.
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "422", "503"]
# 503 is the documented answer when no host has room for a one-off dyno, not a crash.
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]

# tail=true streams until the client hangs up: a request/response tester can only time out on it.
# A grep pattern that is a valid string but no valid regex is a 400.
[[operations]]
include-operation-id = "logs"
parameters = { "path.app" = "$APP", "query.tail" = "false" }
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "404"]

# The drain made above.
[[operations]]
include-operation-id = "deleteDrain"
parameters = { "path.app" = "$APP", "path.drain" = "$DRAIN" }

# Rules that depend on the app's state or that OpenAPI 3.0 cannot state (config var keys, the
# Procfile's process types, a slug's contents, path only for web checks, the app's own host name
# cannot be removed nor a host name under the router's domain added, a size and a dyno_size that
# disagree, an app name other than its own...): 422 for some schema-valid requests is right there.
[[operations]]
include-operation-id = ["updateConfig", "scale", "updateFormation", "updateFormationType", "createRelease", "setCheck", "stop", "restart", "restartDyno", "addDomain", "removeDomain", "updateApp"]
parameters = { "path.app" = "$APP" }
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "409", "422"]

# The Heroku features this platform does not have answer 422 not_supported to every request, whatever
# its method (QUERY and others OpenAPI cannot declare too), by design: a few cases each are enough,
# and the checks that expect 405 for undeclared methods do not apply.
[[operations]]
include-tag = "unsupported"
generation.max-examples = 3
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "422"]
checks.unsupported_method.enabled = false
checks.allow_header_conformance.enabled = false

# Every app-scoped operation goes to the deployed app, whatever app the stateful phase just created,
# so "created resource not found" would only report that substitution.
[[operations]]
include-path-regex = "^/apps/\\\\{app\\\\}"
parameters = { "path.app" = "$APP" }
checks.ensure_resource_availability.enabled = false

# Never the agent's host: removing it would leave nowhere to run dynos (responses feed later requests).
[[operations]]
include-operation-id = "removeHost"
parameters = { "path.host" = "st-no-such-host" }

[[operations]]
include-operation-id = ["drainHost", "undrainHost"]
parameters = { "path.host" = "h1" }

[[operations]]
include-operation-id = "getSlug"
parameters = { "path.id" = "$SLUG" }
EOF

mkdir -p "$REPORT_DIR"
ST=("$VENV/bin/schemathesis" --config-file "$CONFIG" run "$SPEC" --url "$URL"
    --workers "$WORKERS" --max-examples "$MAX_EXAMPLES" --phases "$PHASES"
    --request-timeout 20 --no-color --continue-on-failure)
[[ -n "${ST_SEED:-}" ]] && ST+=(--seed "$ST_SEED")

rc=0
# The only runs that execute a command: the documented examples of run and createDyno, on the
# deployed app.
log "run, createDyno: the documented examples on $APP"
sed "s/\"path.app\" = \"$NOAPP\"/\"path.app\" = \"$APP\"/" "$CONFIG" >"$TMP/run.toml"
"$VENV/bin/schemathesis" --config-file "$TMP/run.toml" run "$SPEC" --url "$URL" \
    --include-operation-id run --include-operation-id createDyno --phases examples --checks all \
    --exclude-checks ignored_auth --request-timeout 20 --no-color || rc=$?

log "schemathesis $SCHEMATHESIS_VERSION: checks ${CHECKS:-all}${EXCLUDE_CHECKS:+ (not $EXCLUDE_CHECKS)}, phases $PHASES, max $MAX_EXAMPLES examples"
start=$SECONDS
# Without --checks every check runs, and the per-operation settings above can turn some off
# (`--checks all` would override them).
"${ST[@]}" ${CHECKS:+--checks "$CHECKS"} ${EXCLUDE_CHECKS:+--exclude-checks "$EXCLUDE_CHECKS"} \
    --exclude-path /agent/ws --exclude-path /stream \
    --report junit,ndjson --report-dir "$REPORT_DIR" "$@" || rc=$?
echo "schemathesis took $((SECONDS - start)) s" >&2

if [[ "${ST_AUTH_PASS:-0}" == 1 ]]; then
    # Every operation once without and once with a wrong token. The coordinator refuses an address
    # after 20 wrong tokens a minute, so stay under that: 3 requests (one wrong token) per
    # operation at 45 requests a minute.
    log "ignored_auth pass (rate-limited)"
    "$VENV/bin/schemathesis" --config-file "$CONFIG" run "$SPEC" --url "$URL" --workers 1 \
        --checks ignored_auth --phases examples,fuzzing --max-examples 1 --rate-limit 45/m \
        --request-timeout 20 --no-color --exclude-path /agent/ws --exclude-path /stream \
        --exclude-method DELETE --exclude-tag unsupported || rc=$?
fi

sleep 1
if ! kill -0 "${PIDS[0]}" 2>/dev/null; then
    echo "the coordinator died during the run; its log ends:" >&2
    tail -30 "$TMP/coordinator.log" >&2
    rc=1
fi
if grep -q "panicked" "$TMP/coordinator.log"; then
    echo "the coordinator panicked during the run:" >&2
    grep -A3 "panicked" "$TMP/coordinator.log" | head -40 >&2
    rc=1
fi
exit $rc
