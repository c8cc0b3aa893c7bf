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
    return Directory(
        parse(
            {
                "hostname": "mail.example.test",
                "domains": ["example.test"],
                "users": [
                    {
                        "address": "alice@example.test",
                        "password_hash": hash_password("pw", address="alice@example.test", salt_key=KEY),
                    }
                ],
                "store": {"root": "/srv/mail"},
                "smtp": {"listeners": [{"name": "mx", "address": "127.0.0.1", "port": 25}]},
            }
        )
    )


def test_resolve_is_case_insensitive_and_exact() -> None:
    d = directory()
    assert d.resolve("Alice@Example.TEST") is not None
    assert d.resolve("alice+tag@example.test") is None
    assert d.resolve("bob@example.test") is None
    assert d.is_local_domain("EXAMPLE.test")
    assert not d.is_local_domain("example.org")


def test_authenticate() -> None:
    d = directory()
    assert asyncio.run(d.authenticate("alice@example.test", "pw")) is not None
    assert asyncio.run(d.authenticate("alice@example.test", "wrong")) is None
    assert asyncio.run(d.authenticate("nobody@example.test", "pw")) is None


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
