"""The `mailroom` command: daemons and admin tasks.

Exit codes: 0 success, 1 the input (configuration, password) is wrong,
2 usage error (argparse).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import __version__, backup, daemon
from .accounts import Directory, hash_password
from .config import Config, ConfigError, load
from .tls import server_context

DEFAULT_CONFIG = "/etc/mailroom/mailroom.yml"


def config_check(args: argparse.Namespace) -> int:
    try:
        config = load(args.file)
        if config.tls_certificate and config.tls_private_key:
            try:
                server_context(config.tls_certificate, config.tls_private_key)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise ConfigError("tls", f"cannot load certificate and key: {exc}") from None
        if config.dkim_keys:
            from .dkim import load_keys

            load_keys(config)  # a missing or broken key fails here, naming dkim.keys[N].private_key
        if config.srs is not None:
            from .queue.srs import Srs

            Srs.from_config(config)  # a missing or short key fails here, naming srs.key_file
        if config.delivery.smarthost is not None:
            from .queue import smarthost

            smarthost.load(config.delivery.smarthost)  # the password file and CA file must be readable
    except ConfigError as exc:
        print(f"mailroom: {args.file}: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"{args.file}: OK ({len(config.domains)} domains, {len(config.users)} users)")
    return 0


def password_hash(args: argparse.Namespace) -> int:
    # The password comes on stdin so it never shows in a process list.
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("mailroom: no password on standard input", file=sys.stderr)
        return 1
    try:
        key = Path(args.salt_key).read_bytes()
        print(hash_password(password, address=args.address, salt_key=key))
    except (OSError, ValueError) as exc:
        print(f"mailroom: {args.salt_key}: {exc}", file=sys.stderr)
        return 1
    return 0


def _load(name: str, path: str) -> Config | None:
    """The configuration, or None after saying on stderr what is wrong with it."""
    try:
        return load(path)
    except ConfigError as exc:
        print(f"mailroom {name}: {path}: {exc}", file=sys.stderr)
        return None


def accounts_list(args: argparse.Namespace) -> int:
    config = _load("accounts", args.config)
    if config is None:
        return 1
    rows = [(u.address, "user", u.state, f"{u.quota_bytes}" if u.quota_bytes else "-") for u in config.users]
    rows += [
        (a.address, "catch-all" if a.is_catch_all else "alias", "-> " + ", ".join(a.targets), "-")
        for a in config.aliases
    ]
    if args.json:
        print(
            json.dumps(
                [dict(zip(("address", "kind", "state", "quota_bytes"), row, strict=True)) for row in rows],
                indent=2,
            )
        )
        return 0
    width = max((len(r[0]) for r in rows), default=7)
    print(f"{'ADDRESS':<{width}}  {'KIND':<9}  {'QUOTA':>12}  STATE / TARGETS")
    for address, kind, state, quota in rows:
        print(f"{address:<{width}}  {kind:<9}  {quota:>12}  {state}")
    return 0


def accounts_test_login(args: argparse.Namespace) -> int:
    """Check a password the way the daemons do (no throttling, nothing logged)."""
    config = _load("accounts", args.config)
    if config is None:
        return 1
    password = sys.stdin.readline().rstrip("\r\n")
    user = asyncio.run(Directory(config).authenticate(args.address, password))
    print(f"{args.address}: {'login OK' if user else 'login FAILED (unknown, disabled or wrong password)'}")
    return 0 if user else 1


def _queue_entries(config: Config) -> list[dict]:
    """The outbound queue as the delivery daemon sees it, one dict per entry (read-only)."""
    from .queue import Spool
    from .queue.scheduler import StateStore

    if config.queue_root is None:
        return []
    spool = Spool(config.queue_root)
    if not spool.incoming.is_dir():
        return []
    states = StateStore(spool.incoming, spool.tmp)
    entries = []
    for queue_id in spool.entries():
        try:
            envelope, message = spool.read(queue_id)
            state = states.load(queue_id, envelope.recipients)
        except (OSError, ValueError, KeyError):
            continue  # delivered and removed while we looked
        entries.append(
            {
                "id": queue_id,
                "sender": envelope.sender or "<>",
                "size": len(message),
                "received_at": envelope.received_at,
                "held": state.held,
                "recipients": {
                    address: {
                        "status": r.status,
                        "attempts": r.attempts,
                        "next_attempt": r.next_attempt,
                        "last_error": r.last_error,
                    }
                    for address, r in state.recipients.items()
                },
            }
        )
    return entries


def queue_list(args: argparse.Namespace) -> int:
    config = _load("queue", args.config)
    if config is None:
        return 1
    entries = _queue_entries(config)
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    now = time.time()
    print(f"{'ID':<22} {'AGE':>8} {'SIZE':>9}  SENDER -> RECIPIENTS (status, attempts)")
    for entry in entries:
        age = f"{int((now - entry['received_at']) // 60)}m"
        rcpts = ", ".join(f"{a} ({r['status']}, {r['attempts']})" for a, r in entry["recipients"].items())
        held = " [held]" if entry["held"] else ""
        print(f"{entry['id']:<22} {age:>8} {entry['size']:>9}  {entry['sender']} -> {rcpts}{held}")
    print(f"{len(entries)} messages in the queue")
    return 0


def queue_show(args: argparse.Namespace) -> int:
    config = _load("queue", args.config)
    if config is None:
        return 1
    for entry in _queue_entries(config):
        if entry["id"] == args.id:
            print(json.dumps(entry, indent=2))
            return 0
    print(f"mailroom queue: no message {args.id!r} in the queue", file=sys.stderr)
    return 1


MAX_NOTED_IDS = 10000  # more changed at once: deliveryd is told "every entry"


def _as_spool_owner(root: Path) -> None:
    """Root changes the queue as the user who owns it (deliveryd's), so every file it writes is theirs."""
    import os

    st = os.stat(root)
    if os.geteuid() == 0 and st.st_uid != 0:
        os.setgroups([])
        os.setgid(st.st_gid)
        os.setuid(st.st_uid)


def _queue_change(state: object, action: str) -> str | None:
    """Apply one action to a loaded state; the outcome word, or None when nothing changes."""
    from .queue.scheduler import PENDING, State

    assert isinstance(state, State)
    if action == "hold":
        if state.held:
            return None
        state.held = True
        return "held"
    if action == "release":
        if not state.held:
            return None
        state.held = False
        return "released"
    pending = [r for r in state.recipients.values() if r.status == PENDING]
    if not pending or state.held:
        return None
    for rcpt in pending:
        rcpt.next_attempt = 0.0
    return "due now"


def queue_modify(args: argparse.Namespace) -> int:
    """retry, hold, release or delete entries by id (or --all), under each entry's lock."""
    from .queue import Spool
    from .queue.scheduler import StateStore
    from .queue.spool import is_queue_id

    action = args.action
    if bool(args.ids) == bool(args.all):
        print(f"mailroom queue {action}: give queue ids or --all (not both)", file=sys.stderr)
        return 2
    bad = [i for i in args.ids if not is_queue_id(i)]
    if bad:
        print(
            f"mailroom queue {action}: {bad[0]!r} is not a queue id (see `mailroom queue list`)",
            file=sys.stderr,
        )
        return 1
    config = _load("queue", args.config)
    if config is None:
        return 1
    if config.queue_root is None or not (config.queue_root / "incoming").is_dir():
        print(f"mailroom queue {action}: {args.config}: queue.root: no queue there", file=sys.stderr)
        return 1
    _as_spool_owner(config.queue_root)
    spool = Spool(config.queue_root)
    states = StateStore(spool.incoming, spool.tmp)
    ids = spool.entries() if args.all else list(dict.fromkeys(args.ids))
    results: list[dict] = []
    details: dict[str, str] = {}
    for queue_id in ids:
        try:
            if action == "delete":
                with states.locked(queue_id):
                    envelope, _ = spool.read(queue_id)
                    spool.remove(queue_id)
                outcome: str | None = "deleted"
            else:
                envelope, _ = spool.read(queue_id)
                outcome = None

                def change(state: object) -> bool:
                    nonlocal outcome
                    outcome = _queue_change(state, action)
                    return outcome is not None

                state = states.update(queue_id, envelope.recipients, change)
                if outcome is None:
                    outcome = {"hold": "already held", "release": "not held"}.get(
                        action, "held (release it first)" if state.held else "nothing pending"
                    )
                    results.append({"id": queue_id, "result": outcome, "changed": False})
                    continue
        except FileNotFoundError:
            results.append({"id": queue_id, "result": "not in the queue", "changed": False})
            continue
        except (OSError, ValueError, KeyError) as exc:
            results.append({"id": queue_id, "result": f"cannot change: {exc}", "changed": False})
            continue
        results.append({"id": queue_id, "result": outcome, "changed": True})
        if action == "delete":  # deliveryd logs who the deleted message was from and to
            details[queue_id] = f"from=<{envelope.sender}> to=" + ",".join(
                f"<{r}>" for r in envelope.recipients[:10]
            )
    changed = [r["id"] for r in results if r["changed"]]
    if changed:
        spool.note(action, changed if len(changed) <= MAX_NOTED_IDS else ["*"], details)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['id']}: {r['result']}")
        print(f"{len(changed)} of {len(results)} messages changed ({action})")
    missing = [r for r in results if r["result"] == "not in the queue" or r["result"].startswith("cannot")]
    return 1 if missing else 0


def _load_for_daemon(name: str, path: str) -> Config | None:
    config = _load(name, path)
    if config is not None:
        daemon.enable_shared_metrics(config)
    return config


def _daemon(
    name: str, module: str, missing: Callable[[Config], str | None] = lambda config: None
) -> Callable[[argparse.Namespace], int]:
    """The `mailroom NAME` command of a daemon: load and check the configuration, make metrics
    shared, then import `module` (after enable_shared_metrics, see there) and serve."""

    def run(args: argparse.Namespace) -> int:
        config = _load_for_daemon(name, args.config)
        if config is None:
            return 1
        key = missing(config)
        if key is not None:
            print(f"mailroom {name}: {args.config}: {key}: is not configured", file=sys.stderr)
            return 1
        importlib.import_module(module, __package__).serve(config)
        return 0

    return run


smtpd = _daemon("smtpd", ".smtp.server")
pop3d = _daemon("pop3d", ".pop3.server", lambda c: None if c.pop3_listeners else "pop3")
imapd = _daemon("imapd", ".imap.server", lambda c: None if c.imap_listeners else "imap")
deliveryd = _daemon("deliveryd", ".delivery", lambda c: None if c.queue_root else "queue.root")
metricsd = _daemon("metricsd", ".metricsd", lambda c: None if c.metrics else "metrics")
webd = _daemon("webd", ".web.server", lambda c: None if c.web else "web")


def cert_renew(args: argparse.Namespace) -> int:
    """Renew the ACME certificate when due (or --force); after a renewal run --reload-command."""
    config = _load("cert", args.config)
    if config is None:
        return 1
    if config.acme is None:
        print(f"mailroom cert: {args.config}: tls.acme: is not configured", file=sys.stderr)
        return 1
    from . import acme

    daemon.setup_logging(config.log_level)
    try:
        renewed, what = acme.renew(config, force=args.force)
    except acme.AcmeError as exc:
        print(f"mailroom cert renew: {exc}", file=sys.stderr)
        return 1
    print(f"{config.tls_certificate}: {what}")
    if renewed and args.reload_command:
        import shlex
        import subprocess

        # No shell: "mailroom:*" is supervisor's pattern, not a glob.
        done = subprocess.run(shlex.split(args.reload_command), check=False)
        if done.returncode != 0:
            print(f"mailroom cert renew: the reload command exited with {done.returncode}", file=sys.stderr)
            return 1
    return 0


def cert_status(args: argparse.Namespace) -> int:
    config = _load("cert", args.config)
    if config is None:
        return 1
    if config.acme is None:
        print(f"{config.tls_certificate}: not from ACME (tls.acme is not configured)")
        return 0
    from . import acme

    due = acme.renewal_due(config)
    print(f"{config.tls_certificate}: {'renewal due: ' if due.due else ''}{due.reason}")
    return 0


def dns_records(args: argparse.Namespace) -> int:
    """Print the DNS records to publish for each domain (table, zone-file snippet or JSON)."""
    config = _load("dns", args.config)
    if config is None:
        return 1
    from . import dnsrecords
    from .dkim import load_keys

    try:
        keys = load_keys(config)
        certificate = dnsrecords.certificate_of(config) if args.tlsa else None
    except ConfigError as exc:
        print(f"mailroom dns: {args.config}: {exc}", file=sys.stderr)
        return 1
    found = dnsrecords.records(config, keys, certificate)
    policy = dnsrecords.mta_sts_policy(config)
    if args.json:
        print(dnsrecords.render_json(found, policy))
    elif args.zone:
        print(dnsrecords.render_zone(found), end="")
    else:
        print(dnsrecords.render_table(found, policy), end="")
    return 0


def self_check(args: argparse.Namespace) -> int:
    """Ports, certificate, DNS, disk, queue, backup and daemons: OK/WARN/FAIL each, exit 0/1/2."""
    config = _load("check", args.config)
    if config is None:
        return 2
    from . import check

    backup_dir = args.backup_state_dir or (config.metrics.backup_state_dir if config.metrics else None)
    results = check.run(config, Path(backup_dir) if backup_dir else backup.DEFAULT_STATE_DIR)
    print(check.render(results, args.json))
    return check.SEVERITY[check.verdict(results)]


def monitoring_scrape_config(args: argparse.Namespace) -> int:
    """The Prometheus scrape job for this host's metricsd (YAML), from mailroom.yml."""
    config = _load("monitoring", args.config)
    if config is None:
        return 1
    if config.metrics is None:
        print(f"mailroom monitoring: {args.config}: metrics: is not configured", file=sys.stderr)
        return 1
    import yaml

    from .monitoring import scrape_config

    target = args.target or f"{config.hostname}:{config.metrics.port}"
    snippet = scrape_config(
        [target], tls=config.metrics.tls, basic_auth_user=config.metrics.basic_auth_user, job=args.job
    )
    text = yaml.safe_dump(snippet, sort_keys=False)
    if args.json:
        text = json.dumps(snippet, indent=2) + "\n"
    print(f"# Prometheus scrape job for {config.hostname} (mailroom monitoring scrape-config)", end="\n")
    print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailroom", description="Mailroom mail appliance")
    parser.add_argument("--version", action="version", version=f"mailroom {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    config = commands.add_parser("config", help="work with mailroom.yml").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    check = config.add_parser("check", help="validate a configuration file")
    check.add_argument("file", nargs="?", default=DEFAULT_CONFIG)
    check.add_argument("-q", "--quiet", action="store_true", help="print nothing when valid")
    check.set_defaults(func=config_check)

    password = commands.add_parser("password", help="password utilities").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    hash_cmd = password.add_parser(
        "hash", help="print the argon2id hash of the password read from standard input"
    )
    hash_cmd.add_argument("--address", required=True, help="the account the password belongs to")
    hash_cmd.add_argument("--salt-key", required=True, help="file with the site's secret salt key")
    hash_cmd.set_defaults(func=password_hash)

    accounts = commands.add_parser("accounts", help="users and aliases (change them in the inventory)")
    accounts_actions = accounts.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = accounts_actions.add_parser("list", help="list users, aliases and catch-alls")
    listing.add_argument("--config", default=DEFAULT_CONFIG)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=accounts_list)
    login = accounts_actions.add_parser(
        "test-login", help="check the password read from standard input, as the daemons would"
    )
    login.add_argument("address")
    login.add_argument("--config", default=DEFAULT_CONFIG)
    login.set_defaults(func=accounts_test_login)

    queue = commands.add_parser("queue", help="the outbound queue")
    queue_actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    qlist = queue_actions.add_parser("list", help="messages waiting for delivery, per recipient")
    qlist.add_argument("--config", default=DEFAULT_CONFIG)
    qlist.add_argument("--json", action="store_true", help="machine-readable output")
    qlist.set_defaults(func=queue_list)
    qshow = queue_actions.add_parser("show", help="one queued message's envelope and delivery state")
    qshow.add_argument("id")
    qshow.add_argument("--config", default=DEFAULT_CONFIG)
    qshow.set_defaults(func=queue_show)
    for name, help_text in (
        ("retry", "make deferred messages due now (deliveryd tries them at its next scan)"),
        ("hold", "keep messages in the queue without delivering them, until released"),
        ("release", "let held messages be delivered again"),
        ("delete", "remove messages from the queue for good, without a bounce"),
    ):
        qmod = queue_actions.add_parser(name, help=help_text)
        qmod.add_argument("ids", nargs="*", metavar="ID", help="queue ids (from `mailroom queue list`)")
        qmod.add_argument("--all", action="store_true", help="every message in the queue")
        qmod.add_argument("--config", default=DEFAULT_CONFIG)
        qmod.add_argument("--json", action="store_true", help="machine-readable output")
        qmod.set_defaults(func=queue_modify)

    smtp = commands.add_parser("smtpd", help="run the SMTP daemon in the foreground")
    smtp.add_argument("--config", default=DEFAULT_CONFIG)
    smtp.set_defaults(func=smtpd)

    pop3 = commands.add_parser("pop3d", help="run the POP3 daemon in the foreground")
    pop3.add_argument("--config", default=DEFAULT_CONFIG)
    pop3.set_defaults(func=pop3d)

    imap = commands.add_parser("imapd", help="run the IMAP daemon in the foreground")
    imap.add_argument("--config", default=DEFAULT_CONFIG)
    imap.set_defaults(func=imapd)

    delivery = commands.add_parser("deliveryd", help="run the outbound delivery daemon in the foreground")
    delivery.add_argument("--config", default=DEFAULT_CONFIG)
    delivery.set_defaults(func=deliveryd)

    cert = commands.add_parser("cert", help="the TLS certificate (ACME)")
    cert_actions = cert.add_subparsers(dest="action", required=True, metavar="ACTION")
    renew = cert_actions.add_parser("renew", help="get a new certificate from the ACME CA when due")
    renew.add_argument("--config", default=DEFAULT_CONFIG)
    renew.add_argument("--force", action="store_true", help="renew even when not due")
    renew.add_argument(
        "--reload-command", default="", help="run after a renewal, e.g. 'supervisorctl signal HUP mailroom:*'"
    )
    renew.set_defaults(func=cert_renew)
    status = cert_actions.add_parser("status", help="when the certificate will be renewed")
    status.add_argument("--config", default=DEFAULT_CONFIG)
    status.set_defaults(func=cert_status)

    web = commands.add_parser(
        "webd", help="run the web endpoint (ACME, MTA-STS, autoconfig) in the foreground"
    )
    web.add_argument("--config", default=DEFAULT_CONFIG)
    web.set_defaults(func=webd)

    metrics = commands.add_parser("metricsd", help="run the metrics endpoint (Prometheus) in the foreground")
    metrics.add_argument("--config", default=DEFAULT_CONFIG)
    metrics.set_defaults(func=metricsd)

    backup.add_parser(commands)

    dns = commands.add_parser("dns", help="the DNS records to publish for each domain, each with its reason")
    dns.add_argument("--config", default=DEFAULT_CONFIG)
    dns_format = dns.add_mutually_exclusive_group()
    dns_format.add_argument("--zone", action="store_true", help="zone-file snippets, one per zone")
    dns_format.add_argument("--json", action="store_true", help="machine-readable output")
    dns.add_argument("--tlsa", action="store_true", help="add the certificate's TLSA record (DANE)")
    dns.set_defaults(func=dns_records)

    self_test = commands.add_parser(
        "check", help="self-test of the running host: OK/WARN/FAIL per check, exit 0/1/2"
    )
    self_test.add_argument("--config", default=DEFAULT_CONFIG)
    self_test.add_argument("--json", action="store_true", help="machine-readable output")
    self_test.add_argument(
        "--backup-state-dir",
        default="",
        help="where `mailroom backup` keeps its status (default: metrics.backup_state_dir)",
    )
    self_test.set_defaults(func=self_check)

    monitoring = commands.add_parser("monitoring", help="what Prometheus needs to watch this host")
    monitoring_actions = monitoring.add_subparsers(dest="action", required=True, metavar="ACTION")
    scrape = monitoring_actions.add_parser(
        "scrape-config", help="print the Prometheus scrape job for this host's metrics endpoint"
    )
    scrape.add_argument("--config", default=DEFAULT_CONFIG)
    scrape.add_argument("--target", default="", help="host:port Prometheus scrapes (default: hostname:port)")
    scrape.add_argument("--job", default="mailroom", help="job name (the alert rules expect mailroom)")
    scrape.add_argument("--json", action="store_true", help="JSON instead of YAML")
    scrape.set_defaults(func=monitoring_scrape_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
