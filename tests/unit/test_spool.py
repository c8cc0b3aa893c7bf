from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailroom.queue import Envelope, Spool, SpoolError


def test_enqueue_writes_message_and_envelope(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    env = Envelope(
        sender="alice@example.test",
        recipients=("x@remote.test", "y@remote.test"),
        authenticated_as="alice@example.test",
    )
    queue_id = spool.enqueue(env, b"Subject: hi\r\n\r\nbody\r\n")
    assert spool.entries() == [queue_id]
    read_env, message = spool.read(queue_id)
    assert read_env == env
    assert message == b"Subject: hi\r\n\r\nbody\r\n"
    assert not list((tmp_path / "tmp").iterdir())


def test_failed_enqueue_leaves_no_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = Spool(tmp_path)
    real_rename = os.rename
    calls = []

    def rename_then_fail(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) == 2:  # the .env, after the .msg went in
            raise OSError(28, "No space left on device")
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", rename_then_fail)
    with pytest.raises(SpoolError):
        spool.enqueue(Envelope(sender="", recipients=("x@remote.test",)), b"x")
    assert spool.entries() == []
    assert not list(spool.incoming.iterdir())
    assert not list(spool.tmp.iterdir())


def test_cli_queue_list_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import yaml

    from mailroom import cli

    spool = Spool(tmp_path / "queue")
    queue_id = spool.enqueue(Envelope(sender="alice@example.test", recipients=("x@remote.test",)), b"hi\r\n")
    config = tmp_path / "mailroom.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "hostname": "mail.example.test",
                "domains": ["example.test"],
                "store": {"root": str(tmp_path / "mail")},
                "queue": {"root": str(tmp_path / "queue")},
                "smtp": {"listeners": [{"name": "mx", "address": "127.0.0.1", "port": 25}]},
            }
        )
    )
    assert cli.main(["queue", "list", "--config", str(config), "--json"]) == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["id"] == queue_id
    assert entry["sender"] == "alice@example.test"
    assert entry["recipients"]["x@remote.test"]["status"] == "pending"
    assert cli.main(["queue", "list", "--config", str(config)]) == 0
    assert "1 messages in the queue" in capsys.readouterr().out
    assert cli.main(["queue", "show", queue_id, "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["size"] == 4
    assert cli.main(["queue", "show", "nope", "--config", str(config)]) == 1
