"""The smtpd daemon on loopback, driven by smtplib and swaks."""

from __future__ import annotations

import shutil
import smtplib
import ssl
import subprocess
import uuid
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

import pytest

from tests.conftest import Smtpd


def message(to: str, subject: str = "hello") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sender@remote.test"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4()}@remote.test>"
    msg.set_content("Hello from the test.\n.leading dot survives\n")
    return msg


def test_banner_and_ehlo(smtpd: Smtpd) -> None:
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as client:
        code, lines = client.ehlo("client.remote.test")
        assert code == 250
        features = lines.decode().splitlines()
        assert features[0] == "mail.example.test"
        for feature in ("SIZE 65536", "8BITMIME", "SMTPUTF8", "PIPELINING", "STARTTLS"):
            assert feature in features
        assert not any(f.startswith("AUTH") for f in features)


def test_banner_names_the_host(smtpd: Smtpd) -> None:
    client = smtplib.SMTP(timeout=10)
    code, banner = client.connect("127.0.0.1", smtpd.port)
    client.quit()
    assert code == 220
    assert banner.decode().startswith("mail.example.test")


def test_local_delivery_is_in_maildir_with_received_header(smtpd: Smtpd) -> None:
    msg = message("alice@example.test")
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as client:
        refused = client.send_message(msg, "sender@remote.test", ["Alice@EXAMPLE.test", "bob@example.test"])
    assert refused == {}
    for user in ("alice@example.test", "bob@example.test"):
        [stored] = smtpd.messages(user)
        assert msg["Message-ID"].encode() in stored
        assert stored.startswith(b"Received: from ")
        assert b"by mail.example.test (Mailroom) with ESMTP" in stored
        # Several recipients share one copy: naming them would disclose Bcc recipients.
        assert b"\tfor <" not in stored
        assert b"\r\n" not in stored, "Maildir files use LF line ends"
        assert b"\n.leading dot survives" in stored


def test_single_recipient_is_named_in_received(smtpd: Smtpd) -> None:
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as client:
        client.send_message(message("alice@example.test"), "s@remote.test", ["Alice@EXAMPLE.test"])
    [stored] = smtpd.messages("alice@example.test")
    assert b"\tfor <Alice@EXAMPLE.test>; " in stored


def test_null_sender_is_accepted(smtpd: Smtpd) -> None:
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as client:
        client.sendmail(
            "", ["alice@example.test"], message("alice@example.test").as_bytes(policy=SMTP_POLICY)
        )
    assert len(smtpd.messages("alice@example.test")) == 1


@pytest.mark.parametrize(
    ("recipient", "code", "enhanced"),
    [
        ("nobody@example.test", 550, "5.1.1"),
        ("alice@elsewhere.test", 550, "5.7.1"),
        ('"alice@elsewhere.test"@example.test', 550, "5.1.1"),
        ("alice%elsewhere.test@example.test", 550, "5.1.1"),
        # A source route: Python's address parser refuses it (553 5.1.3) or strips the route
        # to alice@elsewhere.test (550 5.7.1), depending on the 3.11 patch release.
        ("@example.test:alice@elsewhere.test", (553, 550), ("5.1.3", "5.7.1")),
        ("elsewhere.test!alice@example.test", 550, "5.1.1"),
    ],
)
def test_recipients_are_checked_at_rcpt_and_nothing_is_relayed(
    smtpd: Smtpd, recipient: str, code: int | tuple, enhanced: str | tuple
) -> None:
    accepted = set(
        zip(*((code, enhanced) if isinstance(code, tuple) else ((code,), (enhanced,))), strict=True)
    )
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as client:
        client.ehlo("client.remote.test")
        assert client.mail("")[0] == 250
        reply_code, reply = client.rcpt(recipient)
        assert (reply_code, reply.decode().split()[0]) in accepted
        # With no accepted recipient, DATA must not be accepted either.
        assert client.docmd("DATA")[0] == 503
    assert not smtpd.store.exists() or not any(smtpd.store.rglob("new/*"))


def test_starttls_then_delivery(smtpd: Smtpd) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as client:
        client.starttls(context=context)
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
        client.send_message(message("alice@example.test"), "s@remote.test", ["alice@example.test"])
    [stored] = smtpd.messages("alice@example.test")
    assert b"with ESMTPS" in stored


def test_tls_below_1_2_is_refused(smtpd: Smtpd) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as client, pytest.raises((ssl.SSLError, OSError)):
        client.starttls(context=context)


def test_oversized_message_is_refused_and_not_stored(smtpd: Smtpd) -> None:
    big = message("alice@example.test")
    big.set_content(("y" * 76 + "\n") * 1000)  # ~77 KB > the 64 KiB limit
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as client:
        client.ehlo("c.remote.test")
        # SIZE declared up front is refused at MAIL FROM ...
        assert client.mail("s@remote.test", ["SIZE=100000"])[0] == 552
        client.rset()
        # ... and a client that does not declare it is refused at the end of DATA.
        assert client.mail("s@remote.test")[0] == 250
        assert client.rcpt("alice@example.test")[0] == 250
        code, _ = client.data(big.as_bytes(policy=SMTP_POLICY))
        assert code == 552
    assert smtpd.messages("alice@example.test") == []


def test_vrfy_does_not_disclose_users(smtpd: Smtpd) -> None:
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as client:
        assert client.verify("alice@example.test")[0] == 252
        assert client.verify("nobody@example.test")[0] == 252


def test_message_acknowledged_survives_sigkill(smtpd: Smtpd) -> None:
    ids = []
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as client:
        for i in range(5):
            msg = message("alice@example.test", f"n{i}")
            client.send_message(msg, "s@remote.test", ["alice@example.test"])
            ids.append(msg["Message-ID"])
    smtpd.kill()
    stored = b"".join(smtpd.messages("alice@example.test"))
    assert all(mid.encode() in stored for mid in ids)
    assert not list((smtpd.maildir("alice@example.test") / "tmp").iterdir())
    smtpd.start()  # comes back on the same port with the same mail
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=10) as client:
        client.send_message(message("alice@example.test"), "s@remote.test", ["alice@example.test"])
    assert len(smtpd.messages("alice@example.test")) == 6


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks (Debian package) not installed")
def test_swaks_delivers_over_starttls(smtpd: Smtpd) -> None:
    marker = f"<{uuid.uuid4()}@swaks.test>"
    result = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{smtpd.port}",
            "--to",
            "bob@example.test",
            "--from",
            "someone@remote.test",
            "--tls",
            "--header",
            f"Message-Id: {marker}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "TLS started" in result.stdout
    [stored] = smtpd.messages("bob@example.test")
    assert marker.encode() in stored
