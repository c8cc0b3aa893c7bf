#!/bin/bash
# Test instances for the Molecule scenarios: Debian 12 with systemd as PID 1,
# booted by systemd-nspawn on an overlay of a cached base rootfs, each in its
# own network namespace on a private bridge.
#
#   nspawn.sh base              build (or reuse) the base rootfs, print its path
#   nspawn.sh net-up            create the bridge and the NAT/forward rules
#   nspawn.sh net-down          remove them again (no-op when absent)
#   nspawn.sh start NAME IP     boot instance NAME with address IP on the bridge
#   nspawn.sh stop NAME         stop NAME and remove its overlay (no-op when absent)
#   nspawn.sh pid NAME          print the PID of the instance's init (its "leader")
#   nspawn.sh shell NAME [CMD]  open a shell (or run CMD) inside NAME
#   nspawn.sh list              list running instances
#
# Settings (environment):
#   MAILROOM_MOLECULE_CACHE   where the base rootfs and instances live
#                             (default /var/cache/mailroom-molecule)
#   MAILROOM_MOLECULE_BRIDGE  bridge name            (default mrmol0)
#   MAILROOM_MOLECULE_NET     bridge /24, first three octets (default 10.213.37)
#   MAILROOM_MOLECULE_MIRROR  Debian mirror          (default http://deb.debian.org/debian)
#   MAILROOM_MOLECULE_SECURITY_MIRROR                (default http://deb.debian.org/debian-security)
#   MAILROOM_MOLECULE_BOOT_TIMEOUT  seconds to wait for boot (default 60)
set -euo pipefail

CACHE=${MAILROOM_MOLECULE_CACHE:-/var/cache/mailroom-molecule}
BRIDGE=${MAILROOM_MOLECULE_BRIDGE:-mrmol0}
NET=${MAILROOM_MOLECULE_NET:-10.213.37}
MIRROR=${MAILROOM_MOLECULE_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${MAILROOM_MOLECULE_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
BOOT_TIMEOUT=${MAILROOM_MOLECULE_BOOT_TIMEOUT:-60}
SUITE=bookworm
# sudo: site.yml uses become, as it does on a real server.
PACKAGES=systemd,systemd-sysv,dbus,python3,python3-apt,iproute2,procps,ca-certificates,sudo
# Bump when the way the base is built changes: forces a rebuild.
BASE_FORMAT=1
NAT_COMMENT=mailroom-molecule
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { echo "nspawn.sh: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

base_key() {
    # Local CAs are copied into the base, so they are part of its identity.
    {
        echo "$BASE_FORMAT $SUITE $PACKAGES $MIRROR $SECURITY_MIRROR"
        cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true
    } | sha256sum | cut -c1-16
}

base_dir() { echo "$CACHE/base-$(base_key)"; }

cmd_base() {
    local dir key tmp
    key=$(base_key)
    dir=$CACHE/base-$key
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.base.lock"
    flock 9
    if [ -f "$dir/.mailroom-base" ] && [ "$(cat "$dir/.mailroom-base")" = "$key" ]; then
        log "reusing base rootfs $dir"
        echo "$dir"
        return
    fi
    tmp=$CACHE/.base-build.$$
    rm -rf "$tmp" "$dir"
    mkdir -p "$tmp"
    log "building base rootfs ($SUITE, minbase + $PACKAGES)"
    local t0=$SECONDS
    # Host-local CAs (e.g. an inspecting egress proxy) so pip/apt over HTTPS
    # inside the instance trust what the controller trusts.
    mmdebstrap --variant=minbase --include="$PACKAGES" \
        --skip=cleanup/apt/lists \
        --customize-hook='printf "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" > "$1/etc/hosts"' \
        --customize-hook='for c in /usr/local/share/ca-certificates/*.crt; do [ -f "$c" ] && cp "$c" "$1/usr/local/share/ca-certificates/"; done; chroot "$1" update-ca-certificates >/dev/null 2>&1 || true' \
        --customize-hook='chroot "$1" systemctl enable systemd-networkd.service >/dev/null 2>&1' \
        --customize-hook='chroot "$1" systemctl mask systemd-networkd-wait-online.service getty@tty1.service >/dev/null 2>&1' \
        --customize-hook=': > "$1/etc/machine-id"' \
        "$SUITE" "$tmp" \
        "deb $MIRROR $SUITE main" \
        "deb $MIRROR $SUITE-updates main" \
        "deb $SECURITY_MIRROR $SUITE-security main" >&2
    echo "$key" > "$tmp/.mailroom-base"
    mv "$tmp" "$dir"
    # Older bases of this cache are of no further use.
    for old in "$CACHE"/base-*; do
        [ "$old" = "$dir" ] || [ ! -d "$old" ] && continue
        if grep -qF "lowerdir=$old," /proc/mounts; then
            log "keeping stale base $old: an instance still uses it"
        else
            log "removing stale base $old"
            rm -rf "$old"
        fi
    done
    log "base rootfs built in $((SECONDS - t0)) s: $dir"
    echo "$dir"
}

ipt() { iptables -w "$@"; }

cmd_net_up() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
    fi
    ip addr replace "$NET.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    mkdir -p "$CACHE"
    [ -f "$CACHE/.ip_forward" ] || cat /proc/sys/net/ipv4/ip_forward > "$CACHE/.ip_forward"
    echo 1 > /proc/sys/net/ipv4/ip_forward
    # Instances may reach the outside only for DNS, HTTP and HTTPS (apt, pip).
    ipt -N MRMOL-FWD 2>/dev/null || ipt -F MRMOL-FWD
    ipt -A MRMOL-FWD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
    ipt -A MRMOL-FWD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
    ipt -A MRMOL-FWD -i "$BRIDGE" -p udp --dport 53 -j ACCEPT
    ipt -A MRMOL-FWD -i "$BRIDGE" -p tcp -m multiport --dports 53,80,443 -j ACCEPT
    ipt -A MRMOL-FWD -i "$BRIDGE" -j DROP
    ipt -A MRMOL-FWD -o "$BRIDGE" -j DROP
    ipt -C FORWARD -j MRMOL-FWD -m comment --comment "$NAT_COMMENT" 2>/dev/null \
        || ipt -I FORWARD -j MRMOL-FWD -m comment --comment "$NAT_COMMENT"
    ipt -t nat -C POSTROUTING -s "$NET.0/24" ! -o "$BRIDGE" -j MASQUERADE -m comment --comment "$NAT_COMMENT" 2>/dev/null \
        || ipt -t nat -A POSTROUTING -s "$NET.0/24" ! -o "$BRIDGE" -j MASQUERADE -m comment --comment "$NAT_COMMENT"
    log "bridge $BRIDGE $NET.1/24 up, NAT on"
}

cmd_net_down() {
    while ipt -t nat -C POSTROUTING -s "$NET.0/24" ! -o "$BRIDGE" -j MASQUERADE -m comment --comment "$NAT_COMMENT" 2>/dev/null; do
        ipt -t nat -D POSTROUTING -s "$NET.0/24" ! -o "$BRIDGE" -j MASQUERADE -m comment --comment "$NAT_COMMENT"
    done
    while ipt -C FORWARD -j MRMOL-FWD -m comment --comment "$NAT_COMMENT" 2>/dev/null; do
        ipt -D FORWARD -j MRMOL-FWD -m comment --comment "$NAT_COMMENT"
    done
    if ipt -S MRMOL-FWD >/dev/null 2>&1; then
        ipt -F MRMOL-FWD
        ipt -X MRMOL-FWD
    fi
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link del "$BRIDGE"
    fi
    if [ -f "$CACHE/.ip_forward" ]; then
        cat "$CACHE/.ip_forward" > /proc/sys/net/ipv4/ip_forward
        rm -f "$CACHE/.ip_forward"
    fi
    log "bridge $BRIDGE and NAT removed"
}

inst_dir() {
    [[ "$1" =~ ^[a-zA-Z0-9][a-zA-Z0-9-]{0,30}$ ]] || die "bad instance name: $1"
    echo "$CACHE/instances/$1"
}

# PID of the instance's init: the child of its systemd-nspawn process.
leader_pid() {
    local d=$1 npid child
    [ -f "$d/nspawn.pid" ] || return 1
    npid=$(cat "$d/nspawn.pid")
    kill -0 "$npid" 2>/dev/null || return 1
    child=$(pgrep -P "$npid" | head -n1) || return 1
    [ -n "$child" ] && echo "$child"
}

cmd_pid() {
    local d
    d=$(inst_dir "$1")
    leader_pid "$d" || die "instance $1 is not running"
}

cmd_start() {
    local name=$1 ip=$2 d base pid state="" t
    d=$(inst_dir "$name")
    [[ "$ip" =~ ^$NET\.([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -ge 2 ] && [ "${BASH_REMATCH[1]}" -le 254 ] \
        || die "address $ip is not inside $NET.0/24"
    if leader_pid "$d" >/dev/null 2>&1; then
        log "instance $name already running"
        leader_pid "$d"
        return
    fi
    cmd_stop "$name" >/dev/null 2>&1 || true
    base=$(cmd_base)
    mkdir -p "$d/upper" "$d/work" "$d/root"
    mount -t overlay overlay -o "lowerdir=$base,upperdir=$d/upper,workdir=$d/work" "$d/root"
    # Per-instance files, written into the overlay.
    printf '%s\n' "$name" > "$d/root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n%s\t%s\n::1\tlocalhost ip6-localhost ip6-loopback\n' "$ip" "$name" > "$d/root/etc/hosts"
    rm -f "$d/root/etc/resolv.conf"
    cp -L /etc/resolv.conf "$d/root/etc/resolv.conf"
    mkdir -p "$d/root/etc/systemd/network"
    cat > "$d/root/etc/systemd/network/10-host0.network" <<EOF
[Match]
Name=host0

[Network]
Address=$ip/24
Gateway=$NET.1
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
    echo "$ip" > "$d/ip"
    # The host side of the veth is named vb-<name> (at most 15 chars).
    setsid systemd-nspawn --quiet --boot --register=no --keep-unit \
        --directory="$d/root" --machine="$name" --hostname="$name" \
        --network-bridge="$BRIDGE" --resolv-conf=off --timezone=off \
        --console=read-only \
        --setenv=container=systemd-nspawn \
        </dev/null >"$d/console.log" 2>&1 &
    echo $! > "$d/nspawn.pid"
    t=$SECONDS
    while :; do
        if ! kill -0 "$(cat "$d/nspawn.pid")" 2>/dev/null; then
            tail -n 40 "$d/console.log" >&2
            die "systemd-nspawn for $name exited during boot"
        fi
        if pid=$(leader_pid "$d" 2>/dev/null); then
            state=$(nsenter -t "$pid" -m -u -i -n -p -r -w env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
                systemctl is-system-running 2>/dev/null || true)
            case "$state" in
                running|degraded) break ;;
            esac
        fi
        if [ $((SECONDS - t)) -ge "$BOOT_TIMEOUT" ]; then
            tail -n 40 "$d/console.log" >&2
            die "instance $name did not boot within ${BOOT_TIMEOUT}s (state: ${state:-none})"
        fi
        sleep 0.2
    done
    # Wait for the address to be configured on host0.
    t=$SECONDS
    until nsenter -t "$pid" -n ip -4 -o addr show dev host0 2>/dev/null | grep -q "inet $ip/"; do
        [ $((SECONDS - t)) -lt 30 ] || die "instance $name: host0 got no address $ip"
        sleep 0.2
    done
    echo "$pid" > "$d/leader.pid"
    log "instance $name up ($state) at $ip, leader pid $pid"
    echo "$pid"
}

cmd_stop() {
    local name=$1 d npid i
    d=$(inst_dir "$name")
    [ -d "$d" ] || return 0
    if [ -f "$d/nspawn.pid" ]; then
        npid=$(cat "$d/nspawn.pid")
        if kill -0 "$npid" 2>/dev/null && [ "$(cat /proc/"$npid"/comm 2>/dev/null)" = systemd-nspawn ]; then
            # SIGTERM asks nspawn to shut the container down cleanly.
            kill -TERM "$npid" 2>/dev/null || true
            for i in $(seq 1 100); do
                kill -0 "$npid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$npid" 2>/dev/null; then
                log "instance $name did not stop in 10 s, killing it"
                kill -KILL "$npid" 2>/dev/null || true
                sleep 0.5
            fi
        fi
    fi
    if mountpoint -q "$d/root"; then
        umount "$d/root" 2>/dev/null || umount -l "$d/root"
    fi
    rm -rf "$d"
    log "instance $name removed"
}

cmd_shell() {
    local name=$1 pid
    shift
    pid=$(cmd_pid "$name")
    if [ $# -eq 0 ]; then set -- bash -l; fi
    exec nsenter -t "$pid" -m -u -i -n -p -r -w \
        env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 HOME=/root TERM="${TERM:-dumb}" USER=root LOGNAME=root "$@"
}

cmd_list() {
    local d
    for d in "$CACHE"/instances/*/; do
        [ -d "$d" ] || continue
        d=${d%/}
        if pid=$(leader_pid "$d" 2>/dev/null); then
            echo "$(basename "$d") $(cat "$d/ip" 2>/dev/null) pid=$pid"
        else
            echo "$(basename "$d") (not running)"
        fi
    done
}

case "${1:-}" in
    base) cmd_base ;;
    net-up) cmd_net_up ;;
    net-down) cmd_net_down ;;
    start) [ $# -eq 3 ] || die "usage: $0 start NAME IP"; cmd_start "$2" "$3" ;;
    stop) [ $# -eq 2 ] || die "usage: $0 stop NAME"; cmd_stop "$2" ;;
    pid) [ $# -eq 2 ] || die "usage: $0 pid NAME"; cmd_pid "$2" ;;
    shell) [ $# -ge 2 ] || die "usage: $0 shell NAME [CMD...]"; shift; cmd_shell "$@" ;;
    list) cmd_list ;;
    *) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
