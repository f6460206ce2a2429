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
# one-way trips no sender can avoid before the last message is at the upstream: SYN,
# SYN-ACK and the ACK (the server greets once its accept() returns), the banner, EHLO
# and its reply, and the last byte's own trip: 7. The figures: seconds from the flush
# to the last message at the sink, the ratio to the limit, drops at the bottleneck, and
# ferrymail's speed-up over Postfix.
#
# To a hub there is a third sender: a ferrymail edge whose upstream is marked `ferry`,
# so that it speaks XFERRY to the hub (zstd-compressed content; docs/xferry.md). Its
# time is also given against the plain edge's limit in the same run (the uncompressed
# limit). With CORPUS=1 the mail is bench/mail_corpus.py's typical mix (text, HTML,
# replies, attachments) instead of SIZE-byte messages of one repeated letter, and every
# sender is given the same messages over SMTP.
#
# Needs: root, iproute2, python3, postfix (smtp-source), and the emulator (it takes
# --ns-a --ns-b --addr-a --addr-b --delay-ms --rate-kbit --queue-bytes --loss).
# Usage: bench/thin_link_tcp.sh path/to/linkem.py [messages] [path/to/ferrymail]
#        (environment: UPSTREAM=hub|sink DELAY_MS=300 KBIT=1000 QUEUE=65536 LOSS=0
#         SIZE=4096 RUNS=3 CORPUS=0; SENDERS="ferrymail ferry postfix" picks some;
#         LOGS=DIR keeps the edges' daemon logs and each run's emulator log there,
#         STATS=SECONDS has the emulator log its counters that often)
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
. bench/lib.sh
LINKEM=$(realpath "${1:?usage: bench/thin_link_tcp.sh path/to/linkem.py [messages] [ferrymail]}")
MESSAGES=${2:-200}
BIN=$(realpath "${3:-target/release/ferrymail}")
DELAY_MS=${DELAY_MS:-300}; KBIT=${KBIT:-1000}; QUEUE=${QUEUE:-65536}; LOSS=${LOSS:-0}
SIZE=${SIZE:-4096}; RUNS=${RUNS:-3}; UPSTREAM=${UPSTREAM:-hub}; CORPUS=${CORPUS:-0}
if [ "$UPSTREAM" = hub ]; then SENDERS=${SENDERS:-ferrymail ferry postfix}
else SENDERS=${SENDERS:-ferrymail postfix}; fi
TOOLS=$(realpath tests/interop/tools)

A=fm-ta-$$; B=fm-tb-$$
WORK=$(mktemp -d); chmod 755 "$WORK"
PIDS=(); LINK_PID=
cleanup() {
  stop_pids "${PIDS[@]}" ${LINK_PID:+"$LINK_PID"}
  [ -d "$WORK/postfix" ] && ip netns exec "$A" bash -c ". tests/lib.sh; postfix_stop $WORK/postfix"
  netns_gone "$A" "$B"
  [ -n "${LOGS:-}" ] && cp "$WORK"/edge/daemon.log "$WORK"/ferry/daemon.log -t "$LOGS" --backup=numbered 2>/dev/null; rm -rf "$WORK"
}
trap cleanup EXIT
netns_pair "$A" "$B"
inA() { ip netns exec "$A" "$@"; }

link_up() { # a fresh emulator, its log in $WORK/link.log
  python3 "$LINKEM" --ns-a "$A" --ns-b "$B" --addr-a 10.202.0.1 --addr-b 10.202.0.2 \
    --delay-ms "$DELAY_MS" --rate-kbit "$KBIT" --queue-bytes "$QUEUE" --loss "$LOSS" \
    --stats "${STATS:-0}" > "$WORK/link.log" 2>&1 &
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
ferry = true
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

# The edges: ferrymail in namespace A, manual mode, relaying to the upstream; the
# second says `ferry = true` of it.
edge_config() { # NAME PORT FERRY
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1/ferrymail.toml" <<TOML
hostname = "$1.bench.example"
spool = "$WORK/$1/spool"
[[listen]]
addr = "127.0.0.1:$2"
[upstream]
smarthost = "10.202.0.2:$SINK_PORT"
tls = "none"
ferry = $3
[link]
mode = "manual"
[dns]
servers = ["127.0.0.1:1"]
TOML
}
edge_config edge 2525 false
edge_config ferry 2527 true
fm_of() { local name=$1; shift; inA "$BIN" --config "$WORK/$name/ferrymail.toml" "$@"; }
BODY=$(head -c "$SIZE" /dev/zero | tr '\0' 'x' | fold -w 76)
picked_up() { # NAME
  [ "$(fm_of "$1" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["maildrop"])')" = 0 ]
}
if [ "$CORPUS" = 1 ]; then
  read -r _ CORPUS_BYTES _ < <(python3 bench/mail_corpus.py "$WORK/corpus" "$MESSAGES")
fi
# submit PORT: the run's messages over SMTP to the sender listening on PORT.
submit() {
  inA python3 - "$1" "$WORK/corpus" <<'PY'
import email.parser, os, smtplib, sys
port, corpus = int(sys.argv[1]), sys.argv[2]
parser = email.parser.BytesHeaderParser()
with smtplib.SMTP("127.0.0.1", port) as s:
    for name in sorted(os.listdir(corpus)):
        data = open(os.path.join(corpus, name), "rb").read()
        s.sendmail(parser.parsebytes(data)["From"], [parser.parsebytes(data)["To"]], data)
PY
}

# Postfix in namespace A, its own loopback, relaying to the sink.
PF=$WORK/postfix
inA bash -c ". tests/lib.sh; private_postfix $PF 2526 'relayhost = [10.202.0.2]:$SINK_PORT
defer_transports = smtp
smtp_tls_security_level = none'" >/dev/null
pf_deferred() { find "$PF/queue/deferred" -type f 2>/dev/null | wc -l; }
all_deferred() { [ "$(pf_deferred)" -ge "$MESSAGES" ]; }

link_up   # the daemons probe and start with a link there
for name in edge ferry; do
  ip netns exec "$A" "$BIN" --config "$WORK/$name/ferrymail.toml" serve 2> "$WORK/$name/daemon.log" &
  PIDS+=($!)
  for _ in $(seq 100); do fm_of "$name" status >/dev/null 2>&1 && break; sleep 0.1; done
done
link_down >/dev/null

# fill SENDER: the backlog, queued while the link is down.
fill() {
  case "$1" in
    postfix)
      if [ "$CORPUS" = 1 ]; then submit 2526
      else inA smtp-source -s 5 -l "$SIZE" -m "$MESSAGES" -f sender@client.bench.example \
             -t rcpt@far.bench.example 127.0.0.1:2526; fi
      until_true 120 all_deferred ;;
    *)
      local name=edge port=2525
      [ "$1" = ferry ] && name=ferry port=2527
      if [ "$CORPUS" = 1 ]; then submit "$port"
      else
        for i in $(seq "$MESSAGES"); do
          printf 'Subject: thin %s\n\n%s\n' "$i" "$BODY" |
            fm_of "$name" send -f "edge@$name.bench.example" "rcpt$i@far.bench.example"
        done
        until_true 60 picked_up "$name"
      fi ;;
  esac
}
# flush SENDER: the flush, as its operator would start it.
flush() {
  case "$1" in
    postfix) inA postqueue -c "$PF/etc" -f ;;
    ferry) fm_of ferry flush >/dev/null ;;
    *) fm_of edge flush >/dev/null ;;
  esac
}

WHAT="$MESSAGES x $SIZE bytes"; [ "$CORPUS" = 1 ] && WHAT="$MESSAGES typical messages ($CORPUS_BYTES bytes)"
echo "$WHAT to a $UPSTREAM over ${DELAY_MS} ms each way, $KBIT kbit/s, a $QUEUE-byte queue, loss $LOSS"
printf '%-9s %3s %9s %9s %7s %6s %11s\n' sender run seconds limit ratio drops plain-limit
declare -A TIMES
PLAIN_LIMIT=
for run in $(seq "$RUNS"); do
  for sender in $SENDERS; do
    BASE=$(arrived)
    fill "$sender"
    link_up
    T0=$(now); flush "$sender"
    until_true 900 all_arrived
    T1=$(now)
    read -r BYTES DROPS < <(link_down)
    [ -n "${LOGS:-}" ] && { echo "flush $T0 arrived $T1"; cat "$WORK/link.log"; } > "$LOGS/link-$sender-$run.log"
    LIMIT=$(calc "$BYTES * 8 / ($KBIT * 1000) + 7 * $DELAY_MS / 1000")
    [ "$sender" = ferrymail ] && PLAIN_LIMIT=$LIMIT
    T=$(calc "round($T1 - $T0, 2)")
    TIMES[$sender]="${TIMES[$sender]:-} $T"
    VS_PLAIN=-
    [ "$sender" = ferry ] && [ -n "$PLAIN_LIMIT" ] && VS_PLAIN=$(calc "round($T / $PLAIN_LIMIT, 2)")
    printf '%-9s %3s %9s %9s %7s %6s %11s\n' "$sender" "$run" "$T" "$(calc "round($LIMIT, 2)")" \
      "$(calc "round($T / $LIMIT, 2)")" "$DROPS" "$VS_PLAIN"
  done
done
median() { printf '%s\n' $1 | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p"; }
for sender in $SENDERS; do echo "median $sender: $(median "${TIMES[$sender]}") s"; done
if [[ " $SENDERS " = *" postfix "* ]]; then
  PF_MED=$(median "${TIMES[postfix]}")
  for sender in $SENDERS; do
    [ "$sender" = postfix ] && continue
    echo "$sender over postfix: $(calc "round($PF_MED / $(median "${TIMES[$sender]}"), 2)")x faster"
  done
fi
