"""SRS: forwarded mail leaves with an SRS0 sender; bounces to it come back on port 25 and go on."""

from __future__ import annotations

import shutil
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mailroom.queue.spool import Spool
from mailroom.queue.srs import Srs, SrsError, is_srs, load_key
from tests.conftest import config_data, free_port, start_smtpd
from tests.integration import test_delivery
from tests.integration.test_delivery import Fake, Local, Remote, start_fake, wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("dnsmasq") is None and not Path("/usr/sbin/dnsmasq").exists(),
    reason="dnsmasq is not installed",
)

# dnsmasq with the delivery tests' zones, and the remote MTAs (carol@remote.test, erin@amx.test, ...).
dns_port = test_delivery.dns_port
remote = test_delivery.remote

KEY = b"0123456789abcdef0123456789abcdef"
DOMAINS = ("example.test", "example.org")


def srs() -> Srs:
    return Srs(KEY, "example.test", DOMAINS)


def test_forward_and_reverse() -> None:
    rewritten = srs().forward("Erin.X@AMX.test", now=1_700_000_000)
    local, _, domain = rewritten.partition("@")
    assert domain == "example.test" and is_srs(rewritten)
    tag, hash_, stamp, orig_domain, orig_local = local.split("=")
    assert (tag, len(hash_), len(stamp), orig_domain, orig_local) == ("SRS0", 4, 2, "amx.test", "Erin.X")
    assert srs().reverse(rewritten, now=1_700_000_000 + 86400) == "Erin.X@amx.test"
    # Some MTAs lowercase what they are given: the hash is compared without case.
    assert srs().reverse(rewritten.lower(), now=1_700_000_000) == "erin.x@amx.test"
    assert srs().forward("") == ""  # bounces stay bounces
    assert srs().forward("alice@example.org") == "alice@example.org"  # ours: SPF passes already


def test_forged_expired_and_malformed_are_refused() -> None:
    good = srs().forward("erin@amx.test", now=1_700_000_000)
    local = good.split("@")[0]
    other_key = Srs(b"another key, just as long as it is", "example.test", DOMAINS)
    with pytest.raises(SrsError, match="forged"):
        other_key.reverse(good, now=1_700_000_000)
    with pytest.raises(SrsError, match="forged"):  # the original address changed under the hash
        srs().reverse(local.replace("=erin", "=mallory") + "@example.test", now=1_700_000_000)
    with pytest.raises(SrsError, match="expired"):
        srs().reverse(good, now=1_700_000_000 + 22 * 86400)
    for bad in (
        "SRS0=abc@example.test",
        "SRS0==AA=x=y@example.test",
        "alice@example.test",
        good[:-5] + ".org2",
    ):
        with pytest.raises(SrsError):
            srs().reverse(bad, now=1_700_000_000)


def test_key_file_limits(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"tooshort\n")
    with pytest.raises(ValueError, match="at least 16 bytes"):
        load_key(short)
    good = tmp_path / "srs.key"
    good.write_bytes(KEY + b"\n")
    assert load_key(good) == KEY


@dataclass
class Forwarder:
    """Our host: smtpd on port 25 (alias fwd@example.test → x@fake.test) and deliveryd."""

    port: int
    local: Local


@pytest.fixture
def forwarder(tmp_path: Path, dns_port: int, remote: Remote) -> Iterator[tuple[Forwarder, Fake]]:
    fake = Fake(["250 2.1.5 ok"])
    server = start_fake("127.0.0.4", remote.port, fake)  # mx.fake.test
    folder = tmp_path / "local"
    folder.mkdir()
    key = folder / "srs.key"
    key.write_bytes(KEY)
    key.chmod(0o640)
    port = free_port()
    data = config_data(
        folder / "mail",
        port,
        None,
        extra={
            "queue": {"root": str(folder / "queue")},
            "aliases": [{"address": "fwd@example.test", "to": ["x@fake.test"]}],
            "srs": {"key_file": str(key), "domain": "example.test"},
            "delivery": {
                "resolver": {"address": "127.0.0.1", "port": dns_port},
                "remote_port": remote.port,
                "retry_schedule": [1],
                "scan_interval": 0.1,
                "connect_timeout": 2,
                "command_timeout": 5,
            },
        },
    )
    config = folder / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    smtpd = start_smtpd(config, port)
    local = Local(config, folder / "mail", Spool(folder / "queue"))
    local.start()
    yield Forwarder(port, local), fake
    local.stop()
    smtpd.terminate()
    smtpd.wait(10)
    server.shutdown()
    server.server_close()


def test_forwarded_mail_gets_an_srs_sender_and_its_bounce_comes_back(
    forwarder: tuple[Forwarder, Fake], remote: Remote
) -> None:
    ours, fake = forwarder
    with smtplib.SMTP("127.0.0.1", ours.port, timeout=10) as client:
        client.sendmail("erin@amx.test", ["fwd@example.test"], b"Subject: forward me\r\n\r\nhello\r\n")
    wait_for(lambda: fake.received, what="the forwarded message")
    [mail_from] = [c.decode() for c in fake.commands if c.upper().startswith(b"MAIL FROM")]
    sender = mail_from.split("<")[1].split(">")[0]
    assert sender.startswith("SRS0=") and sender.endswith("=amx.test=erin@example.test")
    assert srs().reverse(sender) == "erin@amx.test"  # made with the key the role would have written

    # The remote bounces it later: a null-sender message to the SRS address, on our port 25.
    with smtplib.SMTP("127.0.0.1", ours.port, timeout=10) as client:
        client.sendmail("", [sender], b"Subject: Undelivered Mail\r\n\r\nx@fake.test: no such user\r\n")
    wait_for(lambda: remote.messages("erin@amx.test"), what="the bounce at the original sender")
    assert b"Subject: Undelivered Mail" in remote.messages("erin@amx.test")[0]
    wait_for(lambda: "to=<erin@amx.test> delivered" in ours.local.log(), what="the log line")


def test_forged_and_expired_srs_bounces_get_550(forwarder: tuple[Forwarder, Fake]) -> None:
    ours, _ = forwarder
    forged = Srs(b"not the key of this host, but long", "example.test", DOMAINS).forward("erin@amx.test")
    expired = srs().forward("erin@amx.test", now=time.time() - 30 * 86400)
    with smtplib.SMTP("127.0.0.1", ours.port, timeout=10) as client:
        client.ehlo("bouncer.test")
        client.mail("")
        for address in (forged, expired, "SRS0=junk@example.test"):
            code, text = client.rcpt(address)
            assert (code, text) == (550, b"5.1.1 Invalid or expired SRS address"), address
        assert client.rcpt(srs().forward("erin@amx.test"))[0] == 250
    # smtpd and deliveryd share the test's log file.
    wait_for(lambda: "bad SRS hash (forged)" in ours.local.log(), what="the log line")
    assert "SRS address expired" in ours.local.log()


def test_config_check_names_a_missing_or_short_key(tmp_path: Path) -> None:
    from mailroom import cli

    key = tmp_path / "srs.key"
    data = config_data(tmp_path / "mail", free_port(), None, extra={"srs": {"key_file": str(key)}})
    config = tmp_path / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    assert cli.main(["config", "check", str(config)]) == 1  # missing
    key.write_bytes(b"short")
    assert cli.main(["config", "check", str(config)]) == 1
    key.write_bytes(KEY)
    assert cli.main(["config", "check", "-q", str(config)]) == 0
    data["srs"]["domain"] = "elsewhere.test"
    config.write_text(yaml.safe_dump(data))
    assert cli.main(["config", "check", str(config)]) == 1


def test_config_check_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mailroom import cli

    data = config_data(
        tmp_path / "mail", free_port(), None, extra={"srs": {"key_file": str(tmp_path / "none")}}
    )
    config = tmp_path / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    assert cli.main(["config", "check", str(config)]) == 1
    assert "srs.key_file: cannot read the SRS key" in capsys.readouterr().err
    del data["srs"]
    data["delivery"] = {
        "smarthost": {"host": "smarthost.test", "username": "u", "password_file": str(tmp_path / "pw")}
    }
    config.write_text(yaml.safe_dump(data))
    assert cli.main(["config", "check", str(config)]) == 1
    assert "delivery.smarthost.password_file: cannot read" in capsys.readouterr().err
