"""Moving mail into and out of Junk over IMAP teaches a real rspamd (imapd → filtering.learn_*)."""

from __future__ import annotations

import imaplib
import time
from pathlib import Path

import pytest
import yaml

from mailroom.store import Maildir
from tests.conftest import PASSWORD, config_data, free_port, insecure, start_daemon
from tests.integration.test_filtering import (  # noqa: F401 - fixtures used by name
    MISSING,
    Rspamd,
    dkim_key,
    dns_port,
    filtering,
    learned,
    rspamd,
)

pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"not installed: {MISSING}")

ALICE = "alice@example.test"


def spam(n: int) -> bytes:
    words = " ".join(f"pills{n}x{i} casino{n}y{i} winner{n}z{i}" for i in range(30))
    return (
        f"From: promo{n}@spam.test\nTo: {ALICE}\nSubject: offer {n}\n"
        f"Message-ID: <offer{n}@spam.test>\n\n{words}\n"
    ).encode()


def wait_learned(engine: Rspamd, count: int) -> None:
    deadline = time.monotonic() + 30
    while learned(engine) < count:
        assert time.monotonic() < deadline, f"rspamd learned {learned(engine)}, expected {count}"
        time.sleep(0.2)


def test_moves_into_and_out_of_junk_are_learned(
    tmp_path: Path,
    tls_files: tuple[Path, Path],
    dns_port: int,  # noqa: F811 - the fixture imported above
    rspamd: Rspamd,  # noqa: F811
) -> None:
    imaps = free_port()
    store = tmp_path / "mail"
    data = config_data(store, free_port(), tls_files)
    data["imap"] = {"listeners": [{"name": "imaps", "address": "127.0.0.1", "port": imaps}]}
    data["filtering"] = filtering(
        dns_port, rspamd={"enabled": True, "port": rspamd.port, "controller_port": rspamd.controller_port}
    )
    config = tmp_path / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    process = start_daemon("imapd", config, imaps)
    try:
        inbox = Maildir(store / "example.test" / "alice")
        for n in range(2):
            inbox.deliver(spam(n))
        client = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=insecure(), timeout=10)
        client.login(ALICE, PASSWORD)
        client.select("INBOX")
        before = learned(rspamd)
        assert client.uid("MOVE", "1", "Junk")[0] == "OK"  # into Junk: spam
        wait_learned(rspamd, before + 1)
        assert client.copy("1", "Archive")[0] == "OK"  # between ordinary folders: nothing
        client.select("Junk")
        assert client.uid("MOVE", "1", "INBOX")[0] == "OK"  # out of Junk: ham
        wait_learned(rspamd, before + 2)
        time.sleep(1)
        assert learned(rspamd) == before + 2
        client.logout()
    finally:
        process.terminate()
        process.wait(10)
