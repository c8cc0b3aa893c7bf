from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from mailroom import cli
from mailroom.accounts import Directory, hash_password, verify_password
from mailroom.config import parse

KEY = b"s" * 32


def test_hash_is_argon2id_stable_and_salted_per_address() -> None:
    first = hash_password("pw", address="alice@example.test", salt_key=KEY)
    assert first.startswith("$argon2id$")
    assert first == hash_password("pw", address="ALICE@example.test", salt_key=KEY)
    assert first != hash_password("pw", address="bob@example.test", salt_key=KEY)
    assert first != hash_password("pw", address="alice@example.test", salt_key=b"t" * 32)
    assert verify_password(first, "pw")
    assert not verify_password(first, "PW")
    assert not verify_password("garbage", "pw")


def test_short_salt_key_is_refused() -> None:
    with pytest.raises(ValueError):
        hash_password("pw", address="a@b.test", salt_key=b"short")


def directory() -> Directory:
    def user(address: str, **extra: object) -> dict:
        return {
            "address": address,
            "password_hash": hash_password("pw", address=address, salt_key=KEY),
            **extra,
        }

    return Directory(
        parse(
            {
                "hostname": "mail.example.test",
                "domains": ["example.test", "example.org"],
                "users": [
                    user("alice@example.test"),
                    user("bob@example.test"),
                    user("gone@example.test", state="disabled"),
                ],
                "aliases": [
                    {
                        "address": "sales@example.test",
                        "to": ["alice@example.test", "bob@example.test", "x@remote.test"],
                    },
                    {"address": "info@example.test", "to": "sales@example.test"},
                    {"address": "loop1@example.test", "to": ["loop2@example.test", "alice@example.test"]},
                    {"address": "loop2@example.test", "to": "loop1@example.test"},
                    {"address": "@example.org", "to": "bob@example.test"},
                ],
                "store": {"root": "/srv/mail"},
                "smtp": {"listeners": [{"name": "mx", "address": "127.0.0.1", "port": 25}]},
            }
        )
    )


def local(resolution: object) -> set[str]:
    return {u.address for u in resolution.local}  # type: ignore[attr-defined]


def test_resolve_is_case_insensitive_and_exact() -> None:
    d = directory()
    assert local(d.resolve("Alice@Example.TEST")) == {"alice@example.test"}
    assert not d.resolve("alice+tag@example.test")
    assert not d.resolve("nobody@example.test")
    assert d.is_local_domain("EXAMPLE.test")
    assert not d.is_local_domain("remote.test")


def test_aliases_expand_to_mailboxes_and_remote_addresses() -> None:
    d = directory()
    for address in ("sales@example.test", "INFO@example.test"):
        resolution = d.resolve(address)
        assert local(resolution) == {"alice@example.test", "bob@example.test"}
        assert resolution.remote == ("x@remote.test",)


def test_alias_loops_end() -> None:
    assert local(directory().resolve("loop1@example.test")) == {"alice@example.test"}


def test_catch_all_takes_unknown_addresses_of_its_domain_only() -> None:
    d = directory()
    assert local(d.resolve("anything@example.org")) == {"bob@example.test"}
    assert not d.resolve("anything@example.test")


def test_disabled_user_gets_no_mail_and_cannot_log_in() -> None:
    d = directory()
    assert not d.resolve("gone@example.test")
    assert d.user("gone@example.test") is None
    assert asyncio.run(d.authenticate("gone@example.test", "pw")) is None


def test_may_send_as_own_address_and_aliases_reaching_them() -> None:
    d = directory()
    alice = d.user("alice@example.test")
    assert alice is not None
    assert d.may_send_as(alice, "ALICE@example.test")
    assert d.may_send_as(alice, "sales@example.test")
    assert not d.may_send_as(alice, "bob@example.test")
    assert not d.may_send_as(alice, "anything@example.org")  # catch-all is not an address of hers
    assert not d.may_send_as(alice, "alice@remote.test")


def test_authenticate() -> None:
    d = directory()
    assert asyncio.run(d.authenticate("alice@example.test", "pw")) is not None
    assert asyncio.run(d.authenticate("alice@example.test", "wrong")) is None
    assert asyncio.run(d.authenticate("nobody@example.test", "pw")) is None


def test_authenticate_calls_meanwhile_for_an_active_user_only_and_answers_the_same() -> None:
    d = directory()
    called: list[str] = []

    def attempt(address: str, password: str) -> bool:
        return (
            asyncio.run(d.authenticate(address, password, lambda user: called.append(user.address)))
            is not None
        )

    assert attempt("alice@example.test", "pw")
    assert not attempt("alice@example.test", "wrong")
    assert called == ["alice@example.test", "alice@example.test"]
    called.clear()
    assert not attempt("nobody@example.test", "pw")
    assert not attempt("gone@example.test", "pw")  # disabled
    assert called == []


def test_cli_password_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "salt.key"
    key.write_bytes(KEY)
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert cli.main(["password", "hash", "--address", "alice@example.test", "--salt-key", str(key)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == hash_password("pw", address="alice@example.test", salt_key=KEY)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert cli.main(["password", "hash", "--address", "a@b.test", "--salt-key", str(key)]) == 1


def test_cli_accounts_list_and_test_login(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    config = tmp_path / "mailroom.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "hostname": "mail.example.test",
                "domains": ["example.test"],
                "users": [
                    {
                        "address": "alice@example.test",
                        "quota_bytes": 1000,
                        "password_hash": hash_password("pw", address="alice@example.test", salt_key=KEY),
                    }
                ],
                "aliases": [{"address": "@example.test", "to": "alice@example.test"}],
                "store": {"root": "/srv/mail"},
                "smtp": {"listeners": [{"name": "mx", "address": "127.0.0.1", "port": 25}]},
            }
        )
    )
    assert cli.main(["accounts", "list", "--config", str(config), "--json"]) == 0
    import json

    listed = json.loads(capsys.readouterr().out)
    assert listed == [
        {"address": "alice@example.test", "kind": "user", "state": "active", "quota_bytes": "1000"},
        {
            "address": "@example.test",
            "kind": "catch-all",
            "state": "-> alice@example.test",
            "quota_bytes": "-",
        },
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("pw\n"))
    assert cli.main(["accounts", "test-login", "alice@example.test", "--config", str(config)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("nope\n"))
    assert cli.main(["accounts", "test-login", "alice@example.test", "--config", str(config)]) == 1
    assert "login FAILED" in capsys.readouterr().out
