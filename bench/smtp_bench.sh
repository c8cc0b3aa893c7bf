#!/bin/sh
# SMTP benchmark: Mailroom's smtpd against a private Postfix instance, interleaved.
# Usage: bench/smtp_bench.sh [--quick] [--profile] [--rounds N] ...  (--help for all options)
# Run as root. Results: bench/results/latest.md; see docs/benchmarks.md.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
exec "$python" "$here/smtp_bench.py" "$@"
