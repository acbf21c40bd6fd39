#!/usr/bin/env bash
# What peer review costs honest peers: runs a bootstrap node and PEERS peers
# of MODEL on 127.0.0.1 for ROUNDS rounds with verify.rate = RATE, then
# prints the median gap between rounds, bytes sent per peer per round, the
# checks run and the check time against the training time (sums over all
# peers). Run it with rate 0 and with the default 0.8 and compare.
#
#   cargo build --release -p swarm
#   [PIN=1] scripts/review-overhead.sh MODEL RATE [ROUNDS] [PEERS]
#
# Uses target/release/swarm (or $SWARM_BIN); works in a temporary directory.
set -euo pipefail
MODEL=${1:?model}; RATE=${2:?rate}; ROUNDS=${3:-8}; PEERS=${4:-4}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN=${SWARM_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/swarm}
D=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$D"' EXIT
"$BIN" spec "$MODEL" | sed "s/^rounds = .*/rounds = $ROUNDS/; s/^min_peers = .*/min_peers = $PEERS/; s/^rate = .*/rate = $RATE/" > "$D/spec.toml"
"$BIN" bootstrap --listen /ip4/127.0.0.1/udp/0/quic-v1 --key "$D/bootstrap.key" > "$D/boot.out" 2>/dev/null &
for _ in $(seq 50); do grep -q "listening on" "$D/boot.out" && break; sleep 0.1; done
ADDR=$(grep -m1 "listening on" "$D/boot.out" | sed 's/.*listening on //')
PIDS=()
CORES=$(nproc)
for i in $(seq 0 $((PEERS - 1))); do
  PINNED=()
  [ "${PIN:-0}" = 1 ] && PINNED=(taskset -c $((i % CORES)))
  "${PINNED[@]}" "$BIN" join --spec "$D/spec.toml" --bootstrap "$ADDR" --listen /ip4/127.0.0.1/udp/0/quic-v1 \
    --data-dir "$D/p$i" --json > "$D/p$i.out" 2> "$D/p$i.log" &
  PIDS+=($!)
done
wait "${PIDS[@]}"
python3 - "$D" "$PEERS" "$MODEL" "$RATE" <<'PY'
import json, re, statistics, sys
d, n, model, rate = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
gaps, sent, checks, train = [], [], [], []
for i in range(n):
    rs = [json.loads(l) for l in open(f"{d}/p{i}.out") if l.startswith("{")]
    el = [r["elapsed_ms"] for r in rs]
    gaps += [b - a for a, b in zip(el[2:], el[3:])]  # the first rounds include joining
    sent += [r["bytes_sent"] for r in rs[2:]]
    train += [r["train_ms"] for r in rs if r.get("train_ms")]
    for line in open(f"{d}/p{i}.log"):
        m = re.search(r"contribution: .*\((\d+) ms\)", line)
        if m:
            checks.append(int(m.group(1)))
print(f"{model} rate {rate}: median round gap {statistics.median(gaps):.0f} ms, "
      f"sent {statistics.mean(sent) / 1024:.1f} KiB/peer/round, {len(checks)} checks "
      f"(median {statistics.median(checks) if checks else 0} ms), training median "
      f"{statistics.median(train) if train else 0:.0f} ms, check/training time {sum(checks) / max(1, sum(train)) * 100:.1f} %")
PY
