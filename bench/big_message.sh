#!/usr/bin/env bash
# Benchmark (not a test): memory for one large message (README, "Benchmark": delivering a 50 MiB
# message stays within 32 MiB above idle). An edge queues a message of SIZE MiB, then
# (1) delivers it to bench/sink.py over BDAT, and (2) bounces a second one (the sink
# refuses its recipient) with RET=FULL, so the failure notice carries the whole
# original, and delivers that notice. The daemon's peak RSS is reset before each part
# (/proc/PID/clear_refs) and read after it.
#
# Needs: python3. Usage: bench/big_message.sh [SIZE-MiB]   (default 50)
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
. bench/lib.sh
MIB=${1:-50}
bench_setup big

SINK=$(free_port)
python3 bench/sink.py "$SINK" "$WORK/sink.log" &
PIDS+=($!)
EDGE=$(free_port)
fm_config edge "$EDGE" "[accept]
max_message_size = \"$((MIB + 8))MiB\"
[upstream]
smarthost = \"127.0.0.1:$SINK\"
tls = \"none\"
[link]
mode = \"manual\""
fm_start edge
FM_PID=${PIDS[-1]}
kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# send RCPT RET: one message of MIB MiB (base64-like lines, as attachments are).
send() {
  python3 - "$EDGE" "$MIB" "$1" "$2" <<'PY'
import smtplib, sys
port, mib, rcpt, ret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3\r\n"
body = b"Subject: m-big\r\nMIME-Version: 1.0\r\n\r\n" + line * (mib * 1024 * 1024 // len(line))
s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.bench.example")
s.ehlo()
s.sendmail("me@client.bench.example", [rcpt], body, mail_options=[f"RET={ret}"] if ret else [])
s.quit()
PY
}

# part NAME RCPT RET: queues the message, resets the peak, flushes, waits for the
# queue to empty; prints idle and peak RSS (MiB).
part() {
  send "$2" "$3"
  sleep 1
  local idle
  idle=$(kib "$FM_PID" VmRSS)
  echo 5 > "/proc/$FM_PID/clear_refs"
  fm edge flush --wait > /dev/null || true
  for _ in $(seq 600); do [ "$(count edge)" = 0 ] && break; sleep 0.2; done
  local peak
  peak=$(kib "$FM_PID" VmHWM)
  echo "$1: idle $((idle / 1024)) MiB, peak $((peak / 1024)) MiB, $(((peak - idle) / 1024)) MiB above idle"
}

DELIVER=$(part "deliver" "rcpt@dest.bench.example" "")
BOUNCE=$(part "bounce (RET=FULL) and deliver its notice" "nobody@dest.bench.example" "FULL")
ARRIVED=$(wc -l < "$WORK/sink.log")
echo "one message of $MIB MiB, edge to bench/sink.py over BDAT ($ARRIVED arrived: the message and the notice)"
echo "$DELIVER"
echo "$BOUNCE"
