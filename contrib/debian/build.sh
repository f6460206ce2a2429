#!/usr/bin/env bash
# Builds target/debian/ferrymail_*.deb with cargo-deb (`cargo install cargo-deb`):
# the release binary, its manual pages (gzipped, sendmail(8) and mailq(1) renamed so
# they sit beside other MTAs' as alternatives) and shell completions, then the package.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --locked --bin ferrymail
BIN=target/release/ferrymail
rm -rf target/deb && mkdir -p target/deb/man target/deb/completions
"$BIN" man --dir target/deb/man >/dev/null
mv target/deb/man/man8/sendmail.8 target/deb/man/man8/ferrymail-sendmail.8
mv target/deb/man/man1/mailq.1 target/deb/man/man1/ferrymail-mailq.1
gzip -9n target/deb/man/man*/*
"$BIN" completions bash > target/deb/completions/ferrymail
"$BIN" completions zsh > target/deb/completions/_ferrymail
"$BIN" completions fish > target/deb/completions/ferrymail.fish
cargo deb --no-build --no-strip
