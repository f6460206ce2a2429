# Helpers for the benchmark scripts that run whole ferrymail daemons (sourced after
# tests/lib.sh; `bench_setup` sets WORK, FM_BIN and the PIDS array the others use).

# bench_setup NAME: builds the release binary (FM_BIN), makes a fresh WORK directory
# under target/, and at exit stops every pid in PIDS, a private Postfix in
# WORK/postfix if one was started, and removes WORK.
bench_setup() {
  cargo build --release --quiet --bin ferrymail
  FM_BIN=$PWD/target/release/ferrymail
  WORK=$(mktemp -d -p "$PWD/target" "bench-$1.XXXXXX")
  chmod 755 "$WORK"
  PIDS=()
  trap bench_cleanup EXIT
}
bench_cleanup() {
  stop_pids "${PIDS[@]}"
  [ -d "$WORK/postfix" ] && postfix_stop "$WORK/postfix"
  rm -rf "$WORK"
}

now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }

# until_true SECONDS COMMAND...: polls every 20 ms; gives up (exit 1) after SECONDS.
until_true() {
  local end=$(( $(date +%s) + $1 )); shift
  until "$@"; do
    [ "$(date +%s)" -lt "$end" ] || { echo "timed out: $*" >&2; exit 1; }
    sleep 0.02
  done
}

# netns_pair A B: two fresh network namespaces, loopback up (a link emulator joins
# them); netns_gone A B removes them.
netns_pair() {
  for ns in "$@"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
}
netns_gone() {
  for ns in "$@"; do ip netns del "$ns" 2>/dev/null || true; done
}

# fm_config NAME PORT EXTRA: a daemon's configuration in $WORK/NAME, listening on PORT.
fm_config() {
  mkdir -p "$WORK/$1"
  printf 'hostname = "%s.bench.example"\nspool = "%s/%s/spool"\n[[listen]]\naddr = "127.0.0.1:%s"\n%s\n' \
    "$1" "$WORK" "$1" "$2" "$3" > "$WORK/$1/ferrymail.toml"
}

# fm NAME ARGS...: a ferrymail command against that daemon's configuration.
fm() { local name=$1; shift; "$FM_BIN" --config "$WORK/$name/ferrymail.toml" "$@"; }

# fm_start NAME: starts the daemon (its own pid goes to PIDS) and waits until it answers.
fm_start() {
  "$FM_BIN" --config "$WORK/$1/ferrymail.toml" serve 2> "$WORK/$1/daemon.log" &
  PIDS+=($!)
  local _
  for _ in $(seq 100); do fm "$1" status >/dev/null 2>&1 && break; sleep 0.1; done
}

# count NAME: messages in that daemon's index (read-only; cheap enough to poll).
count() {
  python3 -c 'import sqlite3,sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(c.execute("SELECT COUNT(*) FROM message").fetchone()[0])' "$WORK/$1/spool/index.sqlite3"
}
