#!/usr/bin/env bash
# Quick start, step 2: the whole test suite, exactly as CI runs it.
#
#   ./test.sh              everything: lint, pytest (unit, integration, inventory checks), Molecule
#   ./test.sh --no-molecule    skip the Molecule scenarios (they need root, systemd-nspawn and ~15 minutes)
#
# It installs what it needs itself: Debian packages (swaks, mmdebstrap, systemd-nspawn, ...) and the
# pinned Python tools into ./.venv. Run as root on a disposable Debian 12 machine or VM.
set -euo pipefail
cd "$(dirname "$0")"

molecule=1
for arg in "$@"; do
    case "$arg" in
        --no-molecule) molecule=0 ;;
        *) echo "test.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done

step() { printf '\n=== %s\n' "$*"; }

step "Debian packages"
packages=(python3 python3-venv openssl swaks ca-certificates fetchmail getmail6 dnsmasq)
[ "$molecule" = 1 ] && packages+=(mmdebstrap systemd-container iptables debian-archive-keyring)
# A real Prometheus scrapes metricsd in the tests; promtool checks the alert rules.
packages+=(prometheus)
# Real borg backups, checks and restores in the backup tests (borgmatic comes from requirements-dev.txt).
packages+=(borgbackup)
# Dovecot's imap binary is the reference the IMAP message-structure tests compare with.
packages+=(dovecot-imapd)
# A real ACME CA (pebble) issues certificates in the tests; testssl.sh audits the TLS listeners.
packages+=(pebble testssl.sh)
# Real filtering engines in the tests: rspamd (with redis for learning) and clamd.
packages+=(rspamd redis-server clamav-daemon)
# Real IMAP clients run against imapd in the tests: mbsync, offlineimap3, mutt (under tmux), curl.
packages+=(isync offlineimap3 mutt tmux curl)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq "${missing[@]}"
fi

step "Python tools (.venv)"
[ -x .venv/bin/pip ] || /usr/bin/python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt -r appliance/requirements.lock
# Editable, so the tests always run the code in this tree.
.venv/bin/pip install -q --disable-pip-version-check --no-deps -e ./appliance
.venv/bin/ansible-galaxy collection install -r requirements.yml >/dev/null
export PATH="$PWD/.venv/bin:$PATH"
# Test processes must not leave bytecode in the tree the role copies to servers.
export PYTHONDONTWRITEBYTECODE=1

step "ruff"
ruff check appliance tests bench molecule
ruff format --check appliance tests bench molecule

step "yamllint"
yamllint -s .

step "ansible-lint (production profile, offline)"
ansible-lint

step "pytest"
python -m pytest -p no:cacheprovider tests

if [ "$molecule" = 1 ]; then
    step "molecule test --all (Debian 12, systemd as PID 1, systemd-nspawn): default, backup (restore on a second host), two-hosts (mail between two appliances by MX)"
    # One Molecule run at a time on a machine: the scenarios share the bridge and the base rootfs.
    flock /tmp/mailroom-molecule.lock molecule test --all
fi
step "all tests passed"
