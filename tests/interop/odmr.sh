#!/usr/bin/env bash
# fetchmail's ODMR client (RFC 2645) against our hub: mail held on a `via = "odmr"`
# route for field.example is collected by `fetchmail --protocol ODMR` (CRAM-MD5, then
# ATRN) and handed by it to a sink on loopback, which refuses one recipient. Every other
# recipient arrives, the refused one bounces (and only it), and the hub's queue holds
# nothing more for the station. Binds loopback only; stops what it started by pid.
# Usage: tests/interop/odmr.sh [path/to/ferrymail]   (needs fetchmail and python3)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh
BIN=$(realpath "${1:-target/debug/ferrymail}")
[ -x "$BIN" ] || { echo "odmr: $BIN not built"; exit 1; }
command -v fetchmail >/dev/null || { echo "odmr: fetchmail is not installed"; exit 1; }
TOOLS=$(realpath tests/interop/tools)

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  stop_pids "${PIDS[@]}"
  rm -rf "$WORK"
}
trap cleanup EXIT

mkdir "$WORK/out"
SINK=$(free_port); SMTP=$(free_port); ODMR=$(free_port)
python3 "$TOOLS/raw_sink.py" 127.0.0.1 "$SINK" "$WORK/out" gone@ &
PIDS+=($!)
echo "fetch-me" > "$WORK/station.secret"; chmod 600 "$WORK/station.secret"
cat > "$WORK/ferrymail.toml" <<TOML
hostname = "hub.odmr.test"
spool = "$WORK/spool"
[[listen]]
addr = "127.0.0.1:$SMTP"
[[listen]]
addr = "127.0.0.1:$ODMR"
kind = "odmr"
require_tls = false
[[route]]
domains = ["field.example"]
via = "odmr"
[[odmr_user]]
name = "station"
password_file = "$WORK/station.secret"
domains = ["field.example"]
[dns]
servers = ["127.0.0.1:1"]
TOML
fm() { "$BIN" --config "$WORK/ferrymail.toml" "$@"; }
"$BIN" --config "$WORK/ferrymail.toml" serve 2> "$WORK/daemon.log" &
PIDS+=($!)
for _ in $(seq 100); do fm status >/dev/null 2>&1 && break; sleep 0.1; done

python3 - "$SMTP" <<'PY'
import smtplib, sys
with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s:
    for i, rcpts in enumerate([["a@field.example", "b@field.example"], ["gone@field.example", "c@field.example"], ["d@field.example"]]):
        s.sendmail("sender@elsewhere.example", rcpts, f"Subject: held {i}\r\n\r\nfor the station\r\n")
PY
held() { fm queue --json | python3 -c 'import json,sys; print(sum(r["state"]=="held" for e in json.load(sys.stdin) for r in e["recipients"]))'; }
for _ in $(seq 100); do [ "$(held)" = 5 ] && break; sleep 0.1; done
check "5 recipients held for the station" test "$(held)" = 5

cat > "$WORK/fetchmailrc" <<RC
set no syslog
poll 127.0.0.1 protocol ODMR port $ODMR:
  user "station" password "fetch-me"
  fetchdomains field.example
  smtphost 127.0.0.1/$SINK
RC
chmod 600 "$WORK/fetchmailrc"
set +e
HOME=$WORK FETCHMAILHOME=$WORK timeout 60 fetchmail -f "$WORK/fetchmailrc" -v --nodetach > "$WORK/fetchmail.log" 2>&1
rc=$?
set -e
check "fetchmail --protocol ODMR ran (exit $rc)" test "$rc" -le 1
check "fetchmail turned the connection round" grep -q "Turnaround now" "$WORK/fetchmail.log"
got=$(sort "$WORK/out/rcpts" 2>/dev/null | tr '\n' ' ')
check "a, b, c and d arrived at the sink ($got)" test "$got" = "a@field.example b@field.example c@field.example d@field.example "
check "3 messages arrived" test "$(ls "$WORK/out" | grep -c '\.eml$')" = 3
for _ in $(seq 100); do grep -q "bounced.*gone@field.example" "$WORK/daemon.log" && break; sleep 0.1; done
check "the refused recipient bounced" grep -q "bounced.*gone@field.example" "$WORK/daemon.log"
check "nothing is held for the station any more" test "$(held)" = 0
check "the hub logged the turn" grep -q "ODMR turn done" "$WORK/daemon.log"

if [ "$failed" -gt 0 ]; then
  echo "== fetchmail"; cat "$WORK/fetchmail.log"; echo "== daemon"; tail -30 "$WORK/daemon.log"
fi
echo "odmr: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
