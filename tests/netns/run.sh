#!/usr/bin/env bash
# Link emulation between network namespaces: an edge ferrymail in one, a hub
# ferrymail in the other, joined by a veth pair rate-limited with tc tbf (this kernel
# has no netem). First the link goes down in the middle of a flush and comes back; then
# it flaps (2 s down, 2 s up) for 60 s while 500 messages flow. Every message must
# arrive, nothing may bounce or expire, offline time must count no attempts, and
# duplicates stay inside the RFC 1047 window of each cut. Needs root and iproute2; makes
# its own namespaces and removes them.
# Usage: tests/netns/run.sh [path/to/ferrymail]
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh
BIN=$(realpath "${1:-target/debug/ferrymail}")
[ -x "$BIN" ] || { echo "netns: $BIN not built"; exit 1; }
if [ "$(id -u)" != 0 ] || ! ip netns add "fmprobe$$" 2>/dev/null; then
  echo "netns: skipped (needs root and network namespaces)"; exit 0
fi
ip netns del "fmprobe$$"

EDGE_NS=fm-edge-$$; HUB_NS=fm-hub-$$
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  stop_pids "${PIDS[@]}"
  ip netns del "$EDGE_NS" 2>/dev/null || true
  ip netns del "$HUB_NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT


ip netns add "$EDGE_NS"; ip netns add "$HUB_NS"
ip link add fm-e$$ netns "$EDGE_NS" type veth peer name fm-h$$ netns "$HUB_NS"
E() { ip netns exec "$EDGE_NS" "$@"; }
H() { ip netns exec "$HUB_NS" "$@"; }
E ip addr add 10.77.0.1/24 dev fm-e$$; H ip addr add 10.77.0.2/24 dev fm-h$$
E ip link set lo up; H ip link set lo up
E ip link set fm-e$$ up; H ip link set fm-h$$ up
# A thin link: 2 Mbit/s each way.
E tc qdisc add dev fm-e$$ root tbf rate 2mbit burst 32kbit latency 400ms
H tc qdisc add dev fm-h$$ root tbf rate 2mbit burst 32kbit latency 400ms

config() { # config NAME BODY
  mkdir -p "$WORK/$1"
  printf 'hostname = "%s.netns.example"\nspool = "%s/%s/spool"\n%s\n' "$1" "$WORK" "$1" "$2" > "$WORK/$1/ferrymail.toml"
}
config hub '[[listen]]
addr = "10.77.0.2:2525"
[accept]
relay_networks = ["10.77.0.0/24"]
[[route]]
domains = ["far.example"]
hold = true'
config edge '[[listen]]
addr = "127.0.0.1:2525"
[upstream]
smarthost = "10.77.0.2:2525"
tls = "none"
[link]
probe_interval = "1s"
[retry]
initial = "1m"
expire_after = "5m"'
fm() { local name=$1; shift; "$BIN" --config "$WORK/$name/ferrymail.toml" "$@"; }
start() { # start NAME NAMESPACE: the daemon's own pid goes to PIDS
  ip netns exec "$2" "$BIN" --config "$WORK/$1/ferrymail.toml" serve 2>> "$WORK/$1/daemon.log" &
  PIDS+=($!)
  local name=$1
  for _ in $(seq 100); do fm "$name" status >/dev/null 2>&1 && break; sleep 0.1; done
}
fill() { # fill FROM TO: messages FROM..TO, ~2 KiB each, into the edge's maildrop
  local body; body=$(head -c 1500 /dev/zero | tr '\0' 'x')
  for i in $(seq "$1" "$2"); do
    printf 'Subject: netns %s\n\nmarker-%s\n%s\n' "$i" "$i" "$body" \
      | fm edge send -f "edge@edge.netns.example" "rcpt$i@far.example"
  done
}
at_hub() { grep -rhao '^marker-[0-9]*' "$WORK/hub/spool/queue" 2>/dev/null | sort -u | wc -l; }
copies() { grep -rhao '^marker-[0-9]*' "$WORK/hub/spool/queue" 2>/dev/null | wc -l; }
edge_left() { fm edge queue --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
attempts_max() { fm edge queue --json | python3 -c 'import json,sys
print(max([r["attempts"] for e in json.load(sys.stdin) for r in e["recipients"]] or [0]))'; }
hub_has() { [ "$(at_hub)" -ge "$1" ]; }
edge_empty() { [ "$(edge_left)" = 0 ]; }
wait_until() { # wait_until SECONDS COMMAND...  (COMMAND is run again each time)
  local limit=$(( $(date +%s) + $1 )); shift
  until "$@"; do [ "$(date +%s)" -ge "$limit" ] && return 1; sleep 0.2; done
}

start hub "$HUB_NS"

# --- the link goes down mid-flush, then comes back ---------------------------------
fill 1 200
start edge "$EDGE_NS"
wait_until 60 hub_has 30 || true
E ip link set fm-e$$ down
DOWN_AT=$(at_hub)
sleep 5
check "down: the edge keeps what is left" test "$(edge_left)" -gt 0
check "down: no attempt counted while offline" test "$(attempts_max)" = 0
check "down: the gate says down" bash -c "'$BIN' --config '$WORK/edge/ferrymail.toml' status --json | grep -q '\"state\": \"down\"'"
E ip link set fm-e$$ up
check "up: everything arrives" wait_until 90 hub_has 200
check "up: the edge's queue empties" wait_until 30 edge_empty
echo "     cut with $DOWN_AT at the hub; $(($(copies) - 200)) duplicate(s)"

# --- flapping: 2 s down, 2 s up, for 60 s, while 500 more flow ----------------------
# Thinner now (200 kbit/s: 1 MB takes 40 s), so the flow spans the flapping.
E tc qdisc change dev fm-e$$ root tbf rate 200kbit burst 16kbit latency 2s
fill 201 700
( for _ in $(seq 15); do
    E ip link set fm-e$$ down; sleep 2; E ip link set fm-e$$ up; sleep 2
  done ) &
FLAPPER=$!
PIDS+=("$FLAPPER")
check "flapping: all 700 arrive" wait_until 240 hub_has 700
wait "$FLAPPER" 2>/dev/null || true
check "flapping: the edge's queue empties" wait_until 60 edge_empty
DUPS=$(($(copies) - 700))
CUTS_SEEN=$(grep -c 'to="down"' "$WORK/edge/daemon.log" || true)
echo "     $DUPS duplicate(s) over 16 cuts; the edge's gate closed $CUTS_SEEN time(s)"
check "flapping: the gate followed the cuts" test "$CUTS_SEEN" -ge 2
# Each cut can repeat at most what was unanswered when it fell (the pipelining window).
check "flapping: duplicates within the window of each cut" test "$DUPS" -le $((16 * 32))
check "no bounce, no expiry at the edge" bash -c "! grep -Eq ' (bounced|expired) ' '$WORK/edge/daemon.log'"
check "no notice was sent" bash -c "! grep -q 'DSN queued' '$WORK/edge/daemon.log'"

if [ "$failed" -gt 0 ]; then
  echo "--- edge log"; grep -v 'queued id=' "$WORK/edge/daemon.log" | tail -40
  echo "--- hub log"; tail -20 "$WORK/hub/daemon.log"
fi
echo "netns: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
