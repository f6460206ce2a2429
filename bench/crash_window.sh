#!/usr/bin/env bash
# Benchmark (not a test): what kill -9 repeats, on a slow disk. The edge runs with every
# fsync and fdatasync slowed by 50 ms (an LD_PRELOAD shim built here), delivering to a
# fast upstream (bench/sink.py: PIPELINING and CHUNKING, no disk), and is killed with
# SIGKILL every second, then restarted. Two parts:
#   deliveries  N messages; for each restart, how many it sent again that had already
#               arrived (target: at most the pipelining window, 32, per kill)
#   bounces     B messages the upstream refuses (550), killed K times while their
#               failure notices are written and sent; how many notices each bounce got
#               (target: exactly one written, whatever was sent twice)
#
# Needs: python3, a C compiler. Usage: bench/crash_window.sh [N] [kills] [B] [K]
# (default 2000 20 300 60)
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
. bench/lib.sh
N=${1:-2000}; KILLS=${2:-20}; B=${3:-300}; BOUNCE_KILLS=${4:-60}
SLOW_MS=50
bench_setup crash

cat > "$WORK/slowfsync.c" <<'C'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
static void slow(void) {
  const char *s = getenv("SLOW_FSYNC_MS");
  long ms = s ? atol(s) : 50;
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}
int fsync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
  slow();
  return real(fd);
}
int fdatasync(int fd) {
  static int (*real)(int);
  if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  slow();
  return real(fd);
}
C
cc -shared -fPIC -O2 -o "$WORK/slowfsync.so" "$WORK/slowfsync.c" -ldl

SINK=$(free_port)
python3 bench/sink.py "$SINK" "$WORK/sink.log" &
PIDS+=($!)
EDGE=$(free_port)
# One spool, two configurations: manual to fill it, auto to deliver.
mkdir -p "$WORK/fill" "$WORK/edge"
for name in fill edge; do
  cat > "$WORK/$name/ferrymail.toml" <<TOML
hostname = "edge.bench.example"
spool = "$WORK/edge/spool"
[[listen]]
addr = "127.0.0.1:$EDGE"
[upstream]
smarthost = "127.0.0.1:$SINK"
tls = "none"
TOML
done
printf '[link]\nmode = "manual"\n' >> "$WORK/fill/ferrymail.toml"

# fill COUNT RCPT TAG: queues COUNT messages (Subject: m-TAG-i) while nothing delivers.
fill() {
  fm_start fill
  local pid=${PIDS[-1]}
  python3 - "$EDGE" "$1" "$2" "$3" <<'PY'
import smtplib, sys
port, count, rcpt, tag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.bench.example")
s.ehlo()
for i in range(count):
    body = f"Subject: m-{tag}-{i}\r\n\r\n" + "x" * 4000 + "\r\n"
    s.sendmail("me@client.bench.example", [rcpt], body)
s.quit()
PY
  stop_pids "$pid"
}

# slow_start: starts the edge with every fsync slowed; its pid in EDGE_PID.
slow_start() {
  LD_PRELOAD=$WORK/slowfsync.so SLOW_FSYNC_MS=$SLOW_MS \
    "$FM_BIN" --config "$WORK/edge/ferrymail.toml" serve 2>> "$WORK/edge/daemon.log" &
  EDGE_PID=$!
  PIDS+=($EDGE_PID)
}
lines() { wc -l < "$WORK/sink.log"; }

# kill_loop TIMES: starts the slowed edge, lets it work a second, kills it; TIMES times.
# Records the sink log's length at each restart.
kill_loop() {
  MARKS=()
  for _ in $(seq "$1"); do
    MARKS+=("$(lines)")
    slow_start
    sleep 1
    kill -KILL "$EDGE_PID"; wait "$EDGE_PID" 2>/dev/null || true
  done
  MARKS+=("$(lines)")
  slow_start
  for _ in $(seq 1200); do [ "$(count edge)" = 0 ] && break; sleep 0.5; done
  stop_pids "$EDGE_PID"
}

# --- deliveries ---------------------------------------------------------------------
: > "$WORK/sink.log"
fill "$N" "rcpt@dest.bench.example" d
kill_loop "$KILLS"
DELIVERIES=$(python3 - "$WORK/sink.log" "$N" "${MARKS[@]}" <<'PY'
import sys
lines = [l.split("\t")[1] for l in open(sys.argv[1]) if l.strip()]
n, marks = int(sys.argv[2]), [int(m) for m in sys.argv[3:]]
seen, per_run = set(), []
bounds = marks + [len(lines)]
for start, end in zip(bounds, bounds[1:]):
    again = 0
    for m in lines[start:end]:
        again += m in seen
        seen.add(m)
    per_run.append(again)
# A run's repeats are what the kill before it left unrecorded.
repeats = per_run[1:]
print(f"{len(seen)} of {n} arrived, {len(lines) - len(seen)} twice;"
      f" repeated after each kill: max {max(repeats)}, mean {sum(repeats) / len(repeats):.1f}")
PY
)

# --- bounces ------------------------------------------------------------------------
: > "$WORK/sink.log"
fill "$B" "nobody@dest.bench.example" b
kill_loop "$BOUNCE_KILLS"
BOUNCES=$(python3 - "$WORK/sink.log" "$B" <<'PY'
import collections, sys
notices = collections.defaultdict(set)
sent = 0
for l in open(sys.argv[1]):
    sender, marker, msgid = l.rstrip("\n").split("\t")
    if sender == "" and marker:
        notices[marker].add(msgid)
        sent += 1
b = int(sys.argv[2])
written = collections.Counter(len(ids) for ids in notices.values())
print(f"{len(notices)} of {b} bounces reported; notices written per bounce: "
      + ", ".join(f"{k}: {v}" for k, v in sorted(written.items()))
      + f"; {sent} deliveries of them")
PY
)

echo "kill -9 every second, fsync slowed by $SLOW_MS ms, fast upstream with CHUNKING"
echo "deliveries: $N messages, $KILLS kills: $DELIVERIES"
echo "bounces:    $B messages, $BOUNCE_KILLS kills: $BOUNCES"
