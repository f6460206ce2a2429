#!/usr/bin/env bash
# Benchmark (not a test): SMTP accept rate, ferrymail against a private stock Postfix on
# the same machine and disk. Postfix's smtp-source sends 4 KiB messages over 20 parallel
# sessions (one message per connection) to each server in turn; both keep every message
# durably in their queue (Postfix puts them on hold: check_client_access static:HOLD).
# Runs alternate, median of three, printed as messages/s and the ratio. Also prints
# ferrymail's idle RSS and RSS with 200 open sessions.
#
# Needs: postfix (installed with debconf "No configuration"), python3. Run as root.
# Usage: bench/smtp_accept.sh [messages-per-run]   (default 3000)
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
MESSAGES=${1:-3000}
SESSIONS=20
SIZE=4096
cargo build --release --quiet --bin ferrymail
FM_BIN=$PWD/target/release/ferrymail

WORK=$(mktemp -d -p "$PWD/target" bench-smtp.XXXXXX)
chmod 755 "$WORK"
FM_PID=""
cleanup() {
  stop_pids $FM_PID
  postfix_stop "$WORK/postfix"
  rm -rf "$WORK"
}
trap cleanup EXIT
PF_PORT=$(free_port); FM_PORT=$(free_port)

# --- a private Postfix instance ---------------------------------------------------
PF=$WORK/postfix
private_postfix "$PF" "$PF_PORT" "smtpd_recipient_restrictions = check_client_access static:HOLD
default_process_limit = 100"

# --- ferrymail --------------------------------------------------------------------
cat > "$WORK/ferrymail.toml" <<TOML
hostname = "ferrymail.bench.example"
spool = "$WORK/ferrymail"
[[listen]]
addr = "127.0.0.1:$FM_PORT"
[link]
mode = "manual"      # keep what is accepted, as Postfix's HOLD does
TOML
"$FM_BIN" --config "$WORK/ferrymail.toml" serve 2>"$WORK/ferrymail.log" &
FM_PID=$!
for _ in $(seq 100); do "$FM_BIN" --config "$WORK/ferrymail.toml" status >/dev/null 2>&1 && break; sleep 0.1; done

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
IDLE_RSS=$(rss_kib "$FM_PID")

run() { # run PORT -> messages/s
  local start end
  start=$(date +%s.%N)
  smtp-source -s "$SESSIONS" -l "$SIZE" -m "$MESSAGES" -f sender@client.bench.example \
    -t rcpt@dest.bench.example "127.0.0.1:$1"
  end=$(date +%s.%N)
  python3 -c "print(f'{$MESSAGES / ($end - $start):.0f}')"
}
median() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

pf_rates=(); fm_rates=()
for round in 1 2 3; do
  pf_rates+=("$(run "$PF_PORT")")
  fm_rates+=("$(run "$FM_PORT")")
done
PF_RATE=$(median "${pf_rates[@]}"); FM_RATE=$(median "${fm_rates[@]}")

# Every accepted message must be durably queued by each.
sleep 2
PF_HELD=$(find "$PF/queue/hold" -type f | wc -l)
FM_QUEUED=$("$FM_BIN" --config "$WORK/ferrymail.toml" queue --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')

# RSS with 200 sessions open at once (each after EHLO).
python3 - "$FM_PORT" "$FM_PID" > "$WORK/rss200" <<'PY'
import socket, sys, time
port, pid = int(sys.argv[1]), sys.argv[2]
conns = []
for _ in range(200):
    c = socket.create_connection(("127.0.0.1", port)); c.recv(512)
    c.sendall(b"EHLO bench.example\r\n"); conns.append(c)
time.sleep(1)
for c in conns: c.recv(4096)
print([l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")][0])
PY
RSS200=$(cat "$WORK/rss200")

echo "SMTP accept, $MESSAGES messages of $SIZE bytes per run, $SESSIONS sessions, one message per connection"
echo "runs (msg/s):  postfix ${pf_rates[*]}   ferrymail ${fm_rates[*]}"
echo "median msg/s:  postfix $PF_RATE   ferrymail $FM_RATE   ratio $(python3 -c "print(f'{$FM_RATE/$PF_RATE:.2f}')")x"
echo "queued:        postfix $PF_HELD held of $((MESSAGES * 3))   ferrymail $FM_QUEUED of $((MESSAGES * 3))"
echo "ferrymail RSS: idle ${IDLE_RSS} KiB, with 200 sessions ${RSS200} KiB"
