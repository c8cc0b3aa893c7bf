#!/usr/bin/env bash
# Quick start, step 1: install Ansible into ./.venv and turn a machine into a Mailroom mail server.
#
#   ./install.sh                      # this machine, from inventory.example
#   ./install.sh -i my-inventory.yml  # your own inventory (any ansible-playbook options work)
#
# Run it again to update: the playbook converges, a second run changes nothing.
set -euo pipefail
cd "$(dirname "$0")"

apt_install() {
    local missing=()
    for pkg in "$@"; do dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg"); done
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || { echo "install.sh: needs root to install ${missing[*]}" >&2; exit 1; }
        apt-get -o DPkg::Lock::Timeout=900 update -qq
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq "${missing[@]}"
    fi
}

# Debian's own Python, so the controller needs nothing that Debian 12 doesn't ship.
apt_install python3 python3-venv
[ -x .venv/bin/pip ] || /usr/bin/python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -r requirements-controller.txt
# Collections come with the ansible bundle; this is a no-op unless requirements.yml asks for more.
.venv/bin/ansible-galaxy collection install -r requirements.yml >/dev/null

export PATH="$PWD/.venv/bin:$PATH"
inventory=(-i inventory.example)
for arg in "$@"; do case "$arg" in -i|--inventory|--inventory=*|-i*) inventory=() ;; esac; done
exec ansible-playbook "${inventory[@]}" playbooks/site.yml "$@"
