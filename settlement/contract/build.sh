#!/usr/bin/env bash
# Compiles SwarmSettlement.sol with solc 0.8.37 (the npm `solc` package that
# scripts/setup.sh installs) into contract/out/: the ABI the Rust side is
# generated from and the bytecode it deploys. Both are checked in; the
# settlement tests compile again and compare.
set -euo pipefail
cd "$(dirname "$0")"
solcjs=../node_modules/.bin/solcjs
[ -x "$solcjs" ] || { echo "solcjs not found: run scripts/setup.sh" >&2; exit 1; }
out="${1:-out}"
tmp=$(mktemp -d)
"$solcjs" --optimize --optimize-runs 200 --bin --abi -o "$tmp" SwarmSettlement.sol >/dev/null
mkdir -p "$out"
python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), indent=1))' \
  "$tmp/SwarmSettlement_sol_SwarmSettlement.abi" > "$out/SwarmSettlement.abi.json"
cp "$tmp/SwarmSettlement_sol_SwarmSettlement.bin" "$out/SwarmSettlement.bin"
rm -rf "$tmp"
