"""The schema of /etc/mailroom/mailroom.yml and its loader.

Daemons read only this file. Every value is validated at load time and a bad
value raises ConfigError naming the key path (``smtp.listeners[0].port``), so
``mailroom config check`` can refuse a broken file before it replaces a good one.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DOMAIN_RE = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))+$")
# A conservative dot-atom local part: what an admin may configure as a mailbox.
LOCALPART_RE = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$", re.IGNORECASE)
LOG_LEVELS = ("debug", "info", "warning", "error")
# mx: port 25, mail from the Internet; submission: 587, STARTTLS then AUTH;
# submissions: 465, implicit TLS then AUTH (RFC 8314).
LISTENER_NAMES = ("mx", "submission", "submissions")
# pop3: port 110, STLS then login (RFC 2595); pop3s: 995, implicit TLS (RFC 8314).
POP3_LISTENER_NAMES = ("pop3", "pop3s")
# imap: port 143, STARTTLS then login (RFC 3501 6.2.1); imaps: 993, implicit TLS (RFC 8314).
IMAP_LISTENER_NAMES = ("imap", "imaps")
USER_STATES = ("active", "disabled")
# web: port 80 (ACME HTTP-01 challenges, redirects); webs: 443 (MTA-STS policy, client autoconfiguration).
WEB_LISTENER_NAMES = ("web", "webs")
MTA_STS_MODES = ("none", "testing", "enforce")
ACME_KEY_TYPES = ("ecdsa", "rsa")
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
MAX_ALIAS_TARGETS = 1000
# DKIM signature algorithms: RSA (RFC 6376, RFC 8301) and Ed25519 (RFC 8463).
DKIM_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
# A DKIM selector: one or more DNS labels (RFC 6376 3.1).
DKIM_SELECTOR_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")
DMARC_POLICIES = ("none", "quarantine", "reject")


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Listener:
    name: str
    address: str
    port: int


@dataclass(frozen=True)
class User:
    address: str
    password_hash: str
    quota_bytes: int = 0  # 0: no quota
    state: str = "active"  # disabled: no logins, no new mail; the mailbox is kept

    @property
    def localpart(self) -> str:
        return self.address.rsplit("@", 1)[0]

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]


@dataclass(frozen=True)
class Alias:
    """address → targets; an address "@domain" is that domain's catch-all."""

    address: str
    targets: tuple[str, ...]

    @property
    def is_catch_all(self) -> bool:
        return self.address.startswith("@")


@dataclass(frozen=True)
class SmtpLimits:
    max_errors: int = 20  # error replies in one session before 421 and disconnect
    max_recipients: int = 100  # per message (RFC 5321 4.5.3.1.8: at least 100)
    idle_timeout: int = 300  # seconds waiting for a command (RFC 5321 4.5.3.2.7)
    session_timeout: int = 1800  # seconds for a whole session, however busy
    max_connections_per_ip: int = 20
    max_connections: int = 1000
    connection_rate_per_ip: int = 60  # new connections per minute from one address


@dataclass(frozen=True)
class Pop3Limits:
    max_errors: int = 10  # -ERR replies in one session, then the connection is closed
    login_timeout: int = 60  # seconds waiting for a command before login
    idle_timeout: int = 600  # seconds waiting for a command after login (RFC 1939 3: at least 10 minutes)
    session_timeout: int = 3600  # seconds for a whole session, however busy
    max_connections_per_ip: int = 20
    max_connections: int = 500


@dataclass(frozen=True)
class ImapLimits:
    max_errors: int = 20  # BAD replies in one session, then BYE
    max_commands_before_login: int = 20  # then BYE: a client that cannot log in has no business here
    login_timeout: int = 60  # seconds waiting for a command before login
    # seconds waiting for a command after login (RFC 3501 5.4: at least 30 minutes); IDLE too
    idle_timeout: int = 1800
    line_limit: int = 65536  # octets of one command outside its literals
    max_connections_per_ip: int = 50  # clients keep several connections open (one per IDLE folder)
    max_connections: int = 5000
    max_literal_before_login: int = 8192  # octets in the literals of one command before login


@dataclass(frozen=True)
class Metrics:
    address: str
    port: int
    allow: tuple[str, ...]  # client networks (CIDR) that may scrape
    state_dir: Path  # where each daemon writes its values for metricsd to sum
    # metrics.basic_auth: scrapers must also send this user and password (argon2 hash).
    basic_auth_user: str | None = None
    basic_auth_hash: str | None = None
    tls: bool = False  # metrics.tls: serve HTTPS with the host certificate (tls.certificate)
    # Where supervisord answers XML-RPC: daemon up/start time/restarts come from there.
    supervisor_socket: Path | None = Path("/var/run/supervisor.sock")
    # Where `mailroom backup` writes status.json; metricsd reads it at scrape time.
    backup_state_dir: Path = Path("/var/lib/mailroom/backup")


@dataclass(frozen=True)
class Smarthost:
    """All mail for other domains goes to this host (queue/smarthost.py): verified TLS, AUTH PLAIN."""

    host: str  # a host name (checked against the certificate) or an IP address
    port: int = 587
    tls: str = "starttls"  # starttls (required, never plaintext) | implicit (TLS from the first byte)
    username: str | None = None
    password_file: Path | None = None  # the password, alone in a file (root:mailroom 0640)
    ca_file: Path | None = None  # CA certificates to verify it by; None: the system's


@dataclass(frozen=True)
class MtaStsClient:
    """MTA-STS of the domains we deliver to (queue/mtasts.py)."""

    enabled: bool = True
    ca_file: Path | None = None  # CAs the policy servers and MX hosts are verified by; None: the system's
    https_port: int = 443  # other values: tests only
    timeout: float = 20.0  # seconds for one policy fetch


@dataclass(frozen=True)
class Delivery:
    """Outbound delivery (deliveryd): resolver, remote port, timeouts, retries."""

    resolver_address: str | None = None  # None: the system resolver (/etc/resolv.conf)
    resolver_port: int = 53
    remote_port: int = 25
    connect_timeout: float = 30.0
    command_timeout: float = 300.0  # per reply (RFC 5321 4.5.3.2 allows 5 to 10 minutes)
    # Seconds between attempts; the last one repeats until max_age.
    retry_schedule: tuple[float, ...] = (300, 600, 1800, 3600, 7200, 14400)
    max_age: float = 5 * 86400  # then the message is given up and bounced
    concurrency: int = 20  # deliveries (connections) at the same time
    destination_concurrency: int = 4  # connections at the same time to one MX host (or the smarthost)
    scan_interval: float = 5.0  # seconds between looks at the spool for new entries
    max_received_headers: int = 30  # more: a mail loop, failed permanently
    smarthost: Smarthost | None = None  # None: by MX
    mta_sts: MtaStsClient = field(default_factory=MtaStsClient)


@dataclass(frozen=True)
class Srs:
    """Sender Rewriting Scheme for mail aliases forward to other domains (queue/srs.py)."""

    key_file: Path  # the HMAC secret, made once by the role (root:mailroom 0640)
    domain: str  # one of our domains: SRS0=...@domain addresses bounce back to us
    max_age_days: int = 21  # older SRS addresses are refused (550)


@dataclass(frozen=True)
class DkimKey:
    """One signing key: mail From this domain gets a signature with this selector and key."""

    domain: str
    selector: str
    algorithm: str  # rsa-sha256 | ed25519-sha256
    private_key: Path  # PEM (PKCS#1 or PKCS#8)


@dataclass(frozen=True)
class DnsSettings:
    """What `mailroom dns` needs beyond the rest of the file: only that command reads it."""

    ipv4: str | None = None  # public addresses of the host; None: a placeholder in the output
    ipv6: str | None = None
    dmarc_policy: str = "quarantine"
    dmarc_report_to: str | None = None  # None: postmaster@<domain>


@dataclass(frozen=True)
class Config:
    hostname: str
    domains: tuple[str, ...]
    users: tuple[User, ...]
    store_root: Path
    run_as_user: str
    run_as_group: str
    tls_certificate: Path | None
    tls_private_key: Path | None
    smtp_max_message_size: int
    smtp_listeners: tuple[Listener, ...]
    # smtpd processes sharing the listening sockets (one Python process uses one core).
    smtp_workers: int = 1
    # Each worker on one CPU, round robin (daemon.pin_to_cpu): its threads wake each other there.
    smtp_pin_workers: bool = True
    aliases: tuple[Alias, ...] = ()
    smtp_limits: SmtpLimits = field(default_factory=SmtpLimits)
    # Below this much free space in the store, MAIL FROM gets 452 4.3.1.
    min_free_bytes: int = 0
    queue_root: Path | None = None
    metrics: Metrics | None = None
    # Absent pop3 section: no POP3 listeners (pop3d refuses to start).
    pop3_listeners: tuple[Listener, ...] = ()
    pop3_limits: Pop3Limits = field(default_factory=Pop3Limits)
    # Absent imap section: no IMAP listeners (imapd refuses to start).
    imap_listeners: tuple[Listener, ...] = ()
    imap_limits: ImapLimits = field(default_factory=ImapLimits)
    imap_workers: int = 1
    imap_pin_workers: bool = True  # as smtp_pin_workers
    # Runtime state shared by the daemons (login throttling); a tmpfs, emptied at boot.
    runtime_dir: Path = Path("/run/mailroom")
    log_level: str = "info"
    delivery: Delivery = field(default_factory=Delivery)
    # Checks of inbound mail on the mx listener (SPF/DKIM/DMARC, DNSBL, greylisting, rspamd, clamd).
    filtering: Filtering = field(default_factory=lambda: Filtering())  # noqa: PLW0108 - defined below
    # tls.acme: the certificate comes from an ACME CA and `mailroom cert renew` renews it.
    acme: Acme | None = None
    # Absent web section: no web endpoint (webd refuses to start).
    web: Web | None = None
    # Absent dkim section: nothing is signed.
    dkim_keys: tuple[DkimKey, ...] = ()
    dns: DnsSettings = field(default_factory=DnsSettings)
    # Absent srs section: forwarded mail keeps its sender (and SRS bounces are unknown users).
    srs: Srs | None = None
    source: Path | None = field(default=None, compare=False)


def split_address(address: str) -> tuple[str, str]:
    """Split local@domain; the domain is compared case-insensitively."""
    localpart, _, domain = address.rpartition("@")
    return localpart, domain.lower()


def is_valid_domain(name: str) -> bool:
    return bool(DOMAIN_RE.match(name))


def is_valid_address(address: str) -> bool:
    localpart, domain = split_address(address)
    return len(localpart) <= 64 and bool(LOCALPART_RE.match(localpart)) and is_valid_domain(domain)


def is_plausible_address(address: str) -> bool:
    """Syntax check for addresses from the wire: we only need to store and log them safely."""
    localpart, at, domain = address.rpartition("@")
    return (
        bool(at and localpart and domain)
        and len(address) <= 254
        and not any(ord(c) < 33 or ord(c) == 127 for c in address)
    )


class _Reader:
    """Typed access to a mapping that reports the full key path on error."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path or "(top level)", f"must be a mapping, got {type(data).__name__}")
        self.data = data
        self.path = path

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def check_unknown(self, allowed: set[str]) -> None:
        for name in self.data:
            if name not in allowed:
                raise ConfigError(self.key(str(name)), "unknown key")

    def raw(self, name: str, default: Any = ...) -> Any:
        if name not in self.data or self.data[name] is None:
            if default is ...:
                raise ConfigError(self.key(name), "is required")
            return default
        return self.data[name]

    def string(self, name: str, default: Any = ...) -> str:
        value = self.raw(name, default)
        if not isinstance(value, str) or not value:
            raise ConfigError(self.key(name), "must be a non-empty string")
        return value

    def integer(self, name: str, default: Any = ..., minimum: int = 0, maximum: int | None = None) -> int:
        value = self.raw(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(self.key(name), f"must be an integer, got {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            raise ConfigError(self.key(name), f"must be {bound}, got {value}")
        return value

    def sub(self, name: str, default: Any = ...) -> _Reader:
        return _Reader(self.raw(name, default), self.key(name))

    def items(self, name: str, default: Any = ...) -> list[Any]:
        value = self.raw(name, default)
        if not isinstance(value, list):
            raise ConfigError(self.key(name), "must be a list")
        return value


def parse(data: Any, source: Path | None = None) -> Config:
    top = _Reader(data, "")
    top.check_unknown(
        {
            "hostname",
            "run_as",
            "domains",
            "users",
            "dkim",
            "dns",
            "aliases",
            "store",
            "queue",
            "tls",
            "smtp",
            "metrics",
            "pop3",
            "imap",
            "runtime_dir",
            "log_level",
            "delivery",
            "filtering",
            "web",
            "srs",
        }
    )

    hostname = top.string("hostname").lower()
    if not is_valid_domain(hostname):
        raise ConfigError("hostname", f"{hostname!r} is not a fully qualified host name")

    domains: list[str] = []
    for i, raw in enumerate(top.items("domains")):
        if not isinstance(raw, str) or not is_valid_domain(raw.lower()):
            raise ConfigError(f"domains[{i}]", f"{raw!r} is not a valid domain name")
        if raw.lower() in domains:
            raise ConfigError(f"domains[{i}]", f"{raw!r} is listed twice")
        domains.append(raw.lower())
    if not domains:
        raise ConfigError("domains", "must list at least one domain")

    users: list[User] = []
    seen: set[str] = set()
    for i, raw in enumerate(top.items("users", [])):
        entry = _Reader(raw, f"users[{i}]")
        entry.check_unknown({"address", "password_hash", "quota_bytes", "state"})
        address = entry.string("address").lower()
        if not is_valid_address(address):
            raise ConfigError(entry.key("address"), f"{address!r} is not a valid mail address")
        if split_address(address)[1] not in domains:
            raise ConfigError(entry.key("address"), f"{address!r} is not in one of the domains")
        if address in seen:
            raise ConfigError(entry.key("address"), f"{address!r} is listed twice")
        seen.add(address)
        password_hash = entry.string("password_hash")
        if not password_hash.startswith("$argon2id$"):
            raise ConfigError(entry.key("password_hash"), "must be an argon2id hash ($argon2id$...)")
        state = entry.string("state", "active")
        if state not in USER_STATES:
            raise ConfigError(entry.key("state"), f"must be one of {', '.join(USER_STATES)}")
        users.append(User(address, password_hash, entry.integer("quota_bytes", 0), state))

    aliases = _parse_aliases(top, domains, seen)

    run_as = top.sub("run_as", {})
    run_as.check_unknown({"user", "group"})
    store = top.sub("store")
    store.check_unknown({"root", "min_free_bytes"})
    store_root = _absolute_path(store, "root")
    queue = top.sub("queue", {})
    queue.check_unknown({"root"})
    queue_root = _absolute_path(queue, "root", None)

    tls = top.sub("tls", {})
    tls.check_unknown({"certificate", "private_key", "acme"})
    cert = tls.raw("certificate", None)
    key = tls.raw("private_key", None)
    if (cert is None) != (key is None):
        raise ConfigError("tls", "certificate and private_key go together")

    smtp = top.sub("smtp")
    smtp.check_unknown({"max_message_size", "listeners", "limits", "workers", "pin_workers"})
    workers = smtp.integer("workers", 1, minimum=1, maximum=64)
    pin_workers = _flag(smtp, "pin_workers", True)
    max_size = smtp.integer("max_message_size", 25 * 1024 * 1024, minimum=1024, maximum=1 << 31)
    min_free = store.integer("min_free_bytes", max_size * 3 // 2)
    limits_reader = smtp.sub("limits", {})
    limits_reader.check_unknown(set(SmtpLimits.__dataclass_fields__))
    limits = SmtpLimits(
        **{
            name: limits_reader.integer(name, default, minimum=1)
            for name, default in vars(SmtpLimits()).items()
        }
    )
    listeners = _parse_listeners(smtp, "smtp.listeners", LISTENER_NAMES)
    if not listeners:
        raise ConfigError("smtp.listeners", "must list at least one listener")
    ports = [(li.address, li.port) for li in listeners]
    for i, pair in enumerate(ports):
        if pair in ports[:i]:
            raise ConfigError(f"smtp.listeners[{i}].port", f"{pair[1]} is used by another listener")
    if any(li.name != "mx" for li in listeners):
        if cert is None:
            raise ConfigError(
                "tls", "submission listeners need a certificate: passwords travel only over TLS"
            )
        if queue_root is None:
            raise ConfigError("queue.root", "is required with submission listeners (mail to other domains)")

    metrics = _parse_metrics(top) if top.raw("metrics", None) is not None else None
    if metrics is not None and metrics.tls and cert is None:
        raise ConfigError("metrics.tls", "needs the host certificate (tls.certificate and tls.private_key)")
    pop3_listeners, pop3_limits = _parse_pop3(top, listeners, has_tls=cert is not None)
    imap_listeners, imap_limits, imap_workers, imap_pin_workers = _parse_imap(
        top, [*listeners, *pop3_listeners], has_tls=cert is not None
    )

    runtime_dir = _absolute_path(top, "runtime_dir", "/run/mailroom")
    assert runtime_dir is not None
    log_level = top.string("log_level", "info")
    if log_level not in LOG_LEVELS:
        raise ConfigError("log_level", f"must be one of {', '.join(LOG_LEVELS)}")

    return Config(
        hostname=hostname,
        domains=tuple(domains),
        users=tuple(users),
        store_root=store_root,
        run_as_user=run_as.string("user", "mailroom"),
        run_as_group=run_as.string("group", "mailroom"),
        tls_certificate=Path(cert) if cert else None,
        tls_private_key=Path(key) if key else None,
        smtp_max_message_size=max_size,
        smtp_listeners=tuple(listeners),
        smtp_workers=workers,
        smtp_pin_workers=pin_workers,
        dkim_keys=_parse_dkim(top, domains),
        dns=_parse_dns(top),
        srs=_parse_srs(top, domains),
        aliases=aliases,
        smtp_limits=limits,
        min_free_bytes=min_free,
        queue_root=queue_root,
        metrics=metrics,
        pop3_listeners=pop3_listeners,
        pop3_limits=pop3_limits,
        imap_listeners=imap_listeners,
        imap_limits=imap_limits,
        imap_workers=imap_workers,
        imap_pin_workers=imap_pin_workers,
        runtime_dir=runtime_dir,
        log_level=log_level,
        delivery=_parse_delivery(top),
        filtering=_parse_filtering(top, domains, [u.address for u in users]),
        acme=_parse_acme(tls, hostname, domains) if tls.raw("acme", None) is not None else None,
        web=_parse_web(top, hostname, domains) if top.raw("web", None) is not None else None,
        source=source,
    )


def _parse_listeners(parent: _Reader, key: str, names: tuple[str, ...]) -> list[Listener]:
    listeners: list[Listener] = []
    for i, raw in enumerate(parent.items(key.rsplit(".", 1)[-1])):
        entry = _Reader(raw, f"{key}[{i}]")
        entry.check_unknown({"name", "address", "port"})
        name = entry.string("name")
        if name not in names:
            raise ConfigError(entry.key("name"), f"must be one of {', '.join(names)}")
        address = entry.string("address")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(entry.key("address"), f"{address!r} is not an IP address") from None
        listeners.append(Listener(name, address, entry.integer("port", minimum=1, maximum=65535)))
    return listeners


def _parse_pop3(
    top: _Reader, smtp_listeners: list[Listener], has_tls: bool
) -> tuple[tuple[Listener, ...], Pop3Limits]:
    if top.raw("pop3", None) is None:
        return (), Pop3Limits()
    pop3 = top.sub("pop3")
    pop3.check_unknown({"listeners", "limits"})
    listeners = _parse_listeners(pop3, "pop3.listeners", POP3_LISTENER_NAMES)
    if not listeners:
        raise ConfigError("pop3.listeners", "must list at least one listener")
    taken = [(li.address, li.port) for li in smtp_listeners]
    for i, listener in enumerate(listeners):
        if (listener.address, listener.port) in taken:
            raise ConfigError(f"pop3.listeners[{i}].port", f"{listener.port} is used by another listener")
        taken.append((listener.address, listener.port))
    if not has_tls:
        raise ConfigError("tls", "pop3 listeners need a certificate: passwords travel only over TLS")
    limits_reader = pop3.sub("limits", {})
    limits_reader.check_unknown(set(Pop3Limits.__dataclass_fields__))
    limits = Pop3Limits(
        **{
            name: limits_reader.integer(name, default, minimum=1)
            for name, default in vars(Pop3Limits()).items()
        }
    )
    return tuple(listeners), limits


def _parse_imap(
    top: _Reader, other_listeners: list[Listener], has_tls: bool
) -> tuple[tuple[Listener, ...], ImapLimits, int, bool]:
    if top.raw("imap", None) is None:
        return (), ImapLimits(), 1, True
    imap = top.sub("imap")
    imap.check_unknown({"listeners", "limits", "workers", "pin_workers"})
    listeners = _parse_listeners(imap, "imap.listeners", IMAP_LISTENER_NAMES)
    if not listeners:
        raise ConfigError("imap.listeners", "must list at least one listener")
    taken = [(li.address, li.port) for li in other_listeners]
    for i, listener in enumerate(listeners):
        if (listener.address, listener.port) in taken:
            raise ConfigError(f"imap.listeners[{i}].port", f"{listener.port} is used by another listener")
        taken.append((listener.address, listener.port))
    if not has_tls:
        raise ConfigError("tls", "imap listeners need a certificate: passwords travel only over TLS")
    limits_reader = imap.sub("limits", {})
    limits_reader.check_unknown(set(ImapLimits.__dataclass_fields__))
    values = {
        name: limits_reader.integer(name, default, minimum=1) for name, default in vars(ImapLimits()).items()
    }
    if values["idle_timeout"] < 1800:
        # RFC 3501 5.4: an autologout timer after login must be at least 30 minutes.
        raise ConfigError("imap.limits.idle_timeout", "must be at least 1800 seconds (RFC 3501 5.4)")
    if values["line_limit"] < 1024:
        raise ConfigError("imap.limits.line_limit", "must be at least 1024 octets")
    workers = imap.integer("workers", 1, minimum=1, maximum=64)
    return tuple(listeners), ImapLimits(**values), workers, _flag(imap, "pin_workers", True)


def _absolute_path(reader: _Reader, name: str, default: Any = ...) -> Path | None:
    value = reader.raw(name, default)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(reader.key(name), "must be an absolute path")
    return Path(value)


def _parse_metrics(top: _Reader) -> Metrics:
    reader = top.sub("metrics")
    reader.check_unknown(
        {
            "address",
            "port",
            "allow",
            "state_dir",
            "basic_auth",
            "tls",
            "supervisor_socket",
            "backup_state_dir",
        }
    )
    address = reader.string("address", "127.0.0.1")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ConfigError(reader.key("address"), f"{address!r} is not an IP address") from None
    allow = reader.raw("allow", ["127.0.0.1/32", "::1/128"])
    if not isinstance(allow, list) or not allow:
        raise ConfigError(reader.key("allow"), "must be a non-empty list of networks")
    for i, net in enumerate(allow):
        try:
            ipaddress.ip_network(str(net))
        except ValueError:
            raise ConfigError(f"{reader.key('allow')}[{i}]", f"{net!r} is not a network (CIDR)") from None
    state_dir = _absolute_path(reader, "state_dir", "/run/mailroom/metrics")
    assert state_dir is not None
    user = password_hash = None
    if reader.raw("basic_auth", None) is not None:
        auth = reader.sub("basic_auth")
        auth.check_unknown({"user", "password_hash"})
        user = auth.string("user")
        if not user or len(user) > 64 or ":" in user or not user.isprintable():
            raise ConfigError(auth.key("user"), "must be 1-64 printable characters without ':'")
        password_hash = auth.string("password_hash")
        if not password_hash.startswith("$argon2"):
            raise ConfigError(
                auth.key("password_hash"), "must be an argon2 hash (mailroom password hash), not a password"
            )
    supervisor_socket = _absolute_path(reader, "supervisor_socket", "/var/run/supervisor.sock")
    return Metrics(
        address,
        reader.integer("port", 9154, minimum=1, maximum=65535),
        tuple(str(n) for n in allow),
        state_dir,
        basic_auth_user=user,
        basic_auth_hash=password_hash,
        tls=_flag(reader, "tls", False),
        supervisor_socket=supervisor_socket,
        backup_state_dir=_absolute_path(reader, "backup_state_dir", "/var/lib/mailroom/backup")
        or Path("/var/lib/mailroom/backup"),
    )


def _number(reader: _Reader, name: str, default: float, minimum: float, maximum: float) -> float:
    value = reader.raw(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(reader.key(name), f"must be a number of seconds, got {value!r}")
    if not minimum <= value <= maximum:
        raise ConfigError(reader.key(name), f"must be between {minimum} and {maximum}, got {value}")
    return float(value)


def _parse_delivery(top: _Reader) -> Delivery:
    reader = top.sub("delivery", {})
    reader.check_unknown(
        {
            "resolver",
            "remote_port",
            "connect_timeout",
            "command_timeout",
            "retry_schedule",
            "max_age",
            "concurrency",
            "destination_concurrency",
            "scan_interval",
            "max_received_headers",
            "smarthost",
            "mta_sts",
        }
    )
    defaults = Delivery()
    resolver_address: str | None = None
    resolver_port = 53
    if reader.raw("resolver", None) is not None:
        resolver = reader.sub("resolver")
        resolver.check_unknown({"address", "port"})
        resolver_address = resolver.string("address")
        try:
            ipaddress.ip_address(resolver_address)
        except ValueError:
            raise ConfigError(resolver.key("address"), f"{resolver_address!r} is not an IP address") from None
        resolver_port = resolver.integer("port", 53, minimum=1, maximum=65535)
    schedule = reader.items("retry_schedule", list(defaults.retry_schedule))
    if not schedule:
        raise ConfigError(reader.key("retry_schedule"), "must list at least one interval")
    intervals: list[float] = []
    for i, value in enumerate(schedule):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 7 * 86400:
            raise ConfigError(
                f"{reader.key('retry_schedule')}[{i}]", f"must be seconds between 0 and 604800, got {value!r}"
            )
        intervals.append(float(value))
    return Delivery(
        resolver_address=resolver_address,
        resolver_port=resolver_port,
        remote_port=reader.integer("remote_port", defaults.remote_port, minimum=1, maximum=65535),
        connect_timeout=_number(reader, "connect_timeout", defaults.connect_timeout, 0.1, 600),
        command_timeout=_number(reader, "command_timeout", defaults.command_timeout, 0.1, 3600),
        retry_schedule=tuple(intervals),
        max_age=_number(reader, "max_age", defaults.max_age, 1, 30 * 86400),
        concurrency=reader.integer("concurrency", defaults.concurrency, minimum=1, maximum=1000),
        destination_concurrency=reader.integer(
            "destination_concurrency", defaults.destination_concurrency, minimum=1, maximum=1000
        ),
        scan_interval=_number(reader, "scan_interval", defaults.scan_interval, 0.05, 3600),
        max_received_headers=reader.integer(
            "max_received_headers", defaults.max_received_headers, minimum=5, maximum=1000
        ),
        smarthost=_parse_smarthost(reader) if reader.raw("smarthost", None) is not None else None,
        mta_sts=_parse_mta_sts_client(reader),
    )


def _parse_mta_sts_client(delivery: _Reader) -> MtaStsClient:
    reader = delivery.sub("mta_sts", {})
    reader.check_unknown({"enabled", "ca_file", "https_port", "timeout"})
    enabled = reader.raw("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(reader.key("enabled"), f"must be true or false, got {enabled!r}")
    return MtaStsClient(
        enabled,
        _absolute_path(reader, "ca_file", None),
        reader.integer("https_port", 443, minimum=1, maximum=65535),
        _number(reader, "timeout", 20.0, 0.1, 300),
    )


def _parse_smarthost(delivery: _Reader) -> Smarthost:
    reader = delivery.sub("smarthost")
    reader.check_unknown({"host", "port", "tls", "username", "password_file", "ca_file"})
    host = reader.string("host").lower().rstrip(".")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not is_valid_domain(host):
            raise ConfigError(
                reader.key("host"), f"{host!r} is neither a host name nor an IP address"
            ) from None
    port = reader.integer("port", 587, minimum=1, maximum=65535)
    tls = reader.string("tls", "implicit" if port == 465 else "starttls")
    if tls not in ("starttls", "implicit"):
        raise ConfigError(reader.key("tls"), "must be starttls or implicit")
    username = reader.raw("username", None)
    if username is not None and (not isinstance(username, str) or not username or len(username) > 256):
        raise ConfigError(reader.key("username"), "must be a non-empty string of at most 256 characters")
    password_file = _absolute_path(reader, "password_file", None)
    if (username is None) != (password_file is None):
        raise ConfigError(reader.key("password_file"), "username and password_file go together")
    return Smarthost(host, port, tls, username, password_file, _absolute_path(reader, "ca_file", None))


def _parse_srs(top: _Reader, domains: list[str]) -> Srs | None:
    if top.raw("srs", None) is None:
        return None
    reader = top.sub("srs")
    reader.check_unknown({"key_file", "domain", "max_age_days"})
    key_file = _absolute_path(reader, "key_file")
    assert key_file is not None
    domain = reader.string("domain", domains[0]).lower()
    if domain not in domains:
        raise ConfigError(reader.key("domain"), f"{domain!r} is not one of the domains")
    return Srs(key_file, domain, reader.integer("max_age_days", 21, minimum=1, maximum=365))


def _parse_dkim(top: _Reader, domains: list[str]) -> tuple[DkimKey, ...]:
    if top.raw("dkim", None) is None:
        return ()
    reader = top.sub("dkim")
    reader.check_unknown({"keys"})
    keys: list[DkimKey] = []
    for i, raw in enumerate(reader.items("keys")):
        entry = _Reader(raw, f"dkim.keys[{i}]")
        entry.check_unknown({"domain", "selector", "algorithm", "private_key"})
        domain = entry.string("domain").lower()
        if domain not in domains:
            raise ConfigError(entry.key("domain"), f"{domain!r} is not one of the domains")
        selector = entry.string("selector").lower()
        if len(selector) > 253 or not DKIM_SELECTOR_RE.match(selector):
            raise ConfigError(entry.key("selector"), f"{selector!r} is not a DNS name (a-z, 0-9, -, dots)")
        algorithm = entry.string("algorithm", "rsa-sha256")
        if algorithm not in DKIM_ALGORITHMS:
            raise ConfigError(entry.key("algorithm"), f"must be one of {', '.join(DKIM_ALGORITHMS)}")
        for other in keys:
            if other.domain == domain and other.selector == selector:
                raise ConfigError(entry.key("selector"), f"{selector!r} is used twice for {domain}")
            if other.domain == domain and other.algorithm == algorithm:
                raise ConfigError(entry.key("algorithm"), f"{domain} has a {algorithm} key already")
        path = _absolute_path(entry, "private_key")
        assert path is not None
        keys.append(DkimKey(domain, selector, algorithm, path))
    if not keys:
        raise ConfigError("dkim.keys", "must list at least one key (or leave dkim out)")
    return tuple(keys)


def _parse_dns(top: _Reader) -> DnsSettings:
    reader = top.sub("dns", {})
    reader.check_unknown(set(DnsSettings.__dataclass_fields__))
    defaults = DnsSettings()
    addresses: dict[str, str | None] = {}
    for name, version in (("ipv4", 4), ("ipv6", 6)):
        value = reader.raw(name, None)
        if value is not None:
            try:
                parsed = ipaddress.ip_address(str(value))
            except ValueError:
                parsed = None
            if parsed is None or parsed.version != version:
                raise ConfigError(reader.key(name), f"{value!r} is not an IPv{version} address")
            value = str(parsed)
        addresses[name] = value
    policy = reader.string("dmarc_policy", defaults.dmarc_policy)
    if policy not in DMARC_POLICIES:
        raise ConfigError(reader.key("dmarc_policy"), f"must be one of {', '.join(DMARC_POLICIES)}")
    report_to = reader.raw("dmarc_report_to", None)
    if report_to is not None and (not isinstance(report_to, str) or not is_valid_address(report_to.lower())):
        raise ConfigError(reader.key("dmarc_report_to"), f"{report_to!r} is not a valid mail address")
    return DnsSettings(
        ipv4=addresses["ipv4"],
        ipv6=addresses["ipv6"],
        dmarc_policy=policy,
        dmarc_report_to=report_to.lower() if report_to else None,
    )


def _parse_aliases(top: _Reader, domains: list[str], users: set[str]) -> tuple[Alias, ...]:
    if top.raw("aliases", None) is None:
        return ()
    aliases: list[Alias] = []
    seen: set[str] = set()
    for i, raw in enumerate(top.items("aliases")):
        entry = _Reader(raw, f"aliases[{i}]")
        entry.check_unknown({"address", "to"})
        address = entry.string("address").lower()
        if address.startswith("@"):
            if address[1:] not in domains:
                raise ConfigError(
                    entry.key("address"), f"catch-all {address!r} is not for one of the domains"
                )
        elif not is_valid_address(address):
            raise ConfigError(entry.key("address"), f"{address!r} is not a valid mail address")
        elif split_address(address)[1] not in domains:
            raise ConfigError(entry.key("address"), f"{address!r} is not in one of the domains")
        if address in users:
            raise ConfigError(entry.key("address"), f"{address!r} is a user already")
        if address in seen:
            raise ConfigError(entry.key("address"), f"{address!r} is listed twice")
        seen.add(address)
        targets = entry.raw("to")
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list) or not targets or len(targets) > MAX_ALIAS_TARGETS:
            raise ConfigError(entry.key("to"), f"must be an address or a list of 1 to {MAX_ALIAS_TARGETS}")
        for j, target in enumerate(targets):
            if not isinstance(target, str) or not is_valid_address(target.lower()):
                raise ConfigError(f"{entry.key('to')}[{j}]", f"{target!r} is not a valid mail address")
        aliases.append(Alias(address, tuple(t.lower() for t in targets)))
    return tuple(aliases)


@dataclass(frozen=True)
class Acme:
    """Certificates from an ACME CA (RFC 8555), renewed on the host by `mailroom cert renew`."""

    directory: str  # the CA's directory URL; Let's Encrypt unless told otherwise
    names: tuple[str, ...]  # DNS names on the certificate; the first is the host name
    account_key: Path  # made once, kept; the account at the CA is found again from it
    challenge_dir: Path  # HTTP-01 tokens; webd serves them on port 80
    email: str | None = None  # contact for the CA's expiry notices
    ca_bundle: Path | None = None  # CA certificates to trust for the directory (a private CA)
    key_type: str = "ecdsa"  # ecdsa (P-256, Mozilla's first choice) or rsa (2048)
    # Renew when this fraction of the certificate's lifetime remains (30 of 90 days).
    renew_remaining: float = 1 / 3


@dataclass(frozen=True)
class MtaSts:
    mode: str = "testing"  # none | testing | enforce (RFC 8461 3.2)
    max_age: int = 604800  # seconds senders may cache the policy
    mx: tuple[str, ...] = ()  # mx patterns of the policy; default: the host name


@dataclass(frozen=True)
class Web:
    """webd: ACME HTTP-01 on 80; MTA-STS policy and client autoconfiguration on 443."""

    listeners: tuple[Listener, ...]
    mta_sts: MtaSts = field(default_factory=MtaSts)
    # Host name clients are told to use for IMAP, POP3 and submission; default: hostname.
    client_hostname: str = ""
    challenge_dir: Path | None = None  # tokens served on the web listener; default: acme's


def _parse_acme(tls: _Reader, hostname: str, domains: list[str]) -> Acme:
    reader = tls.sub("acme")
    reader.check_unknown(
        {"directory", "email", "ca_bundle", "names", "account_key", "challenge_dir", "key_type"}
    )
    directory = reader.string("directory", LETS_ENCRYPT)
    if not directory.startswith("https://") or len(directory) > 2048:
        raise ConfigError(reader.key("directory"), "must be an https:// URL (the ACME directory)")
    email = reader.raw("email", None)
    if email is not None and (not isinstance(email, str) or not is_valid_address(email.lower())):
        raise ConfigError(reader.key("email"), f"{email!r} is not a valid mail address")
    default_names = [hostname] + [f"{p}.{d}" for d in domains for p in ("mta-sts", "autoconfig")]
    names: list[str] = []
    for i, raw in enumerate(reader.items("names", default_names)):
        if not isinstance(raw, str) or not is_valid_domain(raw.lower()):
            raise ConfigError(f"{reader.key('names')}[{i}]", f"{raw!r} is not a DNS name")
        if raw.lower() not in names:
            names.append(raw.lower())
    if not names or len(names) > 100:
        raise ConfigError(reader.key("names"), "must list 1 to 100 names (the CA's limit)")
    key_type = reader.string("key_type", "ecdsa")
    if key_type not in ACME_KEY_TYPES:
        raise ConfigError(reader.key("key_type"), f"must be one of {', '.join(ACME_KEY_TYPES)}")
    account_key = _absolute_path(reader, "account_key", "/etc/mailroom/tls/acme-account.key")
    challenge_dir = _absolute_path(reader, "challenge_dir", "/var/lib/mailroom/acme-challenge")
    assert account_key is not None and challenge_dir is not None
    return Acme(
        directory=directory,
        names=tuple(names),
        account_key=account_key,
        challenge_dir=challenge_dir,
        email=email.lower() if email else None,
        ca_bundle=_absolute_path(reader, "ca_bundle", None),
        key_type=key_type,
    )


def _parse_web(top: _Reader, hostname: str, domains: list[str]) -> Web:
    reader = top.sub("web")
    reader.check_unknown({"listeners", "mta_sts", "client_hostname", "challenge_dir"})
    listeners = _parse_listeners(reader, "web.listeners", WEB_LISTENER_NAMES)
    if not listeners:
        raise ConfigError("web.listeners", "must list at least one listener")
    policy = reader.sub("mta_sts", {})
    policy.check_unknown({"mode", "max_age", "mx"})
    mode = policy.string("mode", "testing")
    if mode not in MTA_STS_MODES:
        raise ConfigError(policy.key("mode"), f"must be one of {', '.join(MTA_STS_MODES)}")
    # RFC 8461 3.2: max_age is at most 31557600 (about a year).
    max_age = policy.integer("max_age", 604800, minimum=1, maximum=31557600)
    mx: list[str] = []
    for i, raw in enumerate(policy.items("mx", [hostname])):
        name = raw.lower() if isinstance(raw, str) else ""
        if not is_valid_domain(name.removeprefix("*.")):
            raise ConfigError(f"{policy.key('mx')}[{i}]", f"{raw!r} is not a host name or *.domain pattern")
        mx.append(name)
    client_hostname = reader.string("client_hostname", hostname).lower()
    if not is_valid_domain(client_hostname):
        raise ConfigError(reader.key("client_hostname"), f"{client_hostname!r} is not a host name")
    return Web(
        listeners=tuple(listeners),
        mta_sts=MtaSts(mode, max_age, tuple(mx)),
        client_hostname=client_hostname,
        challenge_dir=_absolute_path(reader, "challenge_dir", None),
    )


FILTER_FAILURE_MODES = ("accept", "tempfail")  # fail-open (accept, tagged) or fail-closed (451 4.7.1)
DNSBL_ACTIONS = ("reject", "junk", "tag")


@dataclass(frozen=True)
class DnsblList:
    zone: str  # e.g. zen.spamhaus.org: the client's reversed address is looked up below it
    action: str = "reject"  # reject: 554 5.7.1 at RCPT; junk: the Junk folder; tag: a header only


@dataclass(frozen=True)
class Greylisting:
    enabled: bool = False
    delay: float = 300.0  # seconds a new (network, sender, recipient) triplet is told to wait
    retry_window: float = 86400.0  # a retry later than this after the first try starts over
    expiry: float = 35 * 86400.0  # a triplet that got through is remembered this long
    # A file shared by all smtpd workers and kept across restarts; default <store.root>/../filtering/.
    path: Path | None = None


@dataclass(frozen=True)
class Rspamd:
    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = 11333  # the normal worker: /checkv2
    controller_port: int = 11334  # the controller: /learnspam, /learnham
    controller_password: str | None = None  # None: loopback is a secure_ip of the controller
    timeout: float = 15.0
    on_failure: str = "accept"  # rspamd down or slow: accept untagged (fail-open) or 451 (fail-closed)
    junk_score: float = 6.0  # at or above: the recipient's Junk folder (rspamd's add header)
    reject_score: float = 15.0  # at or above: 550 5.7.1 at the end of DATA
    max_size: int = 20 * 1024 * 1024  # larger messages are not sent to rspamd


@dataclass(frozen=True)
class Clamav:
    enabled: bool = False
    socket: Path = Path("/run/clamav/clamd.ctl")
    timeout: float = 30.0
    max_size: int = 25 * 1024 * 1024  # bytes streamed at most; keep at or below clamd's StreamMaxLength
    on_failure: str = "tempfail"  # clamd down or slow: 451 4.7.1 (fail-closed) or accept with a header


@dataclass(frozen=True)
class SenderList:
    """A user's own lists: sender addresses (a@b.example) or domains (b.example)."""

    allow: tuple[str, ...] = ()
    block: tuple[str, ...] = ()


@dataclass(frozen=True)
class Filtering:
    spf: bool = True
    dkim: bool = True
    dmarc: bool = True
    resolver_address: str | None = None  # None: the system resolver (/etc/resolv.conf)
    resolver_port: int = 53
    dns_timeout: float = 5.0  # seconds for the DNS lookups of one check
    dnsbl: tuple[DnsblList, ...] = ()
    greylisting: Greylisting = field(default_factory=Greylisting)
    rspamd: Rspamd = field(default_factory=Rspamd)
    clamav: Clamav = field(default_factory=Clamav)
    sender_lists: tuple[tuple[str, SenderList], ...] = ()  # (user address, lists)

    def lists_of(self, address: str) -> SenderList | None:
        for user, lists in self.sender_lists:
            if user == address:
                return lists
        return None


def _flag(reader: _Reader, name: str, default: bool) -> bool:
    value = reader.raw(name, default)
    if not isinstance(value, bool):
        raise ConfigError(reader.key(name), f"must be true or false, got {value!r}")
    return value


def _choice(reader: _Reader, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = reader.string(name, default)
    if value not in choices:
        raise ConfigError(reader.key(name), f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _ip(reader: _Reader, name: str, default: Any = ...) -> str:
    value = reader.string(name, default)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(reader.key(name), f"{value!r} is not an IP address") from None
    return value


def _parse_filtering(top: _Reader, domains: list[str], users: list[str]) -> Filtering:
    reader = top.sub("filtering", {})
    reader.check_unknown(
        {"spf", "dkim", "dmarc", "resolver", "dns_timeout", "dnsbl", "greylisting", "rspamd", "clamav"}
        | {"sender_lists"}
    )
    resolver_address: str | None = None
    resolver_port = 53
    if reader.raw("resolver", None) is not None:
        resolver = reader.sub("resolver")
        resolver.check_unknown({"address", "port"})
        resolver_address = _ip(resolver, "address")
        resolver_port = resolver.integer("port", 53, minimum=1, maximum=65535)

    lists: list[DnsblList] = []
    for i, raw in enumerate(reader.items("dnsbl", [])):
        entry = _Reader(raw, f"{reader.key('dnsbl')}[{i}]")
        entry.check_unknown({"zone", "action"})
        zone = entry.string("zone").lower().rstrip(".")
        if not is_valid_domain(zone):
            raise ConfigError(entry.key("zone"), f"{zone!r} is not a DNS zone name")
        if zone in (z.zone for z in lists):
            raise ConfigError(entry.key("zone"), f"{zone!r} is listed twice")
        lists.append(DnsblList(zone, _choice(entry, "action", "reject", DNSBL_ACTIONS)))
    if len(lists) > 10:
        raise ConfigError(reader.key("dnsbl"), "lists at most 10 zones (each costs a lookup per connection)")

    grey = reader.sub("greylisting", {})
    grey.check_unknown({"enabled", "delay", "retry_window", "expiry", "path"})
    greylisting = Greylisting(
        enabled=_flag(grey, "enabled", False),
        delay=_number(grey, "delay", 300, 1, 86400),
        retry_window=_number(grey, "retry_window", 86400, 60, 7 * 86400),
        expiry=_number(grey, "expiry", 35 * 86400, 3600, 366 * 86400),
        path=_absolute_path(grey, "path", None),
    )
    if greylisting.retry_window <= greylisting.delay:
        raise ConfigError(grey.key("retry_window"), "must be longer than the delay")

    spam = reader.sub("rspamd", {})
    spam.check_unknown(set(Rspamd.__dataclass_fields__))
    defaults = Rspamd()
    password = spam.raw("controller_password", None)
    if password is not None and (not isinstance(password, str) or not password or "\n" in password):
        raise ConfigError(spam.key("controller_password"), "must be a non-empty one-line string")
    rspamd = Rspamd(
        enabled=_flag(spam, "enabled", False),
        address=_ip(spam, "address", defaults.address),
        port=spam.integer("port", defaults.port, minimum=1, maximum=65535),
        controller_port=spam.integer("controller_port", defaults.controller_port, minimum=1, maximum=65535),
        controller_password=password,
        timeout=_number(spam, "timeout", defaults.timeout, 0.1, 600),
        on_failure=_choice(spam, "on_failure", defaults.on_failure, FILTER_FAILURE_MODES),
        junk_score=_score(spam, "junk_score", defaults.junk_score),
        reject_score=_score(spam, "reject_score", defaults.reject_score),
        max_size=spam.integer("max_size", defaults.max_size, minimum=1024, maximum=1 << 31),
    )
    if rspamd.reject_score <= rspamd.junk_score:
        raise ConfigError(spam.key("reject_score"), "must be higher than junk_score")

    virus = reader.sub("clamav", {})
    virus.check_unknown(set(Clamav.__dataclass_fields__))
    clamav = Clamav(
        enabled=_flag(virus, "enabled", False),
        socket=_absolute_path(virus, "socket", str(Clamav.socket)) or Clamav.socket,
        timeout=_number(virus, "timeout", Clamav.timeout, 0.1, 600),
        max_size=virus.integer("max_size", Clamav.max_size, minimum=1024, maximum=1 << 31),
        on_failure=_choice(virus, "on_failure", Clamav.on_failure, FILTER_FAILURE_MODES),
    )

    sender_lists: list[tuple[str, SenderList]] = []
    raw_lists = reader.sub("sender_lists", {})
    for address in raw_lists.data:
        key = raw_lists.key(str(address))
        if not isinstance(address, str) or address.lower() not in users:
            raise ConfigError(key, f"{address!r} is not one of the users")
        entry = _Reader(raw_lists.data[address], key)
        entry.check_unknown({"allow", "block"})
        kinds: dict[str, tuple[str, ...]] = {}
        for kind in ("allow", "block"):
            values = entry.items(kind, [])
            if len(values) > 1000:
                raise ConfigError(entry.key(kind), "lists at most 1000 senders")
            for j, value in enumerate(values):
                text = value.lower() if isinstance(value, str) else ""
                if not (is_valid_domain(text) or is_plausible_address(text)):
                    raise ConfigError(
                        f"{entry.key(kind)}[{j}]", f"{value!r} is neither a mail address nor a domain"
                    )
            kinds[kind] = tuple(v.lower() for v in values)
        sender_lists.append((address.lower(), SenderList(**kinds)))

    return Filtering(
        spf=_flag(reader, "spf", True),
        dkim=_flag(reader, "dkim", True),
        dmarc=_flag(reader, "dmarc", True),
        resolver_address=resolver_address,
        resolver_port=resolver_port,
        dns_timeout=_number(reader, "dns_timeout", 5, 0.1, 60),
        dnsbl=tuple(lists),
        greylisting=greylisting,
        rspamd=rspamd,
        clamav=clamav,
        sender_lists=tuple(sender_lists),
    )


def _score(reader: _Reader, name: str, default: float) -> float:
    value = reader.raw(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1000 <= value <= 1000:
        raise ConfigError(reader.key(name), f"must be a score between -1000 and 1000, got {value!r}")
    return float(value)


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), f"is not valid YAML: {exc}") from None
    return parse(data, source=path)
