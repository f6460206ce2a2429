#!/usr/bin/env bash
# Benchmark (not a test): how fast ferrymail uses a link that comes back. A
# backlog waits at an edge while its link is down (the emulated link, 300 ms
# each way at 1 Mbit/s, bench/link_relay.py, is not running: connections are refused).
# Then the link comes up, and we measure the time to the first byte sent, and for the
# whole backlog the share of the window (link up to the last message at the hub) that
# carried payload (the bytes that crossed ÷ the bandwidth), and the same share from the
# first byte on (without the TCP handshake and banner). Twice: the edge in `auto`
# mode finding the link by its probe (probe_interval = 1s), and in `manual` mode told
# by the trigger file the moment the link is up.
#
# Needs: python3. Usage: bench/link_up.sh [messages]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
. bench/lib.sh
MESSAGES=${1:-200}
SIZE=4096; DELAY_MS=300; KBIT=1000
bench_setup linkup

BODY=$(head -c "$SIZE" /dev/zero | tr '\0' 'x' | fold -w 76)

HUB=$(free_port)
fm_config hub "$HUB" '[accept]
relay_networks = ["127.0.0.0/8"]
[link]
mode = "manual"'
fm_start hub

# run NAME LINK-KEYS [TRIGGER]: sets RESULT to "first-byte-s window-s payload-share
# payload-share-from-the-first-byte".
# (It starts daemons, so it cannot run in $(...).)
run() {
  local name=$1 relay_port; relay_port=$(free_port)
  fm_config "$name" "$(free_port)" "[upstream]
smarthost = \"127.0.0.1:$relay_port\"
tls = \"none\"
[link]
probe_interval = \"1s\"
$2"
  for i in $(seq "$MESSAGES"); do
    printf 'Subject: link up %s\n\n%s\n' "$i" "$BODY" | fm "$name" send -f edge@edge.bench.example "rcpt$i@far.bench.example"
  done
  fm_start "$name"
  until [ "$(count "$name")" -ge "$MESSAGES" ]; do sleep 0.1; done
  sleep 3 # down for a while: probes fail, the gate is closed
  local before; before=$(count hub)
  python3 bench/link_relay.py --listen "127.0.0.1:$relay_port" --upstream "127.0.0.1:$HUB" \
    --delay-ms "$DELAY_MS" --kbit "$KBIT" --stats "$WORK/$name.json" &
  local relay=$!
  PIDS+=("$relay")
  until python3 -c "import socket; socket.create_connection(('127.0.0.1', $relay_port))" 2>/dev/null; do sleep 0.01; done
  local up; up=$(now)
  if [ -n "${3:-}" ]; then printf up > "$3"; fi
  until [ "$(count hub)" -ge $((before + MESSAGES)) ]; do sleep 0.05; done
  local done_at; done_at=$(now)
  kill -TERM "$relay"; wait "$relay" 2>/dev/null || true
  RESULT=$(python3 - "$WORK/$name.json" "$up" "$done_at" "$KBIT" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
up, done, rate = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]) * 1000 / 8
window = done - up
payload = s['bytes_up'] / rate
session = done - s['first_up_at']
print(f"{s['first_up_at'] - up:.2f} {window:.2f} {payload / window:.2f} {payload / session:.2f}")
PY
)
}

run probe ''
read -r PROBE_FIRST PROBE_WINDOW PROBE_SHARE PROBE_BUSY <<<"$RESULT"
TRIGGER=$WORK/flush-trigger
run trigger "mode = \"manual\"
trigger_file = \"$TRIGGER\"" "$TRIGGER"
read -r TRIG_FIRST TRIG_WINDOW TRIG_SHARE TRIG_BUSY <<<"$RESULT"
echo "link up, $MESSAGES waiting messages of $SIZE bytes, ${DELAY_MS} ms each way, ${KBIT} kbit/s"
echo "  probe (auto, probe_interval 1s): first byte after ${PROBE_FIRST} s; all sent in ${PROBE_WINDOW} s, ${PROBE_SHARE} of it carrying payload (${PROBE_BUSY} from the first byte)"
echo "  trigger file (manual):           first byte after ${TRIG_FIRST} s; all sent in ${TRIG_WINDOW} s, ${TRIG_SHARE} of it carrying payload (${TRIG_BUSY} from the first byte)"
