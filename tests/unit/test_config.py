from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from mailroom import cli
from mailroom.config import ConfigError, is_valid_address, load, parse

GOOD = {
    "hostname": "mail.example.test",
    "domains": ["example.test"],
    "users": [{"address": "alice@example.test", "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$x$y"}],
    "store": {"root": "/var/lib/mailroom/mail"},
    "smtp": {"listeners": [{"name": "mx", "address": "0.0.0.0", "port": 25}]},
}


def with_change(path: str, value: object) -> dict:
    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node: object = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
    if value is KeyError:
        del node[last]  # type: ignore[arg-type]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value  # type: ignore[index]
    return data


def test_good_config_parses_with_defaults() -> None:
    config = parse(GOOD)
    assert config.domains == ("example.test",)
    assert config.users[0].address == "alice@example.test"
    assert config.smtp_max_message_size == 25 * 1024 * 1024
    assert config.run_as_user == "mailroom"
    assert config.tls_certificate is None
    assert config.smtp_workers == 1 and config.smtp_pin_workers is True
    assert parse(with_change("smtp.pin_workers", False)).smtp_pin_workers is False


@pytest.mark.parametrize(
    ("path", "value", "key", "words"),
    [
        ("hostname", KeyError, "hostname", "is required"),
        ("hostname", "mail", "hostname", "fully qualified"),
        ("domains", [], "domains", "at least one"),
        ("domains", ["exa mple.test"], "domains[0]", "not a valid domain"),
        ("domains", ["example.test", "EXAMPLE.test"], "domains[1]", "twice"),
        ("users.0.address", "alice", "users[0].address", "not a valid mail address"),
        ("users.0.address", "alice@other.test", "users[0].address", "not in one of the domains"),
        ("users.0.password_hash", "plaintext", "users[0].password_hash", "argon2id"),
        ("users.0.password_hash", KeyError, "users[0].password_hash", "is required"),
        ("users", "alice", "users", "must be a list"),
        ("store.root", "relative/path", "store.root", "absolute"),
        ("smtp.listeners.0.port", 70000, "smtp.listeners[0].port", "between 1 and 65535"),
        ("smtp.listeners.0.port", "25", "smtp.listeners[0].port", "must be an integer"),
        ("smtp.listeners.0.address", "localhost", "smtp.listeners[0].address", "not an IP address"),
        ("smtp.listeners.0.name", "pop", "smtp.listeners[0].name", "must be one of"),
        ("smtp.max_message_size", 10, "smtp.max_message_size", "between"),
        ("smtp.relay", True, "smtp.relay", "unknown key"),
        ("smtp.pin_workers", "yes", "smtp.pin_workers", "must be true or false"),
        ("smtp.pin_workers", 1, "smtp.pin_workers", "must be true or false"),
        ("log_level", "loud", "log_level", "must be one of"),
    ],
)
def test_bad_values_name_their_key(path: str, value: object, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(with_change(path, value))
    assert info.value.key == key
    assert words in info.value.problem


def test_tls_needs_both_files() -> None:
    with pytest.raises(ConfigError, match="go together"):
        parse({**GOOD, "tls": {"certificate": "/etc/mailroom/tls/mail.crt"}})


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse(["hostname"])


@pytest.mark.parametrize("address", ["a@b.test", "first.last+tag@example.test"])
def test_valid_addresses(address: str) -> None:
    assert is_valid_address(address)


@pytest.mark.parametrize(
    "address", ["a", "@b.test", "a@b", "a..b@c.test", ".a@c.test", '"a@x"@c.test', "a b@c.test", "a@-c.test"]
)
def test_invalid_addresses(address: str) -> None:
    assert not is_valid_address(address)


def test_cli_config_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yml"
    good.write_text(yaml.safe_dump(GOOD))
    assert cli.main(["config", "check", str(good)]) == 0
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(with_change("users.0.address", "alice@other.test")))
    assert cli.main(["config", "check", str(bad)]) == 1
    assert "users[0].address" in capsys.readouterr().err
    broken = tmp_path / "broken.yml"
    broken.write_text("hostname: [unclosed\n")
    assert cli.main(["config", "check", str(broken)]) == 1
    assert "not valid YAML" in capsys.readouterr().err
    assert cli.main(["config", "check", str(tmp_path / "missing.yml")]) == 1


def test_cli_config_check_loads_tls(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad_tls = tmp_path / "tls.yml"
    bad_tls.write_text(
        yaml.safe_dump(
            {
                **GOOD,
                "tls": {"certificate": str(tmp_path / "no.crt"), "private_key": str(tmp_path / "no.key")},
            }
        )
    )
    assert cli.main(["config", "check", str(bad_tls)]) == 1
    assert "cannot load certificate" in capsys.readouterr().err


def test_load_reports_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nope.yml")
    assert "cannot be read" in str(info.value)


POP3 = {"listeners": [{"name": "pop3", "address": "0.0.0.0", "port": 110}]}


def pop3_listener(name: str = "pop3", address: str = "0.0.0.0", port: int = 110) -> dict:
    return {"listeners": [{"name": name, "address": address, "port": port}]}


TLS = {"certificate": "/etc/mailroom/tls/mail.crt", "private_key": "/etc/mailroom/tls/mail.key"}


def test_pop3_is_optional_and_parses_with_defaults() -> None:
    assert parse(GOOD).pop3_listeners == ()
    config = parse({**GOOD, "tls": TLS, "pop3": POP3})
    assert [(li.name, li.port) for li in config.pop3_listeners] == [("pop3", 110)]
    assert config.pop3_limits.idle_timeout == 600
    limits = parse({**GOOD, "tls": TLS, "pop3": {**POP3, "limits": {"max_errors": 3}}}).pop3_limits
    assert limits.max_errors == 3 and limits.login_timeout == 60


@pytest.mark.parametrize(
    ("pop3", "key", "words"),
    [
        ({"listeners": []}, "pop3.listeners", "at least one"),
        (
            {"listeners": [{"name": "imap", "address": "0.0.0.0", "port": 143}]},
            "pop3.listeners[0].name",
            "one of",
        ),
        ({"listeners": [{"name": "pop3", "address": "x", "port": 110}]}, "pop3.listeners[0].address", "IP"),
        (
            {"listeners": [{"name": "pop3s", "address": "0.0.0.0", "port": 0}]},
            "pop3.listeners[0].port",
            "between",
        ),
        (
            {"listeners": [{"name": "pop3", "address": "0.0.0.0", "port": 25}]},
            "pop3.listeners[0].port",
            "used",
        ),
        ({**POP3, "limits": {"idle_timeout": 0}}, "pop3.limits.idle_timeout", ">= 1"),
        ({**POP3, "limits": {"max_recipients": 5}}, "pop3.limits.max_recipients", "unknown key"),
        ({**POP3, "apop": True}, "pop3.apop", "unknown key"),
        ("yes", "pop3", "mapping"),
    ],
)
def test_bad_pop3_values_name_their_key(pop3: object, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse({**GOOD, "tls": TLS, "pop3": pop3})
    assert info.value.key == key
    assert words in info.value.problem


def test_pop3_needs_a_certificate() -> None:
    with pytest.raises(ConfigError) as info:
        parse({**GOOD, "pop3": POP3})
    assert info.value.key == "tls"


def test_runtime_dir_defaults_and_must_be_absolute() -> None:
    assert str(parse(GOOD).runtime_dir) == "/run/mailroom"
    assert str(parse({**GOOD, "runtime_dir": "/tmp/x/run"}).runtime_dir) == "/tmp/x/run"
    with pytest.raises(ConfigError, match="absolute"):
        parse({**GOOD, "runtime_dir": "run"})


def test_imap_workers_are_pinned_unless_told_not_to() -> None:
    imap = {"listeners": [{"name": "imaps", "address": "0.0.0.0", "port": 993}], "workers": 2}
    config = parse({**GOOD, "tls": TLS, "imap": imap})
    assert config.imap_workers == 2 and config.imap_pin_workers is True
    assert parse({**GOOD, "tls": TLS, "imap": {**imap, "pin_workers": False}}).imap_pin_workers is False
    with pytest.raises(ConfigError) as info:
        parse({**GOOD, "tls": TLS, "imap": {**imap, "pin_workers": "no"}})
    assert info.value.key == "imap.pin_workers"
