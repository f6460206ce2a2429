#!/usr/bin/env bash
# Mail without a network, with real carriers and a real peer MTA:
#  1. A week by USB stick alone: a station and its hub (two daemons, no connection
#     between them) exchange mail in both directions through a directory that plays the
#     stick, with contrib/usb/ferrymail-usb at each end. The hub relays to a sink that
#     refuses one recipient a day; those bounce back to the station. Every message
#     arrives exactly once, every bounce comes back, and both queues end empty.
#  2. Exim (apt-get download + dpkg -x, as Debian's exim4 conflicts with postfix) reads
#     our BSMTP with -bS, and we read the BSMTP its appendfile transport writes
#     (use_bsmtp) with sendmail -bS.
#  3. NNCP carries a bundle between two local NNCP nodes (nncp-exec, nncp-xfer through a
#     directory, nncp-toss), whose exec handler (contrib/nncp/ferrymail-nncp) imports it
#     and sends the receipt back the same way.
#  4. Taylor UUCP, two systems on this machine joined by a pipe port instead of a modem:
#     uux queues `rmail` (UUCP's From_ line giving the sender) and an `rsmtp` batch,
#     uucico calls, and uuxqt at the far end runs ferrymail as rmail and sendmail -bS.
# Binds loopback only; stops what it started by pid.
# Usage: tests/interop/bundles.sh [path/to/ferrymail]   (needs python3, nncp, uucp;
#        fetches exim)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh
BIN=$(realpath "${1:-target/debug/ferrymail}")
[ -x "$BIN" ] || { echo "bundles: $BIN not built"; exit 1; }
TOOLS=$(realpath tests/interop/tools)
[ "$(id -u)" = 0 ] || { echo "bundles: skipped (needs root: a user for Exim, UUCP's spool)"; exit 0; }
USB=$(realpath contrib/usb/ferrymail-usb)
NNCP_HANDLER=$(realpath contrib/nncp/ferrymail-nncp)

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  stop_pids "${PIDS[@]}"
  [ -n "${KEEP:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" bundle keygen --out "$WORK/shared.key" >/dev/null
FAR=$(free_port); STORE=$(free_port); HUB_SMTP=$(free_port)
mkdir "$WORK/far" "$WORK/store" "$WORK/stick"
/usr/bin/python3 "$TOOLS/raw_sink.py" 127.0.0.1 "$FAR" "$WORK/far" gone &
PIDS+=($!)
/usr/bin/python3 "$TOOLS/raw_sink.py" 127.0.0.1 "$STORE" "$WORK/store" &
PIDS+=($!)

cat > "$WORK/station.toml" <<TOML
hostname = "gw.station.example"
spool = "$WORK/station"
[[listen]]
addr = "127.0.0.1:$(free_port)"
[link]
mode = "manual"
[upstream]
smarthost = "127.0.0.1:1"
[[route]]
name = "store"
domains = ["station.example"]
via = "127.0.0.1:$STORE"
tls = "none"
[bundle]
node = "station"
[[bundle_peer]]
node = "hub"
key_file = "$WORK/shared.key"
routes = ["upstream"]
[dns]
servers = ["127.0.0.1:1"]
TOML
cat > "$WORK/hub.toml" <<TOML
hostname = "hub.example"
spool = "$WORK/hub"
[[listen]]
addr = "127.0.0.1:$HUB_SMTP"
[link]
mode = "manual"
[upstream]
smarthost = "127.0.0.1:$FAR"
tls = "none"
[[route]]
name = "station"
domains = ["station.example"]
via = "bundle"
[bundle]
node = "hub"
[[bundle_peer]]
node = "station"
key_file = "$WORK/shared.key"
routes = ["station"]
[dns]
servers = ["127.0.0.1:1"]
TOML
station() { "$BIN" --config "$WORK/station.toml" "$@"; }
hub() { "$BIN" --config "$WORK/hub.toml" "$@"; }
"$BIN" --config "$WORK/station.toml" serve 2> "$WORK/station.log" &
PIDS+=($!)
"$BIN" --config "$WORK/hub.toml" serve 2> "$WORK/hub.log" &
PIDS+=($!)
for _ in $(seq 100); do station status >/dev/null 2>&1 && hub status >/dev/null 2>&1 && break; sleep 0.1; done

pending() { # pending CONFIG: recipients not final, drops included
  "$BIN" --config "$1" queue --json | /usr/bin/python3 -c '
import json, sys
print(sum(1 for e in json.load(sys.stdin) for r in e["recipients"] or [None]
          if r is None or r["state"] not in ("delivered", "bounced", "expired")))'
}
dropped() { # dropped CONFIG: drops not yet picked up
  "$BIN" --config "$1" status --json | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["maildrop"])'
}
visit() { # the vehicle calls at the station, then at the hub
  FERRYMAIL="$BIN" FERRYMAIL_CONFIG="$WORK/station.toml" FERRYMAIL_NODE=station \
    FERRYMAIL_PEER=hub "$USB" "$WORK/stick" >> "$WORK/usb.log" 2>&1
  station flush --wait >/dev/null 2>&1 || true
  FERRYMAIL="$BIN" FERRYMAIL_CONFIG="$WORK/hub.toml" FERRYMAIL_NODE=hub \
    FERRYMAIL_PEER=station FERRYMAIL_ROUTE=station "$USB" "$WORK/stick" >> "$WORK/usb.log" 2>&1
  hub flush --wait >/dev/null 2>&1 || true
}

for day in 1 2 3 4 5 6 7; do
  for i in 1 2 3 4 5; do
    printf 'Subject: day %s out %s\n\nfrom the field\n' "$day" "$i" \
      | station send -f user@station.example "x$day-$i@far.example"
  done
  printf 'Subject: day %s to nobody\n\nlost\n' "$day" | station send -f user@station.example "gone$day@far.example"
  /usr/bin/python3 - "$HUB_SMTP" "$day" <<'PY'
import smtplib, sys
port, day = int(sys.argv[1]), sys.argv[2]
with smtplib.SMTP("127.0.0.1", port) as s:
    for i in range(1, 4):
        s.sendmail("friend@elsewhere.example", [f"user{i}@station.example"],
                   f"Subject: day {day} in {i}\r\n\r\nfor the station\r\n")
PY
  for _ in $(seq 100); do [ "$(dropped "$WORK/station.toml")" = 0 ] && break; sleep 0.1; done
  visit
done
# Two more visits with nothing new: the last bounces and receipts cross.
visit
visit

subjects() { cat "$1"/*.eml 2>/dev/null | grep -a '^Subject: ' | sort || true; }
far_out=$(subjects "$WORK/far" | grep -c 'out' || true)
far_unique=$(subjects "$WORK/far" | grep 'out' | sort -u | wc -l || true)
check "the far upstream got all 35 outgoing messages ($far_out)" test "$far_out" = 35
check "none of them twice ($far_unique distinct)" test "$far_unique" = 35
store_in=$(subjects "$WORK/store" | grep -c ' in ' || true)
check "the station's mailbox got all 21 incoming messages ($store_in)" test "$store_in" = 21
check "none of them twice" test "$(subjects "$WORK/store" | grep ' in ' | sort -u | wc -l || true)" = 21
bounces=$(grep -la 'Action: failed' "$WORK/store"/*.eml 2>/dev/null | wc -l)
check "7 refused recipients bounced back to the station ($bounces)" test "$bounces" = 7
check "the station's queue is empty" test "$(pending "$WORK/station.toml")" = 0
check "the hub's queue is empty" test "$(pending "$WORK/hub.toml")" = 0
check "nothing was refused on the stick" test -z "$(ls "$WORK/stick/ferrymail/refused")"
check "no file waits on the stick" test "$(find "$WORK/stick/ferrymail/to-station" "$WORK/stick/ferrymail/to-hub" -type f | wc -l)" = 0

# 2. Exim's batched SMTP, both ways.
EXIM_DIR=$WORK/exim
mkdir -p "$EXIM_DIR/pkg" "$EXIM_DIR/spool" "$EXIM_DIR/out"
( cd "$EXIM_DIR/pkg" && { apt-get download exim4-daemon-light >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get download exim4-daemon-light >/dev/null; }; } )
dpkg -x "$EXIM_DIR"/pkg/exim4-daemon-light_*.deb "$EXIM_DIR/root"
EXIM=$EXIM_DIR/root/usr/sbin/exim4
# Exim is built to run as Debian-exim, and wants the user to exist.
id Debian-exim >/dev/null 2>&1 || useradd --system --no-create-home Debian-exim
# Its transport writes as nobody, who must reach the output directory.
chmod 711 "$WORK" "$EXIM_DIR"
chmod 777 "$EXIM_DIR/out"
cat > "$EXIM_DIR/exim.conf" <<CONF
spool_directory = $EXIM_DIR/spool
exim_user = root
exim_group = root
trusted_users = root
primary_hostname = exim.example
log_file_path = $EXIM_DIR/spool/%slog
begin routers
all:
  driver = accept
  transport = bsmtp_file
begin transports
bsmtp_file:
  driver = appendfile
  file = $EXIM_DIR/out/batch
  use_bsmtp
  user = nobody
begin retry
* * F,1h,10m
CONF
for i in 1 2 3; do
  printf 'Subject: to exim %s\n\n.leading dot\nbody\n' "$i" | station send -f user@station.example "e$i@far.example" "f$i@far.example"
done
for _ in $(seq 100); do [ "$(pending "$WORK/station.toml")" = 6 ] && break; sleep 0.1; done
station bundle export --route upstream --format bsmtp --out "$WORK/ours.bsmtp" >/dev/null
"$EXIM" -C "$EXIM_DIR/exim.conf" -bS -odi < "$WORK/ours.bsmtp" > "$WORK/exim.err" 2>&1 || true
check "exim -bS took our 3 messages" test "$(grep -c ' <= user@station.example' "$EXIM_DIR/spool/mainlog")" = 3
check "exim delivered all 6 recipients" test "$(grep -c '^RCPT TO:<[ef][123]@far.example>' "$EXIM_DIR/out/batch")" = 6
check "the dot line survived both stuffings" grep -q '^\.\.leading dot' "$EXIM_DIR/out/batch"
check "our exported recipients count as delivered" test "$(pending "$WORK/station.toml")" = 0
set +e
hub send -bS < "$EXIM_DIR/out/batch" > "$WORK/bs.out" 2>&1
rc=$?
set -e
check "sendmail -bS read Exim's batch (exit $rc)" test "$rc" = 0
for _ in $(seq 100); do [ "$(pending "$WORK/hub.toml")" = 6 ] && break; sleep 0.1; done
check "6 recipients queued from Exim's batch" test "$(pending "$WORK/hub.toml")" = 6
hub queue delete --all >/dev/null

# 3. NNCP between two local nodes, through a directory.
NN=$WORK/nncp
mkdir -p "$NN/xfer"
cat > "$NN/station-handler" <<SH
#!/bin/sh
FERRYMAIL=$BIN FERRYMAIL_CONFIG=$WORK/station.toml NNCP_CFG=$NN/station.hjson exec $NNCP_HANDLER
SH
cat > "$NN/hub-handler" <<SH
#!/bin/sh
FERRYMAIL=$BIN FERRYMAIL_CONFIG=$WORK/hub.toml NNCP_CFG=$NN/hub.hjson exec $NNCP_HANDLER
SH
chmod +x "$NN/station-handler" "$NN/hub-handler"
/usr/bin/python3 "$TOOLS/nncp_pair.py" "$NN" "$NN/station-handler" "$NN/hub-handler"
printf 'Subject: by nncp\n\nover the air\n' | station send -f user@station.example n1@far.example
for _ in $(seq 100); do [ "$(pending "$WORK/station.toml")" = 1 ] && break; sleep 0.1; done
station bundle export --route upstream --out - 2>/dev/null | nncp-exec -cfg "$NN/station.hjson" -quiet hub ferrymail
check "the station's mail is bundled" test "$(station queue --json | grep -c '"bundled"')" = 1
nncp-xfer -cfg "$NN/station.hjson" -quiet -mkdir -node hub "$NN/xfer"
nncp-xfer -cfg "$NN/hub.hjson" -quiet -rx "$NN/xfer"
nncp-toss -cfg "$NN/hub.hjson" -quiet
check "the hub's handler imported it" test "$(hub queue --json | grep -c 'n1@far.example')" = 1
nncp-xfer -cfg "$NN/hub.hjson" -quiet -mkdir -node station "$NN/xfer"
nncp-xfer -cfg "$NN/station.hjson" -quiet -rx "$NN/xfer"
nncp-toss -cfg "$NN/station.hjson" -quiet
for _ in $(seq 50); do [ "$(pending "$WORK/station.toml")" = 0 ] && break; sleep 0.1; done
check "the receipt came back over NNCP: delivered at the station" test "$(pending "$WORK/station.toml")" = 0

# 4. UUCP between two systems on this machine.
hub queue delete --all >/dev/null
UU=$WORK/uucp
mkdir -p "$UU/bin/as"
for n in station hub; do
  other=$([ "$n" = station ] && echo hub || echo station)
  mkdir -p "$UU/$n/spool" "$UU/$n/pub" "$UU/$n/lock"
  cat > "$UU/$n/config" <<CFG
nodename $n
spool $UU/$n/spool
pubdir $UU/$n/pub
lockdir $UU/$n/lock
logfile $UU/$n/Log
statfile $UU/$n/Stats
debugfile $UU/$n/Debug
sysfile $UU/$n/sys
portfile $UU/$n/port
CFG
  cat > "$UU/$n/sys" <<SYS
system $other
time any
port pipe-to-$other
chat ""
protocol g
commands rmail rsmtp
command-path $UU/bin
SYS
  cat > "$UU/$n/port" <<PORT
port pipe-to-$other
type pipe
command /usr/sbin/uucico -I $UU/$other/config
PORT
done
ln -s "$BIN" "$UU/bin/as/rmail"
printf '#!/bin/sh\nFERRYMAIL_CONFIG=%s exec %s "$@"\n' "$WORK/hub.toml" "$UU/bin/as/rmail" > "$UU/bin/rmail"
printf '#!/bin/sh\nFERRYMAIL_CONFIG=%s exec %s send -bS\n' "$WORK/hub.toml" "$BIN" > "$UU/bin/rsmtp"
chmod 755 "$UU/bin/rmail" "$UU/bin/rsmtp"
chown -R uucp "$UU"
printf 'From user Tue Dec  1 10:00:00 2026 remote from station\nSubject: by uucp\n\nover the line\n' \
  | uux -I "$UU/station/config" -r - 'hub!rmail' '(u1@far.example)'
printf 'Subject: a batch by uucp\n\nover the line\n' | station send -f user@station.example u2@far.example
for _ in $(seq 100); do [ "$(pending "$WORK/station.toml")" = 1 ] && break; sleep 0.1; done
station bundle export --route upstream --format bsmtp --out - 2>/dev/null \
  | uux -I "$UU/station/config" -r - 'hub!rsmtp'
uucico -I "$UU/station/config" -S hub
took() { hub queue --json | /usr/bin/python3 -c '
import json, sys
print(" ".join(sorted(e["sender"] + ">" + r["address"] for e in json.load(sys.stdin) for r in e["recipients"] or [])))'; }
for _ in $(seq 100); do [ "$(took)" = "user@station.example>u2@far.example user@station>u1@far.example" ] && break; sleep 0.1; done
check "uucico called the hub over a pipe" grep -q "Call complete" "$UU/station/Log"
check "rmail and rsmtp ran at the hub, each message with its sender ($(took))" \
  test "$(took)" = "user@station.example>u2@far.example user@station>u1@far.example"

echo "bundles: $passed passed, $failed failed"
if [ "$failed" -gt 0 ]; then
  for f in usb.log station.log hub.log exim.err bs.out uucp/station/Log uucp/hub/Log; do
    echo "--- $f"; tail -30 "$WORK/$f" 2>/dev/null || true
  done
fi
[ "$failed" = 0 ]
