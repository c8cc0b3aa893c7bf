"""Nothing acknowledged is ever lost: SIGKILL at random moments, and a full disk."""

from __future__ import annotations

import os
import random
import re
import smtplib
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import config_data, free_port, start_smtpd

RECIPIENT = "alice@example.test"


def stored_ids(store: Path) -> set[str]:
    ids = set()
    for folder in ("new", "cur"):
        path = store / "example.test" / "alice" / folder
        for entry in path.iterdir() if path.is_dir() else ():
            match = re.search(rb"^Message-ID: (<[^>]+>)", entry.read_bytes(), re.MULTILINE)
            if match:
                ids.add(match.group(1).decode())
    return ids


def sender(port: int, acknowledged: list[str], stop: threading.Event) -> None:
    """Send messages one after another, recording each Message-ID the server took with 250."""
    while not stop.is_set():
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
                while not stop.is_set():
                    mid = f"<{uuid.uuid4()}@durability.test>"
                    body = f"Message-ID: {mid}\r\nSubject: d\r\n\r\n" + ("x" * 78 + "\r\n") * 25
                    client.sendmail("s@remote.test", [RECIPIENT], body)
                    acknowledged.append(mid)  # only reached after the 250
        except (OSError, smtplib.SMTPException):
            time.sleep(0.01)  # the daemon is down: try again


def test_sigkill_at_random_moments_loses_no_acknowledged_message(
    tmp_path: Path, tls_files: tuple[Path, Path]
) -> None:
    port = free_port()
    config = tmp_path / "mailroom.yml"
    config.write_text(
        yaml.safe_dump(config_data(tmp_path / "mail", port, None, limits={"connection_rate_per_ip": 100000}))
    )
    acknowledged: list[str] = []
    stop = threading.Event()
    process = start_smtpd(config, port)
    threads = [threading.Thread(target=sender, args=(port, acknowledged, stop)) for _ in range(4)]
    for t in threads:
        t.start()
    rng = random.Random(20261127)
    kills = 0
    try:
        for _ in range(25):
            time.sleep(rng.uniform(0.05, 0.4))
            process.kill()
            process.wait(10)
            kills += 1
            process = start_smtpd(config, port)
    finally:
        stop.set()
        for t in threads:
            t.join(20)
        process.terminate()
        process.wait(10)
    assert kills == 25
    assert len(acknowledged) > 50, "the load did not get going"
    missing = set(acknowledged) - stored_ids(tmp_path / "mail")
    assert not missing, f"{len(missing)} acknowledged messages lost"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def fill(port: int, count: int) -> list[tuple[str, int, bytes]]:
    """Send count messages of ~100 KB; return (command, code, text) for each one's outcome."""
    outcomes = []
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("c.test")
        for i in range(count):
            code, text = client.mail("s@remote.test")
            if code != 250:
                outcomes.append(("MAIL", code, text))
                client.rset()
                continue
            client.rcpt(RECIPIENT)
            data = (
                f"Message-ID: <{uuid.uuid4()}-{i}@disk.test>\r\n\r\n" + ("y" * 998 + "\r\n") * 100
            ).encode()
            code, text = client.data(data)
            outcomes.append(("DATA", code, text))
    return outcomes


def run_with_threshold(tmp_path: Path, store: Path, min_free: int) -> tuple[int, subprocess.Popen]:
    port = free_port()
    config = tmp_path / f"mailroom-{min_free}.yml"
    config.write_text(
        yaml.safe_dump(
            config_data(store, port, None, extra={"store": {"root": str(store), "min_free_bytes": min_free}})
        )
    )
    return port, start_smtpd(config, port)


def test_full_disk_gives_temporary_errors_and_no_partial_files(tmp_path: Path, small_disk: Path) -> None:
    store = small_disk / "mail"
    maildir = store / "example.test" / "alice"

    # With the free-space threshold, MAIL FROM is refused before the disk is full.
    port, process = run_with_threshold(tmp_path, store, 200 * 1024)
    try:
        first = fill(port, 12)
    finally:
        process.terminate()
        process.wait(10)
    assert first[0][:2] == ("DATA", 250)
    assert ("MAIL", 452, b"4.3.1 Insufficient system storage, try again later") in first
    assert all(o[:2] in {("DATA", 250), ("MAIL", 452)} for o in first), first

    # Without it, the write itself runs out of space: 451, and nothing half-written stays.
    port, process = run_with_threshold(tmp_path, store, 0)
    try:
        second = fill(port, 5)
    finally:
        process.terminate()
        process.wait(10)
    assert ("DATA", 451, b"4.3.0 Message not stored, try again later") in second, second
    assert list((maildir / "tmp").iterdir()) == [], "a partial message was left in tmp/"
    accepted = sum(1 for kind, code, _ in first + second if kind == "DATA" and code == 250)
    assert len(list((maildir / "new").iterdir())) == accepted
