#!/usr/bin/env bash
# Benchmark (not a test): flushing a backlog to a plain upstream over a long thin link
# of real kernel TCP. Two network namespaces joined by a user-space link emulator (a
# TUN device in each; its script is the first argument): DELAY_MS each way, KBIT kbit/s,
# a QUEUE-byte bottleneck queue, LOSS random loss. The senders (a ferrymail edge, then a
# private stock Postfix with defer_transports = smtp and postqueue -f) are in the first
# namespace; the upstream is in the second: with UPSTREAM=sink a plain SMTP sink that
# offers PIPELINING and 8BITMIME but not CHUNKING (tests/interop/tools/raw_sink.py: every
# message goes by DATA), with UPSTREAM=hub a ferrymail hub, which offers CHUNKING. Each run gets a fresh emulator,
# whose counters give the bytes that crossed and the packets the bottleneck dropped.
#
# The physical limit is the bytes that crossed towards the upstream ÷ the rate, plus the
# round trips no sender can avoid: the TCP handshake, the banner, EHLO, and the last
# reply (6 one-way trips). The figures: seconds from the flush to the last message at
# the sink, the ratio to the limit, drops at the bottleneck, and ferrymail's speed-up
# over Postfix.
#
# Needs: root, iproute2, python3, postfix (smtp-source), and the emulator (it takes
# --ns-a --ns-b --addr-a --addr-b --delay-ms --rate-kbit --queue-bytes --loss).
# Usage: bench/thin_link_tcp.sh path/to/linkem.py [messages] [path/to/ferrymail]
#        (environment: UPSTREAM=hub|sink DELAY_MS=300 KBIT=1000 QUEUE=65536 LOSS=0
#         SIZE=4096 RUNS=3; ONLY=ferrymail skips Postfix)
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
LINKEM=$(realpath "${1:?usage: bench/thin_link_tcp.sh path/to/linkem.py [messages] [ferrymail]}")
MESSAGES=${2:-200}
BIN=$(realpath "${3:-target/release/ferrymail}")
DELAY_MS=${DELAY_MS:-300}; KBIT=${KBIT:-1000}; QUEUE=${QUEUE:-65536}; LOSS=${LOSS:-0}
SIZE=${SIZE:-4096}; RUNS=${RUNS:-3}; UPSTREAM=${UPSTREAM:-hub}
TOOLS=$(realpath tests/interop/tools)

A=fm-ta-$$; B=fm-tb-$$
WORK=$(mktemp -d); chmod 755 "$WORK"
PIDS=(); LINK_PID=
cleanup() {
  stop_pids "${PIDS[@]}" ${LINK_PID:+"$LINK_PID"}
  [ -d "$WORK/postfix" ] && ip netns exec "$A" bash -c ". tests/lib.sh; postfix_stop $WORK/postfix"
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$A"; ip netns add "$B"
ip -n "$A" link set lo up; ip -n "$B" link set lo up
inA() { ip netns exec "$A" "$@"; }
now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
# until_true SECONDS COMMAND...: polls every 20 ms; gives up (exit 1) after SECONDS.
until_true() {
  local end=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || { echo "timed out: $*" >&2; exit 1; }
    sleep 0.02
  done
}

link_up() { # a fresh emulator, its log in $WORK/link.log
  python3 "$LINKEM" --ns-a "$A" --ns-b "$B" --addr-a 10.202.0.1 --addr-b 10.202.0.2 \
    --delay-ms "$DELAY_MS" --rate-kbit "$KBIT" --queue-bytes "$QUEUE" --loss "$LOSS" \
    > "$WORK/link.log" 2>&1 &
  LINK_PID=$!
  until_true 20 sink_reachable
}
sink_reachable() {
  inA python3 -c "import socket; socket.create_connection(('10.202.0.2', $SINK_PORT), timeout=5).close()" 2>/dev/null
}
link_down() { # stops it; prints "bytes_towards_upstream drops"
  kill -TERM "$LINK_PID"; wait "$LINK_PID" 2>/dev/null || true; LINK_PID=
  python3 - "$WORK/link.log" <<'PY'
import ast, re, sys
last = [l for l in open(sys.argv[1]) if " cfg=" in l and "{'pkts'" in l][-1]
stats = [ast.literal_eval(m) for m in re.findall(r"=(\{'pkts'[^}]*\})", last)]
ab, ba = stats
print(ab["bytes"], ab["qdrop"] + ba["qdrop"])
PY
}

SINK_PORT=2525
mkdir -p "$WORK/sink" "$WORK/hub"
# The upstream listens on every address: the emulator's device (and 10.202.0.2) comes
# and goes with it.
if [ "$UPSTREAM" = sink ]; then
  ip netns exec "$B" /usr/bin/python3 "$TOOLS/raw_sink.py" 0.0.0.0 "$SINK_PORT" "$WORK/sink" &
  PIDS+=($!)
  arrived() { find "$WORK/sink" -name '*.eml' | wc -l; }
else
  cat > "$WORK/hub/ferrymail.toml" <<TOML
hostname = "hub.bench.example"
spool = "$WORK/hub/spool"
[[listen]]
addr = "0.0.0.0:$SINK_PORT"
[accept]
relay_networks = ["10.202.0.0/24"]
[link]
mode = "manual"
[dns]
servers = ["127.0.0.1:1"]
TOML
  ip netns exec "$B" "$BIN" --config "$WORK/hub/ferrymail.toml" serve 2> "$WORK/hub/daemon.log" &
  PIDS+=($!)
  for _ in $(seq 100); do "$BIN" --config "$WORK/hub/ferrymail.toml" status >/dev/null 2>&1 && break; sleep 0.1; done
  arrived() {
    python3 -c 'import sqlite3,sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(c.execute("SELECT COUNT(*) FROM message").fetchone()[0])' "$WORK/hub/spool/index.sqlite3"
  }
fi
BASE=0
all_arrived() { [ "$(arrived)" -ge $((BASE + MESSAGES)) ]; }

# The edge: ferrymail in namespace A, manual mode, relaying to the sink.
mkdir -p "$WORK/edge"
cat > "$WORK/edge/ferrymail.toml" <<TOML
hostname = "edge.bench.example"
spool = "$WORK/edge/spool"
[[listen]]
addr = "127.0.0.1:2525"
[upstream]
smarthost = "10.202.0.2:$SINK_PORT"
tls = "none"
[link]
mode = "manual"
[dns]
servers = ["127.0.0.1:1"]
TOML
fm() { inA "$BIN" --config "$WORK/edge/ferrymail.toml" "$@"; }
BODY=$(head -c "$SIZE" /dev/zero | tr '\0' 'x' | fold -w 76)
picked_up() {
  [ "$(fm status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["maildrop"])')" = 0 ]
}

# Postfix in namespace A, its own loopback, relaying to the sink.
PF=$WORK/postfix
inA bash -c ". tests/lib.sh; private_postfix $PF 2526 'relayhost = [10.202.0.2]:$SINK_PORT
defer_transports = smtp
smtp_tls_security_level = none'" >/dev/null
pf_deferred() { find "$PF/queue/deferred" -type f 2>/dev/null | wc -l; }
all_deferred() { [ "$(pf_deferred)" -ge "$MESSAGES" ]; }

link_up   # the daemon probes and starts with a link there
ip netns exec "$A" "$BIN" --config "$WORK/edge/ferrymail.toml" serve 2> "$WORK/edge/daemon.log" &
PIDS+=($!)
for _ in $(seq 100); do fm status >/dev/null 2>&1 && break; sleep 0.1; done
link_down >/dev/null

echo "$MESSAGES x $SIZE bytes to a $UPSTREAM over ${DELAY_MS} ms each way, $KBIT kbit/s, a $QUEUE-byte queue, loss $LOSS"
printf '%-9s %3s %9s %9s %7s %6s\n' sender run seconds limit ratio drops
FM_TIMES=(); PF_TIMES=()
for run in $(seq "$RUNS"); do
  # ferrymail
  BASE=$(arrived)
  for i in $(seq "$MESSAGES"); do
    printf 'Subject: thin %s\n\n%s\n' "$i" "$BODY" | fm send -f edge@edge.bench.example "rcpt$i@far.bench.example"
  done
  until_true 60 picked_up
  link_up
  T0=$(now); fm flush >/dev/null
  until_true 600 all_arrived
  T1=$(now)
  read -r BYTES DROPS < <(link_down)
  LIMIT=$(calc "$BYTES * 8 / ($KBIT * 1000) + 6 * $DELAY_MS / 1000")
  T=$(calc "round($T1 - $T0, 2)")
  FM_TIMES+=("$T")
  printf '%-9s %3s %9s %9s %7s %6s\n' ferrymail "$run" "$T" "$(calc "round($LIMIT, 2)")" \
    "$(calc "round($T / $LIMIT, 2)")" "$DROPS"

  [ "${ONLY:-}" = ferrymail ] && continue
  # Postfix
  BASE=$(arrived)
  inA smtp-source -s 5 -l "$SIZE" -m "$MESSAGES" -f sender@client.bench.example \
    -t rcpt@far.bench.example 127.0.0.1:2526
  until_true 120 all_deferred
  link_up
  T0=$(now); inA postqueue -c "$PF/etc" -f
  until_true 600 all_arrived
  T1=$(now)
  read -r BYTES DROPS < <(link_down)
  LIMIT=$(calc "$BYTES * 8 / ($KBIT * 1000) + 6 * $DELAY_MS / 1000")
  T=$(calc "round($T1 - $T0, 2)")
  PF_TIMES+=("$T")
  printf '%-9s %3s %9s %9s %7s %6s\n' postfix "$run" "$T" "$(calc "round($LIMIT, 2)")" \
    "$(calc "round($T / $LIMIT, 2)")" "$DROPS"
done
[ "${ONLY:-}" = ferrymail ] && exit 0
FM_MED=$(printf '%s\n' "${FM_TIMES[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
PF_MED=$(printf '%s\n' "${PF_TIMES[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
echo "median: ferrymail $FM_MED s, postfix $PF_MED s: ferrymail $(calc "round($PF_MED / $FM_MED, 2)")x faster"
