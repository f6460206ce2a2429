#!/usr/bin/env bash
# Interop with real SMTP clients against the real daemon: Python smtplib
# (STARTTLS + AUTH on submission, implicit TLS on smtps), swaks (pipelining, STARTTLS,
# raw bytes that try SMTP smuggling), and nmap's smtp-open-relay script. Binds loopback
# only, stops the daemon it started by its pid, and cleans up its directory.
# Usage: tests/interop/run.sh [path/to/ferrymail]   (default: target/debug/ferrymail)
set -euo pipefail
cd "$(dirname "$0")/../.."
. tests/lib.sh
BIN=${1:-target/debug/ferrymail}
[ -x "$BIN" ] || { echo "interop: $BIN not built (run cargo build first)"; exit 1; }
for tool in swaks nmap openssl python3; do
  command -v "$tool" >/dev/null || { echo "interop: $tool is not installed"; exit 1; }
done

WORK=$(mktemp -d)
DAEMON=""
SMALL_DAEMON=""
cleanup() {
  stop_pids $DAEMON $SMALL_DAEMON
  mountpoint -q "$WORK/small" 2>/dev/null && umount "$WORK/small"
  rm -rf "$WORK"
}
trap cleanup EXIT

SMTP=$(free_port); SUBMISSION=$(free_port); SMTPS=$(free_port)

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=edge.test \
  -addext subjectAltName=DNS:edge.test -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
echo "alice:$(echo 'correct horse' | "$BIN" hash-password)" > "$WORK/users"
cat > "$WORK/ferrymail.toml" <<TOML
hostname = "edge.test"
spool = "$WORK/spool"
[[listen]]
addr = "127.0.0.1:$SMTP"
kind = "smtp"
[[listen]]
addr = "127.0.0.1:$SUBMISSION"
kind = "submission"
[[listen]]
addr = "127.0.0.1:$SMTPS"
kind = "smtps"
[tls]
cert = "cert.pem"
key = "key.pem"
[accept]
users = "users"
relay_networks = []
local_domains = ["ours.example"]
[link]
mode = "manual"     # keep what arrives in the queue, to count it
TOML
FM=("$BIN" --config "$WORK/ferrymail.toml")
"${FM[@]}" serve 2> "$WORK/daemon.log" &
DAEMON=$!
for _ in $(seq 100); do "${FM[@]}" status >/dev/null 2>&1 && break; sleep 0.1; done
"${FM[@]}" status >/dev/null || { cat "$WORK/daemon.log"; exit 1; }

queued() { "${FM[@]}" queue --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

# --- Python smtplib ---------------------------------------------------------------
py() { SSL_CERT_FILE="$WORK/cert.pem" python3 - "$@"; }
check "smtplib: submission with STARTTLS and AUTH relays" py "$SUBMISSION" <<'PY'
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), local_hostname="client.example")
s.ehlo()
assert "auth" not in s.esmtp_features, "AUTH offered in clear"
s.starttls(context=ctx); s.ehlo()
s.login("alice", "correct horse")
refused = s.sendmail("alice@client.example", ["bob@elsewhere.example"], "Subject: smtplib\r\n\r\nhi\r\n")
assert refused == {}, refused
s.quit()
PY
check "smtplib: wrong password refused with 535" py "$SUBMISSION" <<'PY'
import smtplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1])); s.starttls(context=ctx); s.ehlo()
try:
    s.login("alice", "wrong"); sys.exit(1)
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535
PY
check "smtplib: implicit TLS on smtps" py "$SMTPS" <<'PY'
import smtplib, ssl, sys
ctx = ssl.create_default_context(); ctx.check_hostname = False
s = smtplib.SMTP_SSL("127.0.0.1", int(sys.argv[1]), context=ctx)
s.login("alice", "correct horse")
s.sendmail("alice@client.example", ["carol@elsewhere.example"], "Subject: smtps\r\n\r\nhi\r\n")
s.quit()
PY
check "two messages queued by smtplib" test "$(queued)" = 2

# --- sendmail as an unprivileged user -----------------------------------------------
# As root the daemon makes maildrop/ 1733: writable, not readable, by every user. A user's
# drop must still be made durable (syncfs stands in for the fsync of new/ it may not open)
# and be picked up.
chmod 755 "$WORK"
if id nobody >/dev/null 2>&1 && su -s /bin/sh nobody -c "test -x '$BIN'"; then
  before=$(queued)
  check "sendmail as nobody into the 1733 maildrop exits 0" bash -c \
    "printf 'Subject: from nobody\n\nhi\n' | su -s /bin/sh nobody -c \"'$BIN' --config '$WORK/ferrymail.toml' send -f nobody@ours.example bob@ours.example\""
  for _ in $(seq 50); do [ "$(queued)" -gt "$before" ] && break; sleep 0.1; done
  check "nobody's message was picked up" test "$(queued)" -gt "$before"
  check "and listed with nobody's sender" bash -c "'$BIN' --config '$WORK/ferrymail.toml' queue --json | grep -q nobody@ours.example"
else
  echo "skip sendmail as nobody: nobody cannot run $BIN from here"
fi
MARK=$(queued)

# --- swaks ------------------------------------------------------------------------
SW=(swaks --server 127.0.0.1 --port "$SMTP" --helo client.example --from a@client.example --silent 2)
check "swaks: pipelined delivery to a local domain" "${SW[@]}" --to bob@ours.example --pipeline
check "swaks: STARTTLS delivery" "${SW[@]}" --to bob@ours.example --tls
check "swaks: relay refused without AUTH" bash -c '! "$@"' _ "${SW[@]}" --to victim@elsewhere.example
check "swaks: relay allowed with AUTH" "${SW[@]}" --to victim@elsewhere.example --tls --auth PLAIN --auth-user alice --auth-password 'correct horse'
check "five messages queued" test "$(queued)" = $((MARK + 3))
check "swaks: smuggling with bare LF refused" bash -c '! "$@"' _ "${SW[@]}" --to bob@ours.example --no-data-fixup \
  --data $'Subject: smuggle\r\n\r\nx\n.\nMAIL FROM:<admin@ours.example>\r\nRCPT TO:<victim@ours.example>\r\nDATA\r\nsmuggled\r\n.\r\n'
check "nothing queued by the smuggling attempt" test "$(queued)" = $((MARK + 3))

# --- nmap smtp-open-relay -----------------------------------------------------------
# The script tries 16 forms of relaying to its own test domain (nmap.scanme.org, never
# resolved: nothing leaves this machine), using our name and address literals.
nmap -Pn -sV -p "$SMTP" --script smtp-open-relay \
  --script-args smtp-open-relay.ip=127.0.0.1 127.0.0.1 > "$WORK/nmap.txt" 2>&1 || true
check "nmap ran the relay script" grep -q "smtp-open-relay" "$WORK/nmap.txt"
check "nmap finds no open relay" bash -c "grep -q \"doesn't seem to be an open relay\" '$WORK/nmap.txt' && ! grep -q 'Server is an open relay' '$WORK/nmap.txt'"
# The same address forms go through once authenticated (the final domain is not ours).
for rcpt in 'victim%elsewhere.example@[127.0.0.1]' '"victim@elsewhere.example"@[127.0.0.1]' 'victim@elsewhere.example'; do
  check "authenticated relay: $rcpt" "${SW[@]}" --to "$rcpt" --tls --auth PLAIN --auth-user alice --auth-password 'correct horse'
done

# --- SIGHUP reloads the certificate ------------------------------------------------
served_cert() {
  openssl s_client -connect "127.0.0.1:$SMTPS" -servername edge.test </dev/null 2>/dev/null \
    | openssl x509 -noout -fingerprint -sha256 2>/dev/null
}
before=$(served_cert)
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=edge.test \
  -addext subjectAltName=DNS:edge.test -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
fresh=$(openssl x509 -in "$WORK/cert.pem" -noout -fingerprint -sha256)
kill -HUP "$DAEMON"
for _ in $(seq 50); do [ "$(served_cert)" = "$fresh" ] && break; sleep 0.1; done
check "SIGHUP: the new certificate is served" test "$(served_cert)" = "$fresh"
check "SIGHUP: it differs from the old one" test "$before" != "$fresh"
echo "not a certificate" > "$WORK/cert.pem"
kill -HUP "$DAEMON"; sleep 0.5
check "SIGHUP with a broken file keeps the working certificate" test "$(served_cert)" = "$fresh"
check "the daemon survived both reloads" kill -0 "$DAEMON"

kill -TERM "$DAEMON"; wait "$DAEMON" 2>/dev/null || true; DAEMON=""

# --- a real full disk: the spool on a 3 MiB tmpfs -----------------------------------
mkdir -p "$WORK/small"
if mount -t tmpfs -o size=3m tmpfs "$WORK/small" 2>/dev/null; then
  SMALL_PORT=$(free_port)
  cat > "$WORK/small.toml" <<TOML
hostname = "edge.test"
spool = "$WORK/small/spool"
[link]
mode = "manual"
[[listen]]
addr = "127.0.0.1:$SMALL_PORT"
TOML
  SM=("$BIN" --config "$WORK/small.toml")
  "${SM[@]}" serve 2> "$WORK/small.log" &
  SMALL_DAEMON=$!
  for _ in $(seq 100); do "${SM[@]}" status >/dev/null 2>&1 && break; sleep 0.1; done
  check "full disk: SIZE that cannot fit is refused at MAIL, accepted mail is all queued, space returns" \
    python3 - "$SMALL_PORT" "$BIN" "$WORK/small.toml" <<'PY'
import json, smtplib, subprocess, sys
port, binary, config = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = smtplib.SMTP("127.0.0.1", port); s.ehlo()
code, _ = s.docmd("MAIL FROM:<a@client.example> SIZE=5000000")
assert code == 452, f"MAIL with an impossible SIZE answered {code}"
s.rset()
body = "Subject: fill\r\n\r\n" + ("x" * 998 + "\r\n") * 500   # about 500 KB
accepted = refused = 0
for _ in range(12):
    try:
        s.sendmail("a@client.example", ["b@example.net"], body)
        accepted += 1
    except smtplib.SMTPDataError as e:
        assert e.smtp_code in (451, 452), e.smtp_code
        refused += 1
    except smtplib.SMTPSenderRefused as e:
        assert e.smtp_code == 452, e.smtp_code
        refused += 1
assert accepted > 0 and refused > 0, (accepted, refused)
listed = json.loads(subprocess.run([binary, "--config", config, "queue", "--json"], capture_output=True, check=True).stdout)
assert len(listed) == accepted, f"{accepted} accepted but {len(listed)} queued"
subprocess.run([binary, "--config", config, "queue", "delete", "--all"], check=True, capture_output=True)
s.sendmail("a@client.example", ["b@example.net"], body)   # room again
s.quit()
PY
  kill -TERM "$SMALL_DAEMON"; wait "$SMALL_DAEMON" 2>/dev/null || true; SMALL_DAEMON=""
  umount "$WORK/small"
else
  echo "skip full disk: cannot mount a tmpfs here (not root?)"
fi

if [ "$failed" -gt 0 ]; then
  echo "--- nmap output"; cat "$WORK/nmap.txt"; echo "--- daemon log"; tail -40 "$WORK/daemon.log"
fi
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
