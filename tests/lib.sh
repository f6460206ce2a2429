# Shell helpers for the suites in tests/ and the benchmarks in bench/ (sourced, not run).
# Nothing here starts a process that it does not also give back by pid.

# A loopback TCP port nobody listens on (just now).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# check NAME COMMAND...: runs COMMAND, prints "ok" or "FAIL" with NAME, and counts.
passed=0; failed=0
check() {
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "ok   $name"; else failed=$((failed + 1)); echo "FAIL $name"; fi
}

# stop_pids PID...: SIGTERM each, and wait for those that were running.
stop_pids() {
  local pid
  for pid in "$@"; do
    if kill -TERM "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null || true; fi
  done
}

# private_postfix DIR PORT [MAIN.CF LINES]: a stock Postfix of its own in DIR, its smtpd
# on 127.0.0.1:PORT, logging to DIR/maillog, started. Stop it with `postfix_stop DIR`.
private_postfix() {
  local dir=$1 port=$2 extra=${3:-}
  mkdir -p "$dir/etc" "$dir/data" "$dir/queue"
  cat > "$dir/etc/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
myhostname = postfix.test.example
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
$extra
CF
  sed -e "s/^smtp      inet.*/$port      inet  n       -       n       -       -       smtpd/" \
      -e '/^#/d' /etc/postfix/master.cf > "$dir/etc/master.cf"
  chown postfix "$dir/data"
  # Postfix reports errors through its log; `script` gives it a terminal to print them.
  script -qec "postfix -c $dir/etc start" /dev/null > "$dir/start.log" 2>&1 \
    || { cat "$dir/start.log"; return 1; }
  local _
  for _ in $(seq 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "private postfix on port $port did not come up"; return 1
}

postfix_stop() {
  script -qc "postfix -c $1/etc stop" /dev/null >/dev/null 2>&1 || true
}
