from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailroom.store import DeliveryError, MaildirStore


def test_delivery_lands_in_new_with_size_and_nothing_in_tmp(tmp_path: Path) -> None:
    store = MaildirStore(tmp_path)
    box = store.mailbox("Alice@Example.test")
    names = {box.deliver(b"Subject: one\n\nbody\n"), box.deliver(b"Subject: two\n\nbody\n")}
    assert len(names) == 2
    new = tmp_path / "example.test" / "alice" / "new"
    assert {p.name for p in new.iterdir()} == names
    assert not list((tmp_path / "example.test" / "alice" / "tmp").iterdir())
    for name in names:
        data = (new / name).read_bytes()
        wire = len(data) + data.count(b"\n") - data.count(b"\r\n")  # CRLF on the wire
        assert name.endswith(f",S={len(data)},W={wire}")
        assert (new / name).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "example.test" / "alice" / "cur").is_dir()


@pytest.mark.parametrize("address", ["../x@example.test", ".hidden@example.test", "a/b@example.test"])
def test_unsafe_names_are_refused(tmp_path: Path, address: str) -> None:
    with pytest.raises(DeliveryError):
        MaildirStore(tmp_path).mailbox(address)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_store_raises_delivery_error(tmp_path: Path) -> None:
    box = MaildirStore(tmp_path).mailbox("a@example.test")
    box.create()
    (box.path / "tmp").chmod(0o500)
    with pytest.raises(DeliveryError):
        box.deliver(b"x")


def test_failed_rename_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    box = MaildirStore(tmp_path).mailbox("a@example.test")

    def broken_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "rename", broken_rename)
    with pytest.raises(DeliveryError, match="No space left"):
        box.deliver(b"Subject: x\n\n")
    assert not list((box.path / "tmp").iterdir())
    assert not list((box.path / "new").iterdir())


def test_group_sync_covers_every_caller_with_fewer_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time

    from mailroom import fsutil

    fsyncs: list[tuple[float, float]] = []

    def slow_fsync(path: Path) -> None:
        start = time.monotonic()
        time.sleep(0.01)
        fsyncs.append((start, time.monotonic()))

    monkeypatch.setattr(fsutil, "fsync_dir", slow_fsync)
    syncer = fsutil.GroupSync(tmp_path)
    calls: list[tuple[float, float]] = []
    lock = threading.Lock()

    def caller() -> None:
        called = time.monotonic()
        syncer.sync()
        with lock:
            calls.append((called, time.monotonic()))

    threads = [threading.Thread(target=caller) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 40
    assert len(fsyncs) < 40, "concurrent callers should share fsyncs"
    for called, returned in calls:
        # Some fsync started after the call and ended before the return.
        assert any(start >= called and end <= returned for start, end in fsyncs)


def test_group_sync_failure_reaches_the_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mailroom import fsutil

    def failing(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fsutil, "fsync_dir", failing)
    with pytest.raises(OSError, match="Input/output"):
        fsutil.GroupSync(tmp_path).sync()
    box = MaildirStore(tmp_path).mailbox("a@example.test")
    with pytest.raises(DeliveryError, match="Input/output"):
        box.deliver(b"Subject: x\n\n")
    assert not list((box.path / "tmp").iterdir())


def test_usage_is_recounted_when_the_maildir_changes(tmp_path: Path) -> None:
    box = MaildirStore(tmp_path).mailbox("a@example.test")
    assert box.usage() == 0
    first = box.deliver(b"x" * 100)
    assert box.usage() == 100
    assert box.usage() == 100  # cached: nothing changed
    sent = box.path / ".Sent" / "cur"
    sent.mkdir(parents=True)
    (sent / "1.M1P1Q1.host,S=50:2,S").write_bytes(b"y" * 50)
    assert box.usage() == 150  # a new folder is seen
    (box.path / "new" / first).unlink()  # expunged by another process
    assert box.usage() == 50
