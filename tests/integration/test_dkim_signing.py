"""DKIM end to end: submit on 587/465 with AUTH, then dkimpy verifies the stored message.

The public keys are the records `mailroom dns --json` prints, served by a real
DNS server (dnsmasq) on loopback; dkimpy looks them up with dnspython, as any
receiving server would.
"""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import dkim as dkimpy
import dns.resolver
import pytest
import yaml

from mailroom.queue import Spool
from tests.conftest import (
    DNSMASQ,
    PASSWORD,
    config_data,
    dnsmasq,
    free_port,
    insecure,
    maildir_messages,
    start_smtpd,
)

pytestmark = pytest.mark.skipif(DNSMASQ is None, reason="dnsmasq is not installed (apt-get install dnsmasq)")


@dataclass
class Server:
    mx: int
    submission: int
    submissions: int
    store: Path
    queue: Path
    config: Path

    def spooled(self) -> list[bytes]:
        spool = Spool(self.queue)
        return [spool.read(queue_id)[1] for queue_id in spool.entries()] if spool.incoming.is_dir() else []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[Path, Path]) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("dkim")
    rsa, ed = folder / "example.test.mr2026r.key", folder / "example.test.mr2026e.key"
    subprocess.run(["openssl", "genrsa", "-out", str(rsa), "2048"], check=True, capture_output=True)
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(ed)], check=True, capture_output=True
    )
    mx, sub, subs = free_port(), free_port(), free_port()
    listeners = [
        {"name": "mx", "address": "127.0.0.1", "port": mx},
        {"name": "submission", "address": "127.0.0.1", "port": sub},
        {"name": "submissions", "address": "127.0.0.1", "port": subs},
    ]
    extra = {
        "queue": {"root": str(folder / "queue")},
        "dkim": {
            "keys": [
                {
                    "domain": "example.test",
                    "selector": "mr2026r",
                    "algorithm": "rsa-sha256",
                    "private_key": str(rsa),
                },
                {
                    "domain": "example.test",
                    "selector": "mr2026e",
                    "algorithm": "ed25519-sha256",
                    "private_key": str(ed),
                },
            ]
        },
    }
    config = folder / "mailroom.yml"
    config.write_text(
        yaml.safe_dump(config_data(folder / "mail", mx, tls_files, listeners=listeners, extra=extra))
    )
    process = start_smtpd(config, mx)
    yield Server(mx, sub, subs, folder / "mail", folder / "queue", config)
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def published(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict]]:
    """The DKIM records of `mailroom dns --json`, served by dnsmasq; dnspython's default resolver asks it."""
    out = subprocess.run(
        [sys.executable, "-m", "mailroom.cli", "dns", "--json", "--config", str(server.config)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    records = [r for r in json.loads(out)["records"] if "._domainkey." in r["name"]]
    assert len(records) == 2
    options = []
    for record in records:
        value = record["value"]
        chunks = [value[i : i + 255] for i in range(0, len(value), 255)]  # one TXT string holds 255
        options.append(f"--txt-record={record['name']},{','.join(chunks)}")
    folder = tmp_path_factory.mktemp("dns")
    with dnsmasq(options, folder, (records[0]["name"], "TXT")) as port:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = port
        resolver.lifetime = 2
        saved = dns.resolver.default_resolver
        dns.resolver.default_resolver = resolver
        try:
            yield records
        finally:
            dns.resolver.default_resolver = saved


def message(sender: str, to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = f"Alice <{sender}>", to, "DKIM test"
    msg["Message-ID"] = f"<{uuid.uuid4()}@example.test>"
    msg.set_content("hello\n\nsigned at acceptance\n")
    return msg


def new_items(before: list[bytes], after: list[bytes]) -> list[bytes]:
    return [m for m in after if m not in before]


def verify_all(raw: bytes) -> list[dict[bytes, bytes]]:
    """Verify each DKIM-Signature with dkimpy (dnspython against dnsmasq); return their tags."""
    parsed = dkimpy.DKIM(raw)
    tags = [dkimpy.util.parse_tag_value(v) for k, v in parsed.headers if k.lower() == b"dkim-signature"]
    for index in range(len(tags)):
        assert dkimpy.DKIM(raw).verify(idx=index), f"signature {index} does not verify"
    return tags


@pytest.mark.parametrize("listener", ["submission", "submissions"])
def test_submitted_mail_is_signed_and_verifies_against_dns(
    server: Server, published: list[dict], listener: str
) -> None:
    spooled, local = server.spooled(), maildir_messages(server.store, "bob@example.test")
    accepted_at = time.time()
    if listener == "submission":
        client = smtplib.SMTP("127.0.0.1", server.submission, timeout=10)
        client.starttls(context=insecure())
    else:
        client = smtplib.SMTP_SSL("127.0.0.1", server.submissions, timeout=10, context=insecure())
    with client:
        client.login("alice@example.test", PASSWORD)
        client.send_message(
            message("alice@example.test", "carol@remote.test, bob@example.test"),
            to_addrs=["carol@remote.test", "bob@example.test"],
        )
    (queued,) = new_items(spooled, server.spooled())
    assert dkimpy.verify(queued)  # the top signature, as most receivers check it
    tags = verify_all(queued)
    assert [t[b"a"] for t in tags] == [b"rsa-sha256", b"ed25519-sha256"]
    assert {t[b"s"] for t in tags} == {b"mr2026r", b"mr2026e"}
    for tag in tags:
        assert tag[b"d"] == b"example.test"
        assert tag[b"c"] == b"relaxed/relaxed"
        assert [h.strip() for h in tag[b"h"].split(b":")].count(b"from") == 2
        assert accepted_at - 1 <= int(tag[b"t"]) <= time.time() + 1
    # Our Received header on top, then the signatures: the spooled bytes are what goes out.
    assert queued.startswith(b"Received: ")
    assert queued.index(b"DKIM-Signature:") < queued.index(b"From:")
    # The local copy (a Maildir file, LF line ends) carries the same, valid signatures.
    (delivered,) = new_items(local, maildir_messages(server.store, "bob@example.test"))
    assert verify_all(delivered) and b"\r\n" not in delivered


def test_a_from_the_user_may_not_use_is_not_signed(server: Server, published: list[dict]) -> None:
    spooled = server.spooled()
    with smtplib.SMTP("127.0.0.1", server.submission, timeout=10) as client:
        client.starttls(context=insecure())
        client.login("alice@example.test", PASSWORD)
        forged = message("bob@example.test", "carol@remote.test")
        client.send_message(forged, from_addr="alice@example.test", to_addrs=["carol@remote.test"])
    (queued,) = new_items(spooled, server.spooled())
    assert b"DKIM-Signature" not in queued


def test_mail_from_outside_on_port_25_is_not_signed(server: Server, published: list[dict]) -> None:
    before = maildir_messages(server.store, "bob@example.test")
    with smtplib.SMTP("127.0.0.1", server.mx, timeout=10) as client:
        client.send_message(message("alice@example.test", "bob@example.test"), to_addrs=["bob@example.test"])
    (delivered,) = new_items(before, maildir_messages(server.store, "bob@example.test"))
    assert b"DKIM-Signature" not in delivered


def test_a_changed_message_fails_verification(server: Server, published: list[dict]) -> None:
    spooled = server.spooled()
    with smtplib.SMTP("127.0.0.1", server.submission, timeout=10) as client:
        client.starttls(context=insecure())
        client.login("alice@example.test", PASSWORD)
        client.send_message(
            message("alice@example.test", "carol@remote.test"), to_addrs=["carol@remote.test"]
        )
    (queued,) = new_items(spooled, server.spooled())
    assert dkimpy.verify(queued)
    assert not dkimpy.verify(queued.replace(b"signed at acceptance", b"changed on the way"))
