"""deliveryd through a smarthost: a second Mailroom smtpd's submission listeners, real AUTH, a test CA."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mailroom.accounts import hash_password
from mailroom.queue.spool import Envelope, Spool
from tests.conftest import DNSMASQ, SALT_KEY, config_data, dnsmasq, free_port, start_smtpd
from tests.integration.test_delivery import Local, message, wait_for

pytestmark = pytest.mark.skipif(DNSMASQ is None, reason="dnsmasq is not installed (apt-get install dnsmasq)")

RELAY_USER = "relay@smart.test"
RELAY_PASSWORD = "s3cret-smarthost-password"
SMARTHOST_IP = "127.0.0.6"


def make_ca(folder: Path, names: list[str], name: str = "leaf") -> tuple[Path, Path, Path]:
    """A test CA and one certificate it signed for names (DNS SANs): (ca.pem, cert.pem, key.pem)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca = folder / "ca.key", folder / "ca.pem"
    if not ca.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=Mailroom test CA", "-keyout", str(ca_key), "-out", str(ca)],
            check=True, capture_output=True,
        )  # fmt: skip
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
    subprocess.run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={names[0]}",
         "-keyout", str(key), "-out", str(csr)],
        check=True, capture_output=True,
    )  # fmt: skip
    ext = folder / f"{name}.ext"
    ext.write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return ca, cert, key


@dataclass
class Smarthost:
    submission: int
    submissions: int
    spool: Spool
    ca: Path


@pytest.fixture(scope="module")
def smarthost(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Smarthost]:
    folder = tmp_path_factory.mktemp("smarthost")
    ca, cert, key = make_ca(folder / "pki", ["smarthost.test"])
    probe, submission, submissions = free_port(), free_port(), free_port()
    data = config_data(
        folder / "mail",
        probe,
        (cert, key),
        listeners=[
            {"name": "mx", "address": "127.0.0.1", "port": probe},
            {"name": "submission", "address": SMARTHOST_IP, "port": submission},
            {"name": "submissions", "address": SMARTHOST_IP, "port": submissions},
        ],
        extra={"queue": {"root": str(folder / "queue")}},
    )
    data["hostname"] = "smarthost.test"
    data["domains"] = ["smart.test", "example.test"]
    data["users"] = [
        {
            "address": RELAY_USER,
            "password_hash": hash_password(RELAY_PASSWORD, address=RELAY_USER, salt_key=SALT_KEY),
        }
    ]
    # The relay account may send as alice@example.test (the mail our appliance hands over).
    data["aliases"] = [{"address": "alice@example.test", "to": [RELAY_USER]}]
    config = folder / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    process = start_smtpd(config, probe)
    yield Smarthost(submission, submissions, Spool(folder / "queue"), ca)
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def dns_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("dns")
    with dnsmasq([f"--host-record=smarthost.test,{SMARTHOST_IP}"], folder, ("smarthost.test", "A")) as port:
        yield port


@pytest.fixture
def local_factory(tmp_path: Path, dns_port: int, smarthost: Smarthost) -> Iterator[Callable[..., Local]]:
    made: list[Local] = []

    def make(password: str = RELAY_PASSWORD, **relay: object) -> Local:
        folder = tmp_path / f"local{len(made)}"
        folder.mkdir()
        secret = folder / "smarthost.password"
        secret.write_text(password + "\n")
        secret.chmod(0o640)
        settings = {
            "resolver": {"address": "127.0.0.1", "port": dns_port},
            "retry_schedule": [60],
            "scan_interval": 0.1,
            "connect_timeout": 2,
            "command_timeout": 5,
            "smarthost": {
                "host": "smarthost.test",
                "port": smarthost.submission,
                "username": RELAY_USER,
                "password_file": str(secret),
                "ca_file": str(smarthost.ca),
                **relay,
            },
        }
        data = config_data(
            folder / "mail",
            free_port(),
            None,
            extra={"queue": {"root": str(folder / "queue")}, "delivery": settings},
        )
        config = folder / "mailroom.yml"
        config.write_text(yaml.safe_dump(data))
        local = Local(config, folder / "mail", Spool(folder / "queue"))
        local.spool.create()
        made.append(local)
        return local

    yield make
    for local in made:
        local.stop()


def queued_at_smarthost(smarthost: Smarthost, subject: str) -> list[tuple[Envelope, bytes]]:
    found = []
    for queue_id in smarthost.spool.entries():
        envelope, data = smarthost.spool.read(queue_id)
        if f"Subject: {subject}\r\n".encode() in data:
            found.append((envelope, data))
    return found


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_delivers_through_the_smarthost_with_auth(
    mode: str, smarthost: Smarthost, local_factory: Callable[..., Local]
) -> None:
    port = smarthost.submission if mode == "starttls" else smarthost.submissions
    local = local_factory(port=port, tls=mode)
    subject = f"via-{mode}"
    local.spool.enqueue(Envelope("alice@example.test", ("carol@remote.test",)), message(subject))
    local.start()
    wait_for(lambda: queued_at_smarthost(smarthost, subject), what="the message at the smarthost")
    [(envelope, data)] = queued_at_smarthost(smarthost, subject)
    assert envelope.sender == "alice@example.test"
    assert envelope.recipients == ("carol@remote.test",)
    assert envelope.authenticated_as == RELAY_USER
    assert b" with ESMTPSA id " in data.split(b"\r\n\r\n")[0]  # over TLS, logged in
    wait_for(lambda: not local.entries(), what="the entry to be removed")
    assert "via smarthost.test [127.0.0.6]" in local.log()
    assert RELAY_PASSWORD not in local.log()


def test_wrong_password_defers_and_is_never_logged(
    smarthost: Smarthost, local_factory: Callable[..., Local]
) -> None:
    local = local_factory(password="not-the-password-at-all")
    queue_id = local.spool.enqueue(Envelope("alice@example.test", ("carol@remote.test",)), message("badauth"))
    local.start()
    wait_for((local.spool.incoming / f"{queue_id}.state").exists, what="the deferral")
    state = local.state(queue_id)["recipients"]["carol@remote.test"]
    assert (
        state["status"] == "pending"
        and "authentication as 'relay@smart.test' refused: 535" in state["last_error"]
    )
    assert queued_at_smarthost(smarthost, "badauth") == []
    assert "not-the-password-at-all" not in local.log()
    assert "not-the-password-at-all" not in (local.spool.incoming / f"{queue_id}.state").read_text()


def test_unverified_certificate_defers_without_plaintext(
    tmp_path: Path, smarthost: Smarthost, local_factory: Callable[..., Local]
) -> None:
    other_ca, _, _ = make_ca(tmp_path / "other-pki", ["elsewhere.test"])
    local = local_factory(ca_file=str(other_ca))
    queue_id = local.spool.enqueue(
        Envelope("alice@example.test", ("carol@remote.test",)), message("untrusted")
    )
    local.start()
    wait_for((local.spool.incoming / f"{queue_id}.state").exists, what="the deferral")
    state = local.state(queue_id)["recipients"]["carol@remote.test"]
    assert state["status"] == "pending" and "certificate verify failed" in state["last_error"]
    assert "trying again without STARTTLS" not in local.log()
    assert queued_at_smarthost(smarthost, "untrusted") == []


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    from mailroom.config import ConfigError, parse

    base = config_data(tmp_path / "mail", 2525, None, extra={"queue": {"root": str(tmp_path / "q")}})
    for smarthost, key in (
        ({"host": "bad host!"}, "delivery.smarthost.host"),
        ({"host": "smarthost.test", "username": "x"}, "delivery.smarthost.password_file"),
        ({"host": "smarthost.test", "tls": "maybe"}, "delivery.smarthost.tls"),
        ({"host": "smarthost.test", "password": "inline"}, "delivery.smarthost.password"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            parse({**base, "delivery": {"smarthost": smarthost}})
    assert parse(
        {**base, "delivery": {"smarthost": {"host": "smarthost.test", "port": 465}}}
    ).delivery.smarthost
    implicit = parse({**base, "delivery": {"smarthost": {"host": "smarthost.test", "port": 465}}})
    assert implicit.delivery.smarthost is not None and implicit.delivery.smarthost.tls == "implicit"
