#!/bin/sh
# IMAP benchmark: Mailroom's imapd against a private Dovecot instance, interleaved.
# Usage: bench/imap_bench.sh [--quick] [--sections throughput,login,memory,big] ...  (--help for all)
# Run as root. Needs Dovecot, a bench-only dependency (not in test.sh); installed on first use:
#   apt-get install -y dovecot-imapd
# The package's own system instance is never touched: the script runs `dovecot -F -c <private conf>`
# below a temporary folder. Results: bench/results/imap-latest.md (--quick: imap-quick.md);
# see docs/benchmarks.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
if ! command -v dovecot >/dev/null 2>&1 || ! command -v doveadm >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y dovecot-imapd
fi
# 10,000 idle sessions: the client holds 10,000 sockets and so does each server; raise the hard
# limit where allowed (the script then raises the soft limit to it and checks it is enough).
ulimit -Hn 65536 2>/dev/null || true
exec "$python" "$here/imap_bench.py" "$@"
