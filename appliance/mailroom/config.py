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
LISTENER_NAMES = ("mx",)


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

    @property
    def localpart(self) -> str:
        return self.address.rsplit("@", 1)[0]

    @property
    def domain(self) -> str:
        return self.address.rsplit("@", 1)[1]


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
    log_level: str = "info"
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

    def items(self, name: str) -> list[Any]:
        value = self.raw(name)
        if not isinstance(value, list):
            raise ConfigError(self.key(name), "must be a list")
        return value


def parse(data: Any, source: Path | None = None) -> Config:
    top = _Reader(data, "")
    top.check_unknown({"hostname", "run_as", "domains", "users", "store", "tls", "smtp", "log_level"})

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
    for i, raw in enumerate(top.items("users")):
        entry = _Reader(raw, f"users[{i}]")
        entry.check_unknown({"address", "password_hash"})
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
        users.append(User(address, password_hash))

    run_as = top.sub("run_as", {})
    run_as.check_unknown({"user", "group"})
    store = top.sub("store")
    store.check_unknown({"root"})
    store_root = Path(store.string("root"))
    if not store_root.is_absolute():
        raise ConfigError("store.root", "must be an absolute path")

    tls = top.sub("tls", {})
    tls.check_unknown({"certificate", "private_key"})
    cert = tls.raw("certificate", None)
    key = tls.raw("private_key", None)
    if (cert is None) != (key is None):
        raise ConfigError("tls", "certificate and private_key go together")

    smtp = top.sub("smtp")
    smtp.check_unknown({"max_message_size", "listeners"})
    max_size = smtp.integer("max_message_size", 25 * 1024 * 1024, minimum=1024, maximum=1 << 31)
    listeners: list[Listener] = []
    for i, raw in enumerate(smtp.items("listeners")):
        entry = _Reader(raw, f"smtp.listeners[{i}]")
        entry.check_unknown({"name", "address", "port"})
        name = entry.string("name")
        if name not in LISTENER_NAMES:
            raise ConfigError(entry.key("name"), f"must be one of {', '.join(LISTENER_NAMES)}")
        address = entry.string("address")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(entry.key("address"), f"{address!r} is not an IP address") from None
        listeners.append(Listener(name, address, entry.integer("port", minimum=1, maximum=65535)))
    if not listeners:
        raise ConfigError("smtp.listeners", "must list at least one listener")

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
        log_level=log_level,
        source=source,
    )


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
