#!/usr/bin/env bash
# A station behind NAT (RFC 2645): the station and its hub in two network namespaces
# joined by a rate-limited veth pair (tc tbf, 2 Mbit/s). The station can reach the hub;
# the hub cannot reach the station (its SMTP listener is on its own loopback), so ETRN
# cannot bring mail down. The hub holds etrn.field.example for ETRN and field.example
# for ODMR: when the station's link opens, the ODMR mail arrives at the station's
# mailbox server and the ETRN mail stays at the hub. Then the link is cut in the middle
# of a turn: nothing is lost, nothing bounces, no attempt is counted, and the rest
# comes at the next turn. Needs root and iproute2; makes its own namespaces and removes
# them; stops what it started by pid.
# Usage: tests/netns/odmr.sh [path/to/ferrymail]
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh
BIN=$(realpath "${1:-target/debug/ferrymail}")
[ -x "$BIN" ] || { echo "netns odmr: $BIN not built"; exit 1; }
if [ "$(id -u)" != 0 ] || ! ip netns add "fmprobe$$" 2>/dev/null; then
  echo "netns odmr: skipped (needs root and network namespaces)"; exit 0
fi
ip netns del "fmprobe$$"
TOOLS=$(realpath tests/interop/tools)

EDGE_NS=fm-st-$$; HUB_NS=fm-hb-$$
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
ip link add fm-s$$ netns "$EDGE_NS" type veth peer name fm-b$$ netns "$HUB_NS"
E() { ip netns exec "$EDGE_NS" "$@"; }
H() { ip netns exec "$HUB_NS" "$@"; }
E ip addr add 10.78.0.1/24 dev fm-s$$; H ip addr add 10.78.0.2/24 dev fm-b$$
E ip link set lo up; H ip link set lo up
E ip link set fm-s$$ up; H ip link set fm-b$$ up
E tc qdisc add dev fm-s$$ root tbf rate 2mbit burst 32kbit latency 400ms
H tc qdisc add dev fm-b$$ root tbf rate 2mbit burst 32kbit latency 400ms

mkdir -p "$WORK/hub" "$WORK/station" "$WORK/store"
echo "through-the-nat" > "$WORK/secret"; chmod 600 "$WORK/secret"
cat > "$WORK/hub/ferrymail.toml" <<TOML
hostname = "hub.netns.example"
spool = "$WORK/hub/spool"
[[listen]]
addr = "10.78.0.2:2525"
[[listen]]
addr = "10.78.0.2:366"
kind = "odmr"
require_tls = false
[accept]
relay_networks = ["10.78.0.0/24"]
[[route]]
domains = ["field.example"]
via = "odmr"
[[route]]
domains = ["etrn.field.example"]
via = "10.78.0.1:2525"                  # where the station would be, if it could be reached
hold = true
tls = "none"
[[odmr_user]]
name = "station"
password_file = "$WORK/secret"
domains = ["field.example"]
[dns]
servers = ["127.0.0.1:1"]
TOML
STORE=2600
cat > "$WORK/station/ferrymail.toml" <<TOML
hostname = "station.netns.example"
spool = "$WORK/station/spool"
[[listen]]
addr = "127.0.0.1:2525"                 # not reachable from the hub
[upstream]
smarthost = "10.78.0.2:2525"
tls = "none"
[odmr]
hub = "10.78.0.2:366"
tls = "none"
username = "station"
password_file = "$WORK/secret"
domains = ["field.example"]
[[route]]
name = "store"
domains = ["field.example", "etrn.field.example"]
via = "127.0.0.1:$STORE"
tls = "none"
[route.link]
mode = "auto"
[link]
mode = "manual"
probe_interval = "1s"
etrn = ["etrn.field.example"]
[dns]
servers = ["127.0.0.1:1"]
TOML
fm() { local name=$1; shift; "$BIN" --config "$WORK/$name/ferrymail.toml" "$@"; }
start() { # start NAME NAMESPACE
  ip netns exec "$2" "$BIN" --config "$WORK/$1/ferrymail.toml" serve 2>> "$WORK/$1/daemon.log" &
  PIDS+=($!)
  local name=$1
  for _ in $(seq 100); do fm "$name" status >/dev/null 2>&1 && break; sleep 0.1; done
}
fill() { # fill FROM TO DOMAIN: messages FROM..TO, ~2 KiB each, handed to the hub
  H python3 - "$1" "$2" "$3" <<'PY'
import smtplib, sys
lo, hi, domain = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
body = "\r\n".join(["x" * 75] * 20)
with smtplib.SMTP("10.78.0.2", 2525) as s:
    for i in range(lo, hi + 1):
        s.sendmail("sender@elsewhere.example", [f"rcpt{i}@{domain}"],
                   f"Subject: odmr {i}\r\n\r\nmarker-{i}\r\n{body}\r\n")
PY
}
held() { fm hub queue --json | python3 -c "import json,sys
print(sum(r['state'] in ('held','queued','deferred') and r['address'].endswith('@$1') for e in json.load(sys.stdin) for r in e['recipients']))"; }
held_is() { [ "$(held "$1")" = "$2" ]; }
arrived() { grep -rhao '^marker-[0-9]*' "$WORK/store" 2>/dev/null | sort -u | wc -l; }
copies() { grep -rhao '^marker-[0-9]*' "$WORK/store" 2>/dev/null | wc -l; }
has_arrived() { [ "$(arrived)" -ge "$1" ]; }
wait_until() { # wait_until SECONDS COMMAND...
  local limit=$(( $(date +%s) + $1 )); shift
  until "$@"; do [ "$(date +%s)" -ge "$limit" ] && return 1; sleep 0.2; done
}
attempts_max() { fm hub queue --json | python3 -c 'import json,sys
print(max([r["attempts"] for e in json.load(sys.stdin) for r in e["recipients"] if r["address"].endswith("@field.example")] or [0]))'; }

# Not through E(): a function run in the background is a subshell, whose pid is not
# the sink's.
ip netns exec "$EDGE_NS" python3 "$TOOLS/raw_sink.py" 127.0.0.1 "$STORE" "$WORK/store" &
PIDS+=($!)
start hub "$HUB_NS"
fill 1 50 field.example
fill 1001 1010 etrn.field.example
check "the hub holds 50 for ODMR" wait_until 30 held_is field.example 50

# --- the station's link opens: ODMR brings its mail; ETRN cannot -------------------
START=$(date +%s.%N)
start station "$EDGE_NS"
fm station flush >/dev/null
check "ODMR: all 50 reach the station's mailbox server" wait_until 60 has_arrived 50
END=$(date +%s.%N)
sleep 3   # give ETRN's delivery attempt its chance to (not) connect
check "ETRN: the hub cannot reach the station; its 10 stay at the hub" test "$(held etrn.field.example)" = 10
check "ODMR: nothing left for the station at the hub" test "$(held field.example)" = 0
echo "     50 held messages collected in $(python3 -c "print(round($END - $START, 2))") s after the station started"

# --- the link is cut in the middle of a turn ----------------------------------------
E tc qdisc change dev fm-s$$ root tbf rate 200kbit burst 16kbit latency 2s
H tc qdisc change dev fm-b$$ root tbf rate 200kbit burst 16kbit latency 2s
fill 51 250 field.example
check "the hub holds 200 more" wait_until 30 held_is field.example 200
fm station flush >/dev/null
wait_until 60 has_arrived 80 || true
E ip link set fm-s$$ down
CUT_AT=$(arrived)
# Both ends notice a dead peer within a minute (TCP_USER_TIMEOUT, keepalive).
check "cut: the turn ends at the hub" wait_until 90 grep -q "cut off" "$WORK/hub/daemon.log"
check "cut: no attempt counted" test "$(attempts_max)" = 0
check "cut: nothing bounced at the hub" bash -c "! grep -Eq ' (bounced|expired) ' '$WORK/hub/daemon.log'"
E ip link set fm-s$$ up
E tc qdisc change dev fm-s$$ root tbf rate 2mbit burst 32kbit latency 400ms
H tc qdisc change dev fm-b$$ root tbf rate 2mbit burst 32kbit latency 400ms
collections() { [ "$(grep -c "ODMR: collection done" "$WORK/station/daemon.log")" -ge 2 ]; }
check "cut: the station's side of the turn ends too" wait_until 120 collections
fm station flush >/dev/null
check "the next turn brings the rest: all 250 arrive" wait_until 120 has_arrived 250
echo "     cut with $CUT_AT at the station; $(($(copies) - 250)) duplicate(s)"
check "duplicates within the window of one cut" test "$(($(copies) - 250))" -le 32

if [ "$failed" -gt 0 ]; then
  echo "--- station log"; tail -30 "$WORK/station/daemon.log"
  echo "--- hub log"; grep -v 'queued id=' "$WORK/hub/daemon.log" | tail -30
fi
echo "netns odmr: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
