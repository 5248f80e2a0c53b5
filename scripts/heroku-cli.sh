#!/usr/bin/env bash
# Installs the official heroku CLI at the version pinned in tests/heroku-cli/package-lock.json
# (heroku 11.10.0 and every dependency, by integrity hash) from the npm registry, into a cache
# keyed by the lock file, and prints the path of its `heroku` binary. A second call reuses the
# install. Used by tests/tests/heroku_cli.rs; see docs/HEROKU-CLI.md.
#
# Needs Node.js >= 20 and npm (the CLI's `engines`). Environment:
#   DYNO_HEROKU_CLI_DIR  where to install (default: $XDG_CACHE_HOME or ~/.cache, dyno/heroku-cli-HASH)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/tests/heroku-cli"

fail() { echo "heroku-cli.sh: $*" >&2; exit 1; }

command -v node >/dev/null || fail "node is not installed (the heroku CLI needs Node.js >= 20)"
command -v npm >/dev/null || fail "npm is not installed (needed to install the heroku CLI)"
major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge 20 ] || fail "node $(node --version) is too old: the heroku CLI needs Node.js >= 20"

hash="$(cat "$SRC/package.json" "$SRC/package-lock.json" | sha256sum | cut -c1-16)"
dest="${DYNO_HEROKU_CLI_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dyno/heroku-cli-$hash}"
bin="$dest/node_modules/.bin/heroku"

mkdir -p "$(dirname "$dest")"
# One install at a time; the others wait for it and reuse it.
exec 9>"$dest.lock"
flock 9
if [ ! -x "$bin" ]; then
    tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    cp "$SRC/package.json" "$SRC/package-lock.json" "$tmp/"
    echo "heroku-cli.sh: installing the heroku CLI into $dest (about 400 MB, a minute or two)" >&2
    # Install scripts are not needed (npm 11 skips them anyway); no audit, funding or update
    # notices, which would reach for the network beyond the registry.
    (cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --no-update-notifier \
        --loglevel=error >&2) || fail "npm ci failed (is the npm registry reachable?)"
    rm -rf "$dest"
    mv "$tmp" "$dest"
    trap - EXIT
fi
"$bin" --version >/dev/null 2>&1 || fail "$bin does not run"
echo "$bin"
