#!/usr/bin/env bash
# Benchmark (not a test): a large message between two ferrymail nodes over a long thin
# link that is cut while it crosses. An edge and a hub (both `ferry = true`: XFERRY,
# docs/xferry.md) in two network namespaces joined by a user-space link emulator (a TUN
# device in each; its script is the first argument): DELAY_MS each way, KBIT kbit/s, a
# QUEUE-byte bottleneck queue. The message is SIZE_MIB MiB of base64 lines of random
# bytes (an attachment zstd cannot shrink much). Each time the hub holds another
# quarter of it, the link goes dark (the emulator drops everything) and the edge's
# connection is destroyed (`ss -K`), as a modem hanging up would; a second later the
# link is back and the edge is flushed again. After three cuts the fourth flush
# finishes the message. The figures: bytes that crossed towards the hub (the
# emulator's counters) against the message's size, and whether the hub's copy is the
# edge's, byte for byte.
#
# Needs: root, iproute2 (ss with SOCK_DESTROY), python3, and the emulator.
# Usage: bench/resume_cuts.sh path/to/linkem.py [path/to/ferrymail]
#        (environment: SIZE_MIB=10 DELAY_MS=300 KBIT=1000 QUEUE=65536 CUTS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
. bench/lib.sh
LINKEM=$(realpath "${1:?usage: bench/resume_cuts.sh path/to/linkem.py [ferrymail]}")
BIN=$(realpath "${2:-target/release/ferrymail}")
SIZE_MIB=${SIZE_MIB:-10}; DELAY_MS=${DELAY_MS:-300}; KBIT=${KBIT:-1000}
QUEUE=${QUEUE:-65536}; CUTS=${CUTS:-3}

A=fm-ra-$$; B=fm-rb-$$
WORK=$(mktemp -d); chmod 755 "$WORK"
PIDS=(); LINK_PID=
cleanup() {
  stop_pids "${PIDS[@]}" ${LINK_PID:+"$LINK_PID"}
  netns_gone "$A" "$B"
  rm -rf "$WORK"
}
trap cleanup EXIT
netns_pair "$A" "$B"
inA() { ip netns exec "$A" "$@"; }

python3 "$LINKEM" --ns-a "$A" --ns-b "$B" --addr-a 10.203.0.1 --addr-b 10.203.0.2 \
  --delay-ms "$DELAY_MS" --rate-kbit "$KBIT" --queue-bytes "$QUEUE" --loss 0 \
  > "$WORK/link.log" 2>&1 &
LINK_PID=$!
link_there() { ip -n "$B" -o addr show | grep -q 10.203.0.2; }
until_true 20 link_there
link_bytes() { # bytes that crossed towards the hub so far
  kill -HUP "$LINK_PID"; sleep 0.3
  python3 - "$WORK/link.log" <<'PY'
import ast, re, sys
last = [l for l in open(sys.argv[1]) if "{'pkts'" in l][-1]
print(ast.literal_eval(re.findall(r"=(\{'pkts'[^}]*\})", last)[0])["bytes"])
PY
}

node() { # NAME NETNS EXTRA-TOML
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/ferrymail.toml" <<TOML
hostname = "$1.bench.example"
spool = "$WORK/$1/spool"
$3
[link]
mode = "manual"
[dns]
servers = ["127.0.0.1:1"]
TOML
  ip netns exec "$2" "$BIN" --config "$WORK/$1/ferrymail.toml" serve 2> "$WORK/$1/daemon.log" &
  PIDS+=($!)
  for _ in $(seq 100); do "$BIN" --config "$WORK/$1/ferrymail.toml" status >/dev/null 2>&1 && break; sleep 0.1; done
}
node hub "$B" '[[listen]]
addr = "0.0.0.0:2525"
ferry = true
[accept]
relay_networks = ["10.203.0.0/24"]
max_message_size = "64MiB"'
node edge "$A" '[upstream]
smarthost = "10.203.0.2:2525"
tls = "none"
ferry = true
[accept]
max_message_size = "64MiB"'
fm() { local n=$1; shift; inA "$BIN" --config "$WORK/$n/ferrymail.toml" "$@"; }

python3 - "$WORK/message" "$SIZE_MIB" <<'PY'
import base64, random, sys
rng = random.Random(15)
data = base64.encodebytes(rng.randbytes(int(sys.argv[2]) * 786432)).replace(b"\n", b"\r\n")
open(sys.argv[1], "wb").write(b"Subject: survey data\r\nContent-Type: application/octet-stream\r\n"
                              b"Content-Transfer-Encoding: base64\r\n\r\n" + data)
PY
fm edge send -f survey@edge.bench.example data@far.bench.example < "$WORK/message"
picked_up() {
  [ "$(fm edge status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["maildrop"])')" = 0 ]
}
until_true 60 picked_up
SIZE=$(stat -c %s "$WORK/message")
hub_ids() { # the hub's queued messages
  python3 -c 'import sqlite3,sys
try:
    c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
    print("\n".join(r[0] for r in c.execute("SELECT id FROM message")))
except sqlite3.Error:
    pass' "$WORK/hub/spool/index.sqlite3"
}
arrived() { [ -n "$(hub_ids)" ]; }
held() { find "$WORK/hub/spool/partial" -type f -printf '%s\n' 2>/dev/null | sort -n | tail -1; }
deferred() {
  fm edge queue --json | python3 -c 'import json,sys
sys.exit(0 if any(r.get("state") == "deferred" for m in json.load(sys.stdin) for r in m["recipients"]) else 1)'
}
held_past() { local h; h=$(held); [ "${h:-0}" -ge "$1" ]; }

BASE=$(link_bytes)
T0=$(now)
echo "$SIZE-byte message over ${DELAY_MS} ms each way, $KBIT kbit/s; $CUTS cuts"
for cut in $(seq "$CUTS"); do
  fm edge flush >/dev/null
  until_true 900 held_past $(( SIZE * cut / (CUTS + 1) ))
  kill -USR1 "$LINK_PID"                     # the link goes dark
  inA ss -K dst 10.203.0.2 dport = 2525 >/dev/null 2>&1 || true
  echo "cut $cut: the hub held $(held) bytes"
  sleep 1
  kill -USR2 "$LINK_PID"                     # and comes back
  # The edge finds its connection gone and defers the message; its operator (or the
  # next retry) sends it again.
  until_true 600 deferred
  fm edge queue retry --all >/dev/null
done
fm edge flush >/dev/null
until_true 900 arrived
T1=$(now)
CROSSED=$(( $(link_bytes) - BASE ))
ID=$(hub_ids)
SAME=no
python3 - "$WORK/hub/spool/queue/$ID" "$WORK/message" <<'PY' && SAME=yes
import sys
stored, sent = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
body = sent.split(b"\r\n\r\n", 1)[1]   # the edge adds Date: and Message-ID: above it
sys.exit(0 if stored.count(body) == 1 else 1)
PY
echo "crossed $CROSSED bytes for a $SIZE-byte message: $(calc "round($CROSSED / $SIZE, 3)")x, in $(calc "round($T1 - $T0, 1)") s"
echo "the hub's copy is the edge's, byte for byte: $SAME; partial files left: $(find "$WORK/hub/spool/partial" -type f | wc -l)"
