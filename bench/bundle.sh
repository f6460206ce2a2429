#!/usr/bin/env bash
# Benchmark (not a test): bundles at scale (README, "Benchmark"). A station holds N
# typical messages (bench/mail_corpus.py: plain text, replies quoting earlier mail,
# HTML, and base64 attachments of already-compressed data, about 70/30 by bytes), put
# in over SMTP. Figures:
#   export     seconds for `ferrymail bundle export` of all N, and msg/s
#   import     seconds for `ferrymail bundle import --receipt` at the hub (every message
#              committed durably, as over SMTP), and msg/s
#   receipt    seconds for the station to read the receipt (N recipients delivered)
#   size       the bundle's bytes against the messages' (target: at most 45 %), and
#              against the corpus compressed whole by `zstd -3` for reference
# Targets: at least 2,000 msg/s each way.
# Needs: python3 (and zstd for the reference figure, when installed). Run as root.
# Usage: bench/bundle.sh [N]   (default 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/lib.sh
. bench/lib.sh
N=${1:-10000}
bench_setup bundle

"$FM_BIN" bundle keygen --out "$WORK/shared.key" >/dev/null
STATION=$(free_port); HUB=$(free_port)
fm_config station "$STATION" "[link]
mode = \"manual\"
[upstream]
smarthost = \"127.0.0.1:1\"
[bundle]
node = \"station\"
[[bundle_peer]]
node = \"hub\"
key_file = \"$WORK/shared.key\"
routes = [\"upstream\"]
[dns]
servers = [\"127.0.0.1:1\"]"
fm_config hub "$HUB" "[link]
mode = \"manual\"
[upstream]
smarthost = \"127.0.0.1:1\"
[[route]]
name = \"station\"
domains = [\"station.example\"]
via = \"bundle\"
[bundle]
node = \"hub\"
[[bundle_peer]]
node = \"station\"
key_file = \"$WORK/shared.key\"
routes = [\"station\"]
[dns]
servers = [\"127.0.0.1:1\"]"
fm_start station
fm_start hub

read -r _ RAW ATTACHED < <(python3 bench/mail_corpus.py "$WORK/corpus" "$N")
python3 - "$STATION" "$WORK/corpus" <<'PY'
import email.parser, os, smtplib, sys
port, corpus = int(sys.argv[1]), sys.argv[2]
parser = email.parser.BytesHeaderParser()
with smtplib.SMTP("127.0.0.1", port) as s:
    for name in sorted(os.listdir(corpus)):
        data = open(os.path.join(corpus, name), "rb").read()
        h = parser.parsebytes(data)
        s.sendmail(h["From"], [h["To"]], data)
PY
for _ in $(seq 600); do [ "$(count station)" -ge "$N" ] && break; sleep 0.1; done

t0=$(now)
fm station bundle export --route upstream --out "$WORK/to-hub.bundle" > "$WORK/export.out"
t1=$(now)
fm hub bundle import --receipt "$WORK/to-station.receipt" "$WORK/to-hub.bundle" > "$WORK/import.out"
t2=$(now)
fm station bundle import "$WORK/to-station.receipt" > "$WORK/receipt.out"
t3=$(now)
cat "$WORK/export.out" "$WORK/import.out" "$WORK/receipt.out"

BUNDLE=$(stat -c %s "$WORK/to-hub.bundle")
STORED=$(sed -n 's/.*bytes (\([0-9]*\) of mail).*/\1/p' "$WORK/export.out")
REF=n/a
if command -v zstd >/dev/null; then
  REF=$(cat "$WORK"/corpus/*.eml | zstd -3 -c | wc -c)
fi
echo
echo "messages:            $N (corpus $RAW bytes, $ATTACHED in attachments)"
echo "export:              $(calc "round($t1 - $t0, 2)") s, $(calc "round($N / ($t1 - $t0))") msg/s"
echo "import (+receipt):   $(calc "round($t2 - $t1, 2)") s, $(calc "round($N / ($t2 - $t1))") msg/s"
echo "receipt at station:  $(calc "round($t3 - $t2, 2)") s"
echo "bundle size:         $BUNDLE bytes = $(calc "round(100 * $BUNDLE / $STORED, 1)") % of the $STORED bytes of mail in it (target: at most 45 %)"
echo "zstd -3, whole:      $REF bytes (the corpus in one stream, for reference)"
