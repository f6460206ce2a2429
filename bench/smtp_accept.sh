#!/usr/bin/env bash
# Benchmark (not a test): SMTP accept rate, ferrymail against a private stock Postfix on
# the same machine and disk. Postfix's smtp-source sends 4 KiB messages over 20 parallel
# sessions (one message per connection) to each server in turn; both keep every message
# durably in their queue (Postfix puts them on hold: check_client_access static:HOLD,
# logging to a file through postlogd).
#
# So that the figures tell the truth about the two servers and nothing else:
# - the order alternates (Postfix first in odd rounds, ferrymail first in even ones),
#   and the disk is synced before every run, so neither pays for the other's writeback;
# - the CPU time the idle server used during the other's run is printed beside each run
#   (an idle server that spins steals a core from the one being measured: a maildrop
#   watcher that once spun did, and made Postfix look half as fast here: 571 msg/s
#   against the 1,400-1,650 it reaches on this machine);
# - each server first takes one warm-up run, printed but not counted: a fresh spool's
#   first few thousand messages are slower for both (ferrymail's SQLite log file grows
#   until its first checkpoint; Postfix's processes start);
# - every run is printed, then the medians and their ratio.
# Also prints ferrymail's idle RSS and its RSS with 200 sessions open.
#
# Needs: postfix (installed with debconf "No configuration"), python3. Run as root.
# Usage: bench/smtp_accept.sh [messages-per-run] [rounds]   (default 3000, 4)
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
. bench/lib.sh
MESSAGES=${1:-3000}
ROUNDS=${2:-4}
SESSIONS=20
SIZE=4096
bench_setup smtp
PF_PORT=$(free_port); FM_PORT=$(free_port)

# --- a private Postfix instance ---------------------------------------------------
PF=$WORK/postfix
private_postfix "$PF" "$PF_PORT" "smtpd_recipient_restrictions = check_client_access static:HOLD
default_process_limit = 100"

# --- ferrymail --------------------------------------------------------------------
fm_config fm "$FM_PORT" '[link]
mode = "manual"      # keep what is accepted, as the HOLD does for Postfix'
fm_start fm
FM_PID=${PIDS[-1]}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
IDLE_RSS=$(rss_kib "$FM_PID")

# cpu_ticks PID...: user+system clock ticks used so far by those processes.
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
postfix_pids() { pgrep -d ' ' -f "$PF/" || true; }

# run PORT OTHER-PIDS...: sends the messages; sets RATE (msg/s) and IDLE_CPU (the CPU
# seconds the other server's processes used meanwhile).
run() {
  local port=$1; shift
  sync
  local before start end after
  before=$(cpu_ticks "$@")
  start=$(now)
  smtp-source -s "$SESSIONS" -l "$SIZE" -m "$MESSAGES" -f sender@client.bench.example \
    -t rcpt@dest.bench.example "127.0.0.1:$port"
  end=$(now)
  after=$(cpu_ticks "$@")
  RATE=$(calc "round($MESSAGES / ($end - $start))")
  IDLE_CPU=$(calc "round(($after - $before) / $(getconf CLK_TCK), 2)")
}
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

pf_rates=(); fm_rates=()
echo "run               msg/s   CPU seconds the idle server used meanwhile"
# shellcheck disable=SC2046
run "$PF_PORT" "$FM_PID"
printf 'warm-up postfix   %6s   ferrymail %s   (not counted)\n' "$RATE" "$IDLE_CPU"
# shellcheck disable=SC2046
run "$FM_PORT" $(postfix_pids)
printf 'warm-up ferrymail %6s   postfix %s   (not counted)\n' "$RATE" "$IDLE_CPU"
for round in $(seq "$ROUNDS"); do
  order=(pf fm)
  [ $((round % 2)) = 0 ] && order=(fm pf)
  for who in "${order[@]}"; do
    if [ "$who" = pf ]; then
      run "$PF_PORT" "$FM_PID"
      pf_rates+=("$RATE")
      printf 'round %s postfix   %6s   ferrymail %s\n' "$round" "$RATE" "$IDLE_CPU"
    else
      # shellcheck disable=SC2046
      run "$FM_PORT" $(postfix_pids)
      fm_rates+=("$RATE")
      printf 'round %s ferrymail %6s   postfix %s\n' "$round" "$RATE" "$IDLE_CPU"
    fi
  done
done
PF_RATE=$(median "${pf_rates[@]}"); FM_RATE=$(median "${fm_rates[@]}")

# Every accepted message must be durably queued by each.
TOTAL=$((MESSAGES * (ROUNDS + 1)))
for _ in $(seq 50); do [ "$(find "$PF/queue/hold" -type f | wc -l)" = "$TOTAL" ] && break; sleep 0.1; done
PF_HELD=$(find "$PF/queue/hold" -type f | wc -l)
FM_QUEUED=$(count fm)

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
echo "median msg/s:  postfix $PF_RATE   ferrymail $FM_RATE   ratio $(calc "f'{$FM_RATE/$PF_RATE:.2f}'")x"
echo "queued:        postfix $PF_HELD held of $TOTAL   ferrymail $FM_QUEUED of $TOTAL"
echo "ferrymail RSS: idle ${IDLE_RSS} KiB, with 200 sessions ${RSS200} KiB"
