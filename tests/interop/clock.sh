#!/usr/bin/env bash
# The wall clock stepping back while the daemon runs. libfaketime (LD_PRELOAD, its
# offset read from a file the script rewrites; the monotonic clock left alone) sets the
# daemon's wall clock back a year under it: a retry that the step pushes a year away
# must come back within retry.max, without a restart. smtp-sink answers 4xx to RCPT, so
# the message is deferred for retry.initial (1h) first. Binds loopback only; stops what
# it started by pid.
# Usage: tests/interop/clock.sh [path/to/ferrymail]   (needs faketime and postfix)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh
BIN=$(realpath "${1:-target/debug/ferrymail}")
[ -x "$BIN" ] || { echo "clock: $BIN not built"; exit 1; }
LIBFAKETIME=$(find /usr/lib -name libfaketime.so.1 2>/dev/null | head -1)
[ -n "$LIBFAKETIME" ] || { echo "clock: libfaketime is not installed (Debian: faketime)"; exit 1; }
command -v smtp-sink >/dev/null || { echo "clock: smtp-sink is not installed"; exit 1; }

WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  stop_pids "${PIDS[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

SINK=$(free_port)
smtp-sink -u postfix -r RCPT "127.0.0.1:$SINK" 10 2> "$WORK/sink.log" &
PIDS+=($!)
cat > "$WORK/ferrymail.toml" <<TOML
hostname = "edge.clock.example"
spool = "$WORK/spool"
[[listen]]
addr = "127.0.0.1:$(free_port)"
[upstream]
smarthost = "127.0.0.1:$SINK"
tls = "none"
[link]
probe_interval = "1s"
[retry]
initial = "1h"
max = "4h"
TOML
echo "+0" > "$WORK/offset"
fm() { "$BIN" --config "$WORK/ferrymail.toml" "$@"; }
LD_PRELOAD=$LIBFAKETIME FAKETIME_TIMESTAMP_FILE=$WORK/offset FAKETIME_NO_CACHE=1 \
  DONT_FAKE_MONOTONIC=1 "$BIN" --config "$WORK/ferrymail.toml" serve 2> "$WORK/daemon.log" &
PIDS+=($!)
for _ in $(seq 100); do fm status >/dev/null 2>&1 && break; sleep 0.1; done
printf 'Subject: later\n\nx\n' | fm send -f me@edge.clock.example you@far.clock.example

# next_attempt_at of the one recipient, once it has been attempted.
due() {
  fm queue --json | python3 -c 'import json,sys
q = [r for e in json.load(sys.stdin) for r in e["recipients"] if r["attempts"] > 0]
print(q[0]["next_attempt_at"] if q else "")'
}
deferred() {
  local _
  for _ in $(seq 200); do [ -n "$(due)" ] && return 0; sleep 0.1; done
  return 1
}
check "the message is deferred by the upstream's 4xx" deferred
FIRST=$(due)
NOW=$(date +%s)
check "its retry is an hour away" test "$FIRST" -gt $((NOW + 3000))

echo "-365d" > "$WORK/offset"
YEAR_AGO=$((NOW - 365 * 86400))
back_within_max() {
  local _ at
  for _ in $(seq 300); do
    at=$(due)
    [ -n "$at" ] && [ "$at" -le $((YEAR_AGO + 4 * 3600 + 120)) ] && return 0
    sleep 0.1
  done
  return 1
}
check "set back a year, the retry comes back within retry.max" back_within_max
check "the daemon noticed the clock go back" grep -q "the wall clock went back" "$WORK/daemon.log"

if [ "$failed" -gt 0 ]; then
  echo "--- daemon"; tail -30 "$WORK/daemon.log"
  fm queue || true
fi
echo "clock: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
