"""`mailroom check`: a self-test of a running host that explains itself.

Each check gives OK, WARN or FAIL with one sentence saying what it saw. The exit code is the
worst of them: 0 all OK, 1 some WARN, 2 some FAIL. Nothing here changes anything on the host.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from . import backup, monitoring
from .config import Config, ConfigError, Listener

OK, WARN, FAIL = "OK", "WARN", "FAIL"
SEVERITY = {OK: 0, WARN: 1, FAIL: 2}
CERT_WARN_DAYS = 14
DISK_WARN_FRACTION = 0.10  # less than this share of the store's filesystem free: WARN
QUEUE_WARN_AGE = 6 * 3600  # an entry waiting longer than this: something keeps deferring it
QUEUE_WARN_COUNT = 1000
BACKUP_FAIL_AGE = 26 * 3600  # a daily backup, with two hours of slack (the alert's threshold)
PORT_TIMEOUT = 3.0
DNS_TIMEOUT = 3.0
MAX_DNS_RECORDS = 100


@dataclass(frozen=True)
class Result:
    check: str
    status: str
    message: str


def _connect_address(address: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)


def listeners_of(config: Config) -> list[tuple[str, Listener]]:
    found = [("smtp", lst) for lst in config.smtp_listeners]
    found += [("pop3", lst) for lst in config.pop3_listeners]
    found += [("imap", lst) for lst in config.imap_listeners]
    if config.web is not None:
        found += [("web", lst) for lst in config.web.listeners]
    if config.metrics is not None:
        found.append(("metrics", Listener("metrics", config.metrics.address, config.metrics.port)))
    return found


def check_ports(config: Config) -> Result:
    down = []
    listeners = listeners_of(config)
    for service, lst in listeners:
        try:
            with socket.create_connection((_connect_address(lst.address), lst.port), timeout=PORT_TIMEOUT):
                pass
        except OSError as exc:
            down.append(f"{service} {lst.name} {lst.address} port {lst.port} ({exc.strerror or exc})")
    if down:
        return Result(
            "ports", FAIL, f"{len(down)} of {len(listeners)} listeners do not answer: " + "; ".join(down)
        )
    names = ", ".join(f"{lst.name}:{lst.port}" for _, lst in listeners)
    return Result("ports", OK, f"all {len(listeners)} configured listeners accept connections ({names}).")


def check_tls(config: Config, now: float | None = None) -> Result:
    cert, key = config.tls_certificate, config.tls_private_key
    if cert is None or key is None:
        return Result("tls", OK, "no certificate configured (tls: absent), so no TLS listeners to check.")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert), str(key))
        expiry = monitoring.certificate_expiry(cert)
    except (OSError, ValueError) as exc:
        return Result("tls", FAIL, f"{cert} and its key cannot be loaded together: {exc}.")
    left = monitoring.days_left(expiry, now)
    when = monitoring.utc(expiry)
    if left <= 0:
        return Result("tls", FAIL, f"{cert} expired on {when}: clients refuse it.")
    if left < CERT_WARN_DAYS:
        return Result(
            "tls", WARN, f"{cert} expires on {when}, in {left:.1f} days: renew it (`mailroom cert renew`)."
        )
    return Result("tls", OK, f"{cert} is valid until {when} ({int(left)} days left).")


def _normalise(rtype: str, value: str) -> str:
    value = value.strip().lower()
    if rtype == "TXT":
        return value
    return " ".join(part.rstrip(".") for part in value.split())


def check_dns(config: Config) -> Result:
    import dns.exception
    import dns.resolver

    from . import dnsrecords
    from .dkim import load_keys

    try:
        wanted = [
            r for r in dnsrecords.records(config, load_keys(config)) if not r.placeholder and not r.elsewhere
        ][:MAX_DNS_RECORDS]
    except ConfigError as exc:
        return Result("dns", FAIL, f"cannot work out the records to publish: {exc}.")
    try:
        resolver = dns.resolver.Resolver(configure=config.delivery.resolver_address is None)
    except dns.exception.DNSException:
        return Result("dns", OK, "skipped: this host has no resolver configured (/etc/resolv.conf).")
    if config.delivery.resolver_address is not None:
        resolver.nameservers = [config.delivery.resolver_address]
        resolver.port = config.delivery.resolver_port
    resolver.timeout = resolver.lifetime = DNS_TIMEOUT
    missing: list[str] = []
    answered = 0
    for record in wanted:
        try:
            answer = resolver.resolve(record.name, record.type, raise_on_no_answer=False)
            answered += 1
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            answered += 1
            missing.append(f"{record.type} {record.name}")
            continue
        except dns.exception.DNSException:
            if not answered:
                break  # the first lookup got no answer at all: do not wait for every record
            continue
        if record.type == "TXT":
            got = {b"".join(r.strings).decode("utf-8", "replace") for r in answer}
        else:
            got = {r.to_text() for r in answer}
        if _normalise(record.type, record.value) not in {_normalise(record.type, g) for g in got}:
            missing.append(f"{record.type} {record.name}")
    if not answered:
        return Result("dns", OK, "skipped: no resolver answered, so the published records were not compared.")
    if missing and len(missing) == len(wanted):
        return Result(
            "dns",
            WARN,
            f"none of the {len(wanted)} records `mailroom dns` lists is visible to this host's resolver: "
            "publish them (or the zone is not delegated yet).",
        )
    if missing:
        more = " and more" if len(missing) > 5 else ""
        return Result(
            "dns",
            WARN,
            f"{len(missing)} of {len(wanted)} records differ from `mailroom dns` or are missing: "
            f"{', '.join(missing[:5])}{more}.",
        )
    return Result("dns", OK, f"all {len(wanted)} records `mailroom dns` lists are published as it says.")


def check_disk(config: Config) -> Result:
    root = config.store_root
    try:
        st = os.statvfs(root)
    except OSError as exc:
        return Result("disk", FAIL, f"cannot look at the mail store {root}: {exc.strerror or exc}.")
    free, size = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    text = f"{free / 2**30:.1f} GiB of {size / 2**30:.1f} GiB free in {root}"
    if free < config.min_free_bytes:
        return Result("disk", FAIL, f"{text}, below store.min_free_bytes: incoming mail is refused (452).")
    if size and free < size * DISK_WARN_FRACTION:
        return Result("disk", WARN, f"{text}, less than {DISK_WARN_FRACTION:.0%}: add space or clean up.")
    return Result("disk", OK, f"{text}.")


def check_queue(config: Config, now: float | None = None) -> Result:
    if config.queue_root is None:
        return Result("queue", OK, "no outbound queue configured (queue.root).")
    from .cli import _queue_entries

    now = time.time() if now is None else now
    try:
        entries = _queue_entries(config)
    except OSError as exc:
        return Result("queue", FAIL, f"cannot read the queue {config.queue_root}: {exc.strerror or exc}.")
    if not entries:
        return Result("queue", OK, "the outbound queue is empty.")
    oldest = max(now - e["received_at"] for e in entries)
    held = sum(1 for e in entries if e["held"])
    text = f"{len(entries)} messages queued ({held} held), the oldest {oldest / 3600:.1f} hours old"
    if oldest > QUEUE_WARN_AGE or len(entries) > QUEUE_WARN_COUNT:
        return Result("queue", WARN, f"{text}: see `mailroom queue list` for why they wait.")
    return Result("queue", OK, f"{text}.")


def check_backup(state_dir: Path, now: float | None = None) -> Result:
    if not state_dir.is_dir():
        return Result("backup", OK, f"backups are not set up on this host ({state_dir} does not exist).")
    now = time.time() if now is None else now
    try:
        status = backup.read_status(state_dir / backup.STATUS_FILE)
    except (OSError, ValueError) as exc:
        return Result("backup", FAIL, f"the backup status cannot be read: {exc}.")
    runs = status.get("backup") or {}
    last = runs.get("last_success")
    if not last and not runs.get("last_attempt"):
        return Result("backup", WARN, "backups are set up but none has run yet (`mailroom backup run`).")
    if not last:
        return Result(
            "backup", FAIL, "no backup has succeeded yet: run `mailroom backup run` and see its log."
        )
    age = now - float(last)
    if age > BACKUP_FAIL_AGE:
        return Result(
            "backup",
            FAIL,
            f"the last successful backup is {age / 3600:.0f} hours old (more than 26): "
            "see `mailroom backup status`.",
        )
    return Result("backup", OK, f"the last successful backup finished {age / 3600:.1f} hours ago.")


def check_daemons(config: Config) -> Result:
    socket_path = config.metrics.supervisor_socket if config.metrics else Path("/var/run/supervisor.sock")
    if socket_path is None:
        return Result("daemons", OK, "skipped: metrics.supervisor_socket is turned off.")
    try:
        processes = [p for p in monitoring.supervisor_processes(socket_path) if monitoring.is_mailroom(p)]
    except (OSError, xmlrpc.client.Error) as exc:
        return Result("daemons", FAIL, f"supervisord does not answer on {socket_path}: {exc}.")
    if not processes:
        return Result("daemons", FAIL, "supervisor runs no mailroom programs: is the program file installed?")
    down = [f"{p.name} {p.state}" for p in processes if p.state != "RUNNING"]
    if down:
        return Result("daemons", FAIL, "not running: " + ", ".join(down) + " (see /var/log/mailroom/).")
    return Result(
        "daemons", OK, f"all {len(processes)} programs RUNNING ({', '.join(p.name for p in processes)})."
    )


def run(config: Config, backup_state_dir: Path = backup.DEFAULT_STATE_DIR) -> list[Result]:
    checks: list[tuple[str, Callable[[], Result]]] = [
        ("ports", lambda: check_ports(config)),
        ("tls", lambda: check_tls(config)),
        ("dns", lambda: check_dns(config)),
        ("disk", lambda: check_disk(config)),
        ("queue", lambda: check_queue(config)),
        ("backup", lambda: check_backup(backup_state_dir)),
        ("daemons", lambda: check_daemons(config)),
    ]
    results = []
    for name, check in checks:
        try:
            results.append(check())
        except Exception as exc:
            results.append(Result(name, FAIL, f"the check itself failed: {type(exc).__name__}: {exc}."))
    return results


def verdict(results: list[Result]) -> str:
    return max((r.status for r in results), key=SEVERITY.__getitem__, default=OK)


def render(results: list[Result], as_json: bool) -> str:
    if as_json:
        return json.dumps({"verdict": verdict(results), "checks": [asdict(r) for r in results]}, indent=2)
    lines = [f"{r.status:<4}  {r.check:<8} {r.message}" for r in results]
    lines.append(f"verdict: {verdict(results)}")
    return "\n".join(lines)
