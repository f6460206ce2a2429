#!/usr/bin/env bash
# Benchmark (not a test): a station collecting its held mail over ODMR (RFC 2645) on a
# thin, long link of kernel TCP. The station and its hub are in two network namespaces
# joined by a user-space link emulator (a TUN device in each namespace; its script is
# the first argument): 300 ms each way (600 ms round trip), 1 Mbit/s, a 64 KiB
# bottleneck queue. The hub holds MESSAGES messages of about 4 KiB for the station;
# the station is told to collect (`flush`), and we measure from then to the last
# message at the station's mailbox server, against the physical limit: the bytes that
# must cross ÷ the rate, plus the set-up round trips (TCP, banner, EHLO, AUTH, ATRN,
# the station's greeting and the hub's EHLO). With OUTBOUND > 0 the station also has
# that many messages of its own for the hub at the same time, which go on their own
# connection while the collection runs: the run reports when each side finished.
#
# Needs: root, iproute2, python3, and the emulator (it takes --ns-a --ns-b --addr-a
# --addr-b --delay-ms --rate-kbit --queue-bytes).
# Usage: bench/odmr_link.sh path/to/linkem.py [held] [path/to/ferrymail] [outbound]
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
LINKEM=$(realpath "${1:?usage: bench/odmr_link.sh path/to/linkem.py [messages] [ferrymail]}")
MESSAGES=${2:-200}
BIN=$(realpath "${3:-target/release/ferrymail}")
OUTBOUND=${4:-0}
DELAY_MS=300; KBIT=1000
TOOLS=$(realpath tests/interop/tools)

A=fm-bs-$$; B=fm-bh-$$
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  stop_pids "${PIDS[@]}"
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$A"; ip netns add "$B"
ip -n "$A" link set lo up; ip -n "$B" link set lo up
python3 "$LINKEM" --ns-a "$A" --ns-b "$B" --addr-a 10.201.0.1 --addr-b 10.201.0.2 \
  --delay-ms "$DELAY_MS" --rate-kbit "$KBIT" --queue-bytes 65536 > "$WORK/linkem.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do ip -n "$A" addr | grep -q 10.201.0.1 && break; sleep 0.1; done

echo "benchmark-secret" > "$WORK/secret"; chmod 600 "$WORK/secret"
mkdir -p "$WORK/hub" "$WORK/station" "$WORK/store"
cat > "$WORK/hub/ferrymail.toml" <<TOML
hostname = "hub.bench.example"
spool = "$WORK/hub/spool"
[[listen]]
addr = "127.0.0.1:2525"
[[listen]]
addr = "10.201.0.2:2525"
[[listen]]
addr = "10.201.0.2:366"
kind = "odmr"
require_tls = false
[accept]
relay_networks = ["127.0.0.0/8", "10.201.0.0/24"]
[[route]]
domains = ["field.example"]
via = "odmr"
[[route]]
domains = ["far.example"]
hold = true                              # the station's outbound mail stops here
[[odmr_user]]
name = "station"
password_file = "$WORK/secret"
domains = ["field.example"]
[dns]
servers = ["127.0.0.1:1"]
TOML
cat > "$WORK/station/ferrymail.toml" <<TOML
hostname = "station.bench.example"
spool = "$WORK/station/spool"
[[listen]]
addr = "127.0.0.1:2525"
[upstream]
smarthost = "10.201.0.2:2525"
tls = "none"
[odmr]
hub = "10.201.0.2:366"
tls = "none"
username = "station"
password_file = "$WORK/secret"
domains = ["field.example"]
[[route]]
name = "store"
domains = ["field.example"]
via = "127.0.0.1:2600"
tls = "none"
[route.link]
mode = "auto"
[link]
mode = "manual"
[dns]
servers = ["127.0.0.1:1"]
TOML
fm() { local name=$1; shift; "$BIN" --config "$WORK/$name/ferrymail.toml" "$@"; }
ip netns exec "$B" "$BIN" --config "$WORK/hub/ferrymail.toml" serve 2> "$WORK/hub/daemon.log" &
PIDS+=($!)
ip netns exec "$A" python3 "$TOOLS/raw_sink.py" 127.0.0.1 2600 "$WORK/store" &
PIDS+=($!)
for _ in $(seq 100); do fm hub status >/dev/null 2>&1 && break; sleep 0.1; done

ip netns exec "$B" python3 - "$MESSAGES" <<'PY'
import smtplib, sys
line = "x" * 76
body = "\r\n".join([line] * 53)          # about 4 KiB with the headers
with smtplib.SMTP("127.0.0.1", 2525) as s:
    for i in range(int(sys.argv[1])):
        s.sendmail("sender@elsewhere.example", [f"rcpt{i}@field.example"],
                   f"Subject: bench {i}\r\n\r\nmarker-{i}\r\n{body}\r\n")
PY
for _ in $(seq 300); do
  n=$(fm hub queue --json | python3 -c 'import json,sys; print(sum(r["state"]=="held" for e in json.load(sys.stdin) for r in e["recipients"]))')
  [ "$n" = "$MESSAGES" ] && break; sleep 0.2
done
BYTES=$( (du -cb "$WORK"/hub/spool/queue/* 2>/dev/null || echo "0 total") | tail -1 | cut -f1)

ip netns exec "$A" "$BIN" --config "$WORK/station/ferrymail.toml" serve 2> "$WORK/station/daemon.log" &
PIDS+=($!)
for _ in $(seq 100); do fm station status >/dev/null 2>&1 && break; sleep 0.1; done
BODY=$(head -c 4000 /dev/zero | tr '\0' 'y' | fold -w 76)
for i in $(seq 1 "$OUTBOUND"); do
  printf 'Subject: out %s\n\n%s\n' "$i" "$BODY" | fm station send -f me@station.bench.example "o$i@far.example"
done
for _ in $(seq 300); do [ "$(ls "$WORK/station/spool/maildrop/new" | wc -l)" = 0 ] && break; sleep 0.1; done
at_hub() { fm hub queue --json | python3 -c 'import json,sys; print(sum(r["address"].endswith("@far.example") for e in json.load(sys.stdin) for r in e["recipients"]))'; }
START=$(date +%s.%N)
fm station flush >/dev/null
IN_DONE=""; OUT_DONE=""
[ "$MESSAGES" = 0 ] && IN_DONE=$START
[ "$OUTBOUND" = 0 ] && OUT_DONE=$START
until [ -n "$IN_DONE" ] && [ -n "$OUT_DONE" ]; do
  sleep 0.05
  [ -z "$IN_DONE" ] && [ "$(ls "$WORK/store" | grep -c '\.eml$')" -ge "$MESSAGES" ] && IN_DONE=$(date +%s.%N)
  [ -z "$OUT_DONE" ] && [ "$(at_hub)" -ge "$OUTBOUND" ] && OUT_DONE=$(date +%s.%N)
  [ "$(python3 -c "print(int($(date +%s.%N) - $START))")" -gt 600 ] && { echo "timed out"; exit 1; }
done
END=$(python3 -c "print(max($IN_DONE, $OUT_DONE))")
echo "odmr_link: outbound $OUTBOUND done after $(python3 -c "print(round($OUT_DONE - $START, 2))") s; held $MESSAGES collected after $(python3 -c "print(round($IN_DONE - $START, 2))") s"
python3 - "$START" "$END" "$BYTES" "$KBIT" "$DELAY_MS" "$MESSAGES" <<'PY'
import sys
start, end, size, kbit, delay, n = map(float, sys.argv[1:])
took = end - start
rtt = 2 * delay / 1000
# SMTP on the wire: each message's bytes plus commands and replies (~120 B); set-up:
# TCP, banner, EHLO, AUTH (2), ATRN, greeting, EHLO = 8 round trips.
wire = size + n * 120
limit = wire * 8 / (kbit * 1000) + 8 * rtt
print(f"odmr_link: {int(n)} held messages, {size / 1024:.0f} KiB stored, collected in {took:.2f} s; "
      f"physical limit {limit:.2f} s; {took / limit:.2f}x")
PY
grep -E "drop|stats" "$WORK/linkem.log" | tail -2 || true
