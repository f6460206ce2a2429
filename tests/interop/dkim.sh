#!/usr/bin/env bash
# DKIM signatures checked by the two independent verifiers Debian ships, each asking a
# real DNS server for the key: opendkim's library (opendkim-testmsg, opendkim-tools) and
# dkimpy's command (dkimverify, python3-dkim). Keys are made by `ferrymail dkim keygen`,
# one RSA and one Ed25519, for two domains; messages go in by `ferrymail send` with LF
# line ends, 8-bit text, folded headers and blank lines at the end of the body, leave
# through a sink that keeps their exact bytes, and are verified inside a network
# namespace whose resolv.conf (ip netns exec mounts /etc/netns/NAME/resolv.conf) points
# at tests/interop/tools/txt_dns.py on its own loopback. Root only (namespaces); says
# "skipped" elsewhere. Stops what it started by pid, and deletes the namespace.
# Usage: tests/interop/dkim.sh [path/to/ferrymail]
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh
BIN=$(realpath "${1:-target/debug/ferrymail}")
[ -x "$BIN" ] || { echo "dkim: $BIN not built"; exit 1; }
if [ "$(id -u)" != 0 ]; then echo "dkim: skipped (network namespaces need root)"; exit 0; fi
for tool in opendkim-testmsg dkimverify ip; do
  command -v "$tool" >/dev/null || { echo "dkim: $tool is not installed"; exit 1; }
done
TOOLS=$(realpath tests/interop/tools)

WORK=$(mktemp -d)
NS=fm-dkim-$$
PIDS=()
cleanup() {
  stop_pids "${PIDS[@]}"
  ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns delete "$NS" 2>/dev/null || true
  rm -rf "/etc/netns/$NS" "$WORK"
}
trap cleanup EXIT

# Keys and their records.
: > "$WORK/records"
for pair in "rsa.example:rsa-sha256" "ed.example:ed25519-sha256"; do
  domain=${pair%%:*}; algorithm=${pair#*:}
  "$BIN" dkim keygen --domain "$domain" --selector field --algorithm "$algorithm" \
    --out "$WORK/$domain.key" > "$WORK/$domain.keygen"
  record=$(grep "_domainkey" "$WORK/$domain.keygen" | sed -e 's/^[^"]*//' -e 's/" "//g' -e 's/[()]//g' -e 's/"//g' | xargs)
  echo "field._domainkey.$domain. $record" >> "$WORK/records"
done

# The sink and the relay.
mkdir "$WORK/out"
SINK=$(free_port)
python3 "$TOOLS/raw_sink.py" 127.0.0.1 "$SINK" "$WORK/out" &
PIDS+=($!)
cat > "$WORK/ferrymail.toml" <<TOML
hostname = "edge.dkim.test"
spool = "$WORK/spool"
[[listen]]
addr = "127.0.0.1:$(free_port)"
[upstream]
smarthost = "127.0.0.1:$SINK"
tls = "none"
[link]
probe_interval = "1s"
[[dkim]]
domain = "rsa.example"
selector = "field"
key = "$WORK/rsa.example.key"
[[dkim]]
domain = "ed.example"
selector = "field"
key = "$WORK/ed.example.key"
algorithm = "ed25519-sha256"
TOML
fm() { "$BIN" --config "$WORK/ferrymail.toml" "$@"; }
"$BIN" --config "$WORK/ferrymail.toml" serve 2> "$WORK/daemon.log" &
PIDS+=($!)
for _ in $(seq 100); do fm status >/dev/null 2>&1 && break; sleep 0.1; done

n=0
for domain in rsa.example ed.example; do
  printf 'From: Field Station <station@%s>\nTo: hq@example.net\nSubject: a report that a program\n\tfolded in two\nContent-Type: text/plain; charset=utf-8\n\nGr\xc3\xbc\xc3\x9fe  aus dem Feld\t \n\nlast line\n\n\n\n' "$domain" \
    | fm send -i hq@example.net
  printf 'From: station@%s\nSubject: plain\n\n.leading dot\nshort\n' "$domain" | fm send hq@example.net
  n=$((n + 2))
done
for _ in $(seq 300); do [ "$(ls "$WORK/out" | grep -c '\.eml$')" -ge "$n" ] && break; sleep 0.1; done
check "all $n messages reached the sink" test "$(ls "$WORK/out" | grep -c '\.eml$')" -ge "$n"

# The verifiers, in a namespace with its own resolver.
ip netns add "$NS"
ip -n "$NS" link set lo up
mkdir -p "/etc/netns/$NS"
echo "nameserver 127.0.0.1" > "/etc/netns/$NS/resolv.conf"
ip netns exec "$NS" python3 "$TOOLS/txt_dns.py" 127.0.0.1 53 "$WORK/records" &
PIDS+=($!)
for _ in $(seq 50); do
  ip netns exec "$NS" python3 -c 'import dns.resolver; dns.resolver.resolve("field._domainkey.rsa.example", "TXT")' 2>/dev/null && break
  sleep 0.1
done

for eml in "$WORK"/out/*.eml; do
  name=$(basename "$eml")
  algorithm=$(grep -o 'a=[a-z0-9-]*' "$eml" | head -1)
  check "$name ($algorithm): one signature" test "$(grep -c '^DKIM-Signature:' "$eml")" = 1
  check "$name ($algorithm): opendkim-testmsg verifies" \
    sh -c "ip netns exec $NS opendkim-testmsg < '$eml' > '$eml.opendkim' 2>&1 && ! test -s '$eml.opendkim'"
  check "$name ($algorithm): dkimverify verifies" \
    sh -c "ip netns exec $NS dkimverify < '$eml' | grep -q 'signature ok'"
done
# Both verifiers say no to a changed body, for each algorithm: they are really checking.
for algorithm in rsa-sha256 ed25519-sha256; do
  signed=$(grep -l "a=$algorithm" "$WORK"/out/*.eml | head -1)
  sed 's/short/SHORT/; s/last line/last lime/' "$signed" > "$WORK/tampered.eml"
  check "opendkim-testmsg refuses a changed body ($algorithm)" \
    sh -c "! ip netns exec $NS opendkim-testmsg < '$WORK/tampered.eml' >/dev/null 2>&1"
  check "dkimverify refuses a changed body ($algorithm)" \
    sh -c "! ip netns exec $NS dkimverify < '$WORK/tampered.eml' 2>/dev/null | grep -q 'signature ok'"
done

if [ "$failed" -gt 0 ]; then
  for f in "$WORK"/out/*.opendkim; do [ -s "$f" ] && { echo "== $f"; cat "$f"; }; done
  tail -20 "$WORK/daemon.log"
fi
echo "dkim: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
