#!/usr/bin/env bash
# Benchmark (not a test): flush a backlog over an emulated long thin link (
# 300 ms each way, 1 Mbit/s, shared by every connection: bench/link_relay.py), from
# ferrymail and from a private stock Postfix (defer_transports = smtp, then
# postqueue -f), to the same upstream: a ferrymail hub, which offers PIPELINING and
# CHUNKING. Prints both times, the physical limit (the bytes that crossed ÷ the
# bandwidth, plus the session's set-up: TCP handshake, banner, EHLO, the last reply:
# six one-way trips) and the ratios. Then the same flushes on loopback, as messages/s.
#
# Needs: postfix (debconf "No configuration"), python3. Run as root.
# Usage: bench/thin_link.sh [messages]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
. bench/lib.sh
MESSAGES=${1:-200}
LOOPBACK=${LOOPBACK_MESSAGES:-2000}
SIZE=4096; DELAY_MS=300; KBIT=1000
bench_setup thin

wait_count() { # wait_count NAME N
  until [ "$(count "$1")" -ge "$2" ]; do sleep 0.05; done
}
relay() { # relay NAME LISTEN-PORT UPSTREAM-PORT DELAY KBIT
  python3 bench/link_relay.py --listen "127.0.0.1:$2" --upstream "127.0.0.1:$3" \
    --delay-ms "$4" --kbit "$5" --stats "$WORK/$1.json" &
  PIDS+=($!)
  RELAY_PID=$!
  for _ in $(seq 50); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $2))" 2>/dev/null && break; sleep 0.1; done
}
relay_stop() { kill -TERM "$RELAY_PID"; wait "$RELAY_PID" 2>/dev/null || true; }
stat_of() { python3 -c "import json; print(json.load(open('$WORK/$1.json'))['$2'])"; }

# --- the upstream: a ferrymail hub that only queues ---------------------------------
HUB=$(free_port)
fm_config hub "$HUB" '[accept]
relay_networks = ["127.0.0.0/8"]
[link]
mode = "manual"'
fm_start hub

# --- ferrymail, over the link ---------------------------------------------------------
BODY=$(head -c "$SIZE" /dev/zero | tr '\0' 'x' | fold -w 76)
fm_fill() { # fm_fill NAME N
  for i in $(seq "$2"); do
    printf 'Subject: thin %s\n\n%s\n' "$i" "$BODY" | fm "$1" send -f edge@edge.bench.example "rcpt$i@far.bench.example"
  done
}
R1=$(free_port)
fm_config edge "$(free_port)" "[upstream]
smarthost = \"127.0.0.1:$R1\"
tls = \"none\"
[link]
mode = \"manual\""
fm_fill edge "$MESSAGES"
fm_start edge
until [ "$(count edge)" -ge "$MESSAGES" ]; do sleep 0.1; done
relay fm "$R1" "$HUB" "$DELAY_MS" "$KBIT"
BEFORE=$(count hub)
T0=$(now); fm edge flush --wait >/dev/null; T1=$(now)
wait_count hub $((BEFORE + MESSAGES))
relay_stop
FM_TIME=$(calc "$T1 - $T0")
FM_BYTES=$(stat_of fm bytes_up)

# --- Postfix, over the same link ------------------------------------------------------
PF=$WORK/postfix; PF_PORT=$(free_port); R2=$(free_port)
private_postfix "$PF" "$PF_PORT" "relayhost = [127.0.0.1]:$R2
defer_transports = smtp"
pf_deferred() { find "$PF/queue/deferred" -type f 2>/dev/null | wc -l; }
pf_fill() { # pf_fill N: queue N messages of SIZE bytes, then wait until all are deferred
  smtp-source -s 5 -l "$SIZE" -m "$1" -f sender@client.bench.example -t rcpt@far.bench.example "127.0.0.1:$PF_PORT"
  until [ "$(pf_deferred)" -ge "$1" ]; do sleep 0.2; done
}
pf_fill "$MESSAGES"
relay pf "$R2" "$HUB" "$DELAY_MS" "$KBIT"
BEFORE=$(count hub)
T0=$(now); postqueue -c "$PF/etc" -f; wait_count hub $((BEFORE + MESSAGES)); T1=$(now)
relay_stop
PF_TIME=$(calc "$T1 - $T0")
PF_BYTES=$(stat_of pf bytes_up)

RATE=$(calc "$KBIT * 1000 / 8")
SETUP=$(calc "6 * $DELAY_MS / 1000")
FM_LIMIT=$(calc "round($FM_BYTES / $RATE + $SETUP, 2)")
PF_LIMIT=$(calc "round($PF_BYTES / $RATE + $SETUP, 2)")
echo "thin link: $MESSAGES messages of $SIZE bytes, ${DELAY_MS} ms each way, ${KBIT} kbit/s"
printf '  ferrymail  %6.2f s   %7d bytes   limit %5.2f s   %.2fx the limit\n' "$FM_TIME" "$FM_BYTES" "$FM_LIMIT" "$(calc "$FM_TIME / $FM_LIMIT")"
printf '  postfix    %6.2f s   %7d bytes   limit %5.2f s   %.2fx the limit\n' "$PF_TIME" "$PF_BYTES" "$PF_LIMIT" "$(calc "$PF_TIME / $PF_LIMIT")"
printf '  ferrymail is %.2fx faster than postfix\n' "$(calc "$PF_TIME / $FM_TIME")"

# --- the same flushes on loopback: to smtp-sink, and to the hub -----------------------
# smtp-sink answers at once and keeps nothing (it offers no CHUNKING: DATA is used); the
# hub commits every message to disk before its 250.
SINK=$(free_port)
smtp-sink -u postfix "127.0.0.1:$SINK" 100 &
PIDS+=($!)
sleep 0.3
# Both set RESULT (msg/s): they start daemons, so they cannot run in $(...).
loopback() { # loopback EDGE-NAME PORT: ferrymail
  fm_config "$1" "$(free_port)" "[upstream]
smarthost = \"127.0.0.1:$2\"
tls = \"none\"
[link]
mode = \"manual\""
  fm_fill "$1" "$LOOPBACK"
  fm_start "$1"
  until [ "$(count "$1")" -ge "$LOOPBACK" ]; do sleep 0.1; done
  local t0 t1; t0=$(now); fm "$1" flush --wait >/dev/null; t1=$(now)
  RESULT=$(calc "round($LOOPBACK / ($t1 - $t0))")
}
pf_loopback() { # pf_loopback PORT DONE-CMD...: postfix
  local port=$1; shift
  postconf -c "$PF/etc" -e "relayhost = [127.0.0.1]:$port"
  postfix -c "$PF/etc" reload >/dev/null 2>&1
  pf_fill "$LOOPBACK"
  local t0 t1; t0=$(now); postqueue -c "$PF/etc" -f
  until "$@"; do sleep 0.05; done
  t1=$(now)
  RESULT=$(calc "round($LOOPBACK / ($t1 - $t0))")
}
pf_empty() { [ "$(find "$PF/queue/deferred" "$PF/queue/active" "$PF/queue/incoming" -type f | wc -l)" = 0 ]; }
loopback edge_sink "$SINK"; FM_SINK=$RESULT
pf_loopback "$SINK" pf_empty; PF_SINK=$RESULT
loopback edge_hub "$HUB"; FM_HUB=$RESULT
HUB_BEFORE=$(count hub)
hub_has_all() { [ "$(count hub)" -ge $((HUB_BEFORE + LOOPBACK)) ]; }
pf_loopback "$HUB" hub_has_all; PF_HUB=$RESULT
echo "loopback flush, $LOOPBACK messages (msg/s):"
echo "  to smtp-sink:          ferrymail $FM_SINK   postfix $PF_SINK   ($(calc "round($FM_SINK / $PF_SINK, 2)")x)"
echo "  to a ferrymail hub:    ferrymail $FM_HUB   postfix $PF_HUB   ($(calc "round($FM_HUB / $PF_HUB, 2)")x)"
