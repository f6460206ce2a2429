#!/usr/bin/env bash
# Benchmark (not a test): a long time offline, then one flush of a big backlog (README,
# "Benchmark"). An edge in manual mode relays through Postfix's smtp-sink; smtp-source
# fills it over SMTP (20 sessions, 4 KiB, one message per connection). Figures:
#   intake      msg/s into an empty spool (the first 10k), then with N queued (10k more),
#               and their ratio (target: at least 0.90)
#   operator    seconds for `queue hold --all`, `queue release --all`, `queue retry --all`
#               over N+10k messages (target: at most 2 s each)
#   flush       seconds until `ferrymail flush` returns, and until the first message is
#               delivered (the daemon's log; target: at most 1 s each)
#   latency     an SMTP client sending one message at a time during the flush: the time
#               from DATA to its 250, p50 / p99 / max (target: p99 at most 100 ms)
#   drain       seconds until the queue is empty, and msg/s
#   start-up    seconds for the daemon to answer with N+10k queued (target: under 2 s)
#   RSS         the daemon's resident memory, idle with N+10k queued and at its peak
#
# Needs: postfix (smtp-sink, smtp-source), python3. Run as root.
# Usage: bench/backlog.sh [N]   (default 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
. bench/lib.sh
N=${1:-100000}
EXTRA=10000
SESSIONS=20
SIZE=4096
bench_setup backlog

SINK=$(free_port)
EDGE=$(free_port)
fm_config edge "$EDGE" "[upstream]
smarthost = \"127.0.0.1:$SINK\"
tls = \"none\"
[link]
mode = \"manual\""
fm_start edge
FM_PID=${PIDS[-1]}
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# source COUNT: sends COUNT messages; prints msg/s.
source_rate() {
  local start end
  start=$(now)
  smtp-source -s "$SESSIONS" -l "$SIZE" -m "$1" -f sender@client.bench.example \
    -t rcpt@dest.bench.example "127.0.0.1:$EDGE"
  end=$(now)
  calc "round($1 / ($end - $start))"
}
# timed COMMAND...: runs it, prints the seconds it took.
timed() {
  local start end
  start=$(now)
  "$@" > /dev/null
  end=$(now)
  calc "round($end - $start, 2)"
}

EMPTY_RATE=$(source_rate "$EXTRA")
smtp-source -s "$SESSIONS" -l "$SIZE" -m $((N - EXTRA)) -f sender@client.bench.example \
  -t rcpt@dest.bench.example "127.0.0.1:$EDGE"
FULL_RATE=$(source_rate "$EXTRA")
TOTAL=$((N + EXTRA))
for _ in $(seq 100); do [ "$(count edge)" = "$TOTAL" ] && break; sleep 0.2; done
IDLE_RSS=$(rss_kib "$FM_PID")

HOLD=$(timed fm edge queue hold --all)
RELEASE=$(timed fm edge queue release --all)
RETRY=$(timed fm edge queue retry --all)

# Start-up with the backlog, then the flush.
stop_pids "$FM_PID"
START=$(now)
fm_start edge
FM_PID=${PIDS[-1]}
STARTUP=$(calc "round($(now) - $START, 2)")

smtp-sink -u postfix "127.0.0.1:$SINK" 256 &
PIDS+=($!)
sleep 0.3
python3 - "$EDGE" 30 > "$WORK/latency" <<'PY' &
import smtplib, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
end, lat = time.monotonic() + seconds, []
while time.monotonic() < end:
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="probe.bench.example")
    s.ehlo()
    s.mail("probe@client.bench.example"); s.rcpt("rcpt@dest.bench.example")
    t = time.monotonic()
    s.data(b"Subject: probe\r\n\r\nduring the flush\r\n")
    lat.append(time.monotonic() - t)
    s.quit()
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
print(f"{len(lat)} {pct(0.5):.1f} {pct(0.99):.1f} {lat[-1] * 1000:.1f}")
PY
PROBE=$!
sleep 1
FLUSH_AT=$(now)
FLUSH=$(timed fm edge flush)
for _ in $(seq 6000); do [ "$(count edge)" = 0 ] && break; sleep 0.1; done
DRAINED=$(calc "round($(now) - $FLUSH_AT, 1)")
PEAK_RSS=$(hwm_kib "$FM_PID")
FIRST=$(python3 - "$WORK/edge/daemon.log" "$FLUSH_AT" <<'PY'
import datetime, sys
flush_at = float(sys.argv[2])
for line in open(sys.argv[1]):
    if line.rstrip().endswith("delivered") or " delivered " in line and "relay=" in line:
        stamp = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
        print(f"{stamp.timestamp() - flush_at:.2f}")
        break
else:
    print("none")
PY
)
wait "$PROBE" || true
read -r PROBES P50 P99 PMAX < "$WORK/latency"

echo "backlog of $TOTAL messages of $SIZE bytes, edge in manual mode, smtp-sink upstream"
echo "intake:     empty $EMPTY_RATE msg/s, with $N queued $FULL_RATE msg/s, ratio $(calc "round($FULL_RATE / $EMPTY_RATE, 2)")"
echo "operator:   hold --all ${HOLD} s, release --all ${RELEASE} s, retry --all ${RETRY} s"
echo "start-up:   ${STARTUP} s with $TOTAL queued"
echo "flush:      returned in ${FLUSH} s, first delivery ${FIRST} s after it"
echo "latency:    $PROBES SMTP transactions during the flush: 250 after p50 ${P50} ms, p99 ${P99} ms, max ${PMAX} ms"
echo "drain:      ${DRAINED} s, $(calc "round($TOTAL / $DRAINED)") msg/s"
echo "RSS:        idle with $TOTAL queued $((IDLE_RSS / 1024)) MiB, peak $((PEAK_RSS / 1024)) MiB"
