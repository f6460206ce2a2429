#!/usr/bin/env bash
# Interop with real upstreams: ferrymail delivers a backlog through Postfix's
# smtp-sink (no CHUNKING: the DATA path) and through a private Postfix smtpd (CHUNKING:
# BDAT), and the peers' own logs prove that one SMTP session carried every message and
# which command carried the content. Binds loopback only; stops what it started by pid.
# Usage: tests/interop/upstreams.sh [path/to/ferrymail]   (as root; needs postfix)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh
BIN=$(realpath "${1:-target/debug/ferrymail}")
[ -x "$BIN" ] || { echo "upstreams: $BIN not built"; exit 1; }
for tool in postfix smtp-sink python3; do
  command -v "$tool" >/dev/null || { echo "upstreams: $tool is not installed"; exit 1; }
done
N=50

WORK=$(mktemp -d)
chmod 755 "$WORK"
PIDS=()
cleanup() {
  stop_pids "${PIDS[@]}"
  postfix_stop "$WORK/postfix"
  rm -rf "$WORK"
}
trap cleanup EXIT

# An edge in manual mode relaying through 127.0.0.1:$2, with $N messages queued.
edge() { # edge NAME PORT
  local dir=$WORK/$1
  mkdir -p "$dir"
  cat > "$dir/ferrymail.toml" <<TOML
hostname = "edge.interop.example"
spool = "$dir/spool"
[[listen]]
addr = "127.0.0.1:$(free_port)"
[upstream]
smarthost = "127.0.0.1:$2"
tls = "none"
[link]
mode = "manual"
TOML
  for i in $(seq "$N"); do
    printf 'Subject: interop %s\n\nmessage %s\n' "$i" "$i" \
      | "$BIN" --config "$dir/ferrymail.toml" send -f "edge@edge.interop.example" "rcpt$i@far.interop.example"
  done
  "$BIN" --config "$dir/ferrymail.toml" serve 2> "$dir/daemon.log" &
  PIDS+=($!)
  for _ in $(seq 100); do "$BIN" --config "$dir/ferrymail.toml" status >/dev/null 2>&1 && break; sleep 0.1; done
}
fm() { local name=$1; shift; "$BIN" --config "$WORK/$name/ferrymail.toml" "$@"; }
queued() { fm "$1" queue --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
# emptied NAME: waits (bounded) until the queue is empty: `flush --wait` returns once
# every outcome is recorded, and finished messages leave the spool just after.
emptied() {
  local _
  for _ in $(seq 100); do
    [ "$(queued "$1")" = 0 ] && return 0
    sleep 0.1
  done
  return 1
}
# picked_up NAME: waits (bounded) until the daemon has taken every drop into its queue
# proper; a listing taken while pickup runs can see a message in neither place.
picked_up() {
  local _
  for _ in $(seq 100); do
    [ "$(fm "$1" queue --json | python3 -c 'import json,sys; print(sum(e["location"] == "queue" for e in json.load(sys.stdin)))')" = "$N" ] && return 0
    sleep 0.1
  done
  return 1
}

# --- smtp-sink: the DATA path -------------------------------------------------------
SINK=$(free_port)
smtp-sink -u postfix -v "127.0.0.1:$SINK" 100 2> "$WORK/sink.log" &
PIDS+=($!)
sleep 0.3
edge sink "$SINK"
check "smtp-sink: all $N queued before the flush" picked_up sink
check "smtp-sink: flush --wait delivers everything" fm sink flush --wait
check "smtp-sink: the edge's queue is empty" emptied sink
check "smtp-sink: one session (one EHLO) carried them" test "$(grep -c 'smtp-sink: EHLO' "$WORK/sink.log")" = 1
check "smtp-sink: $N transactions" test "$(grep -c 'smtp-sink: MAIL FROM' "$WORK/sink.log")" = "$N"
check "smtp-sink: content went by DATA (no CHUNKING offered)" test "$(grep -c 'smtp-sink: DATA' "$WORK/sink.log")" = "$N"

# --- a private Postfix smtpd: BDAT --------------------------------------------------
PF=$WORK/postfix
PF_PORT=$(free_port)
private_postfix "$PF" "$PF_PORT" 'smtpd_recipient_restrictions = check_client_access static:HOLD'
edge pf "$PF_PORT"
check "postfix: flush --wait delivers everything" fm pf flush --wait
check "postfix: the edge's queue is empty" emptied pf
for _ in $(seq 50); do [ "$(find "$PF/queue/hold" -type f | wc -l)" = "$N" ] && break; sleep 0.1; done
check "postfix: all $N are in its queue" test "$(find "$PF/queue/hold" -type f | wc -l)" = "$N"
# Postfix's smtpd logs one line per session with its command counts.
for _ in $(seq 50); do grep -q "mail=$N" "$PF/maillog" 2>/dev/null && break; sleep 0.1; done
SESSION=$(grep 'disconnect from' "$PF/maillog" | grep 'mail=' || true)
echo "     postfix saw: ${SESSION##*]: }"
check "postfix: one session carried all $N" test "$(printf '%s\n' "$SESSION" | grep -c .)" = 1
check "postfix: $N transactions in it" grep -q "mail=$N " <<<"$SESSION"
check "postfix: content went by BDAT" grep -q "bdat=$N " <<<"$SESSION"

if [ "$failed" -gt 0 ]; then
  echo "--- smtp-sink log"; tail -20 "$WORK/sink.log"
  echo "--- postfix log"; tail -20 "$PF/maillog" 2>/dev/null || true
  for d in sink pf; do echo "--- $d daemon"; tail -20 "$WORK/$d/daemon.log"; done
fi
echo "upstreams: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
