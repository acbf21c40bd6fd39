#!/usr/bin/env bash
# What the tests need beyond a Rust toolchain, installed from package
# registries only (nothing is downloaded at run time):
#  - settlement/node_modules: anvil (a local EVM chain, npm
#    @foundry-rs/anvil-linux-amd64) and solc (npm `solc`, the Solidity
#    compiler as JavaScript), pinned in settlement/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v npm >/dev/null || { echo "setup: npm (Node.js) is needed for the settlement tools" >&2; exit 1; }
if [ ! -x settlement/node_modules/.bin/anvil ] || [ ! -x settlement/node_modules/.bin/solcjs ]; then
  npm ci --prefix settlement --no-audit --no-fund --loglevel=error
fi
settlement/node_modules/.bin/anvil --version | head -1
echo "solc $(settlement/node_modules/.bin/solcjs --version)"
