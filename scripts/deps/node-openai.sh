#!/usr/bin/env bash
# The official `openai` npm package for tests/test_openai_node.py, installed into
# tests/node/node_modules (the version pinned in tests/node/package.json). Node.js and
# npm come from Debian when missing. Does nothing when the package is already there.
set -euo pipefail
DIR="$(cd "$(dirname "$0")/../../tests/node" && pwd)"
WANT="$(sed -n 's/.*"openai": "\(.*\)".*/\1/p' "$DIR/package.json")"
HAVE="$(sed -n 's/^  "version": "\(.*\)".*/\1/p' "$DIR/node_modules/openai/package.json" 2>/dev/null || true)"
[ "$HAVE" = "$WANT" ] && exit 0
if ! command -v npm >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "install Node.js and npm (apt-get install nodejs npm)" >&2; exit 1; }
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm
fi
cd "$DIR"
# No lock file: the one package has no dependencies and its version is pinned exactly.
npm install --no-package-lock --no-audit --no-fund --loglevel=error
