#!/usr/bin/env bash
# Install the pinned official Azure IoT Node clients used by tests/server/test_node_clients.py (npm ci: exactly
# what package-lock.json records). Without Node and npm, or without node_modules, those tests are skipped.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is not installed: the Node client tests will be skipped" >&2
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
