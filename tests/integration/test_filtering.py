"""Inbound filtering on the mx listener against real engines on loopback.

dnsmasq serves the SPF, DKIM, DMARC and DNSBL records; rspamd (with redis for Bayes) and
clamd run as private foreground processes with their own configuration; smtpd gets mail
from smtplib, from 127.0.0.1 or from other loopback addresses that the DNSBL lists.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import dkim
import pytest
import yaml

from mailroom import config as mailroom_config
from mailroom.filtering import learn_ham, learn_spam
from tests.conftest import Smtpd, config_data, free_port, start_smtpd

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
RSPAMD = shutil.which("rspamd") or "/usr/bin/rspamd"
CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"
REDIS = shutil.which("redis-server") or "/usr/bin/redis-server"
MISSING = [p for p in (DNSMASQ, RSPAMD, CLAMD, REDIS) if not Path(p).exists()]
pytestmark = pytest.mark.skipif(
    bool(MISSING),
    reason=f"not installed: {MISSING} (apt-get install dnsmasq rspamd clamav-daemon redis-server)",
)

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
HOST = "mail.example.test"
SELECTOR = "mr2026"


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


# ---------------------------------------------------------------------------------- DNS


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, str]:
    """(private key PEM, public key base64) for signed.test."""
    folder = tmp_path_factory.mktemp("dkim")
    private = folder / "dkim.key"
    subprocess.run(["openssl", "genrsa", "-out", str(private), "2048"], check=True, capture_output=True)
    der = subprocess.run(
        ["openssl", "rsa", "-in", str(private), "-pubout", "-outform", "DER"], check=True, capture_output=True
    ).stdout
    return private.read_bytes(), base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def dns_port(tmp_path_factory: pytest.TempPathFactory, dkim_key: tuple[bytes, str]) -> Iterator[int]:
    public = dkim_key[1]
    key_record = f"v=DKIM1; k=rsa; p={public}"
    # A TXT string holds at most 255 octets: dnsmasq takes the pieces comma-separated.
    pieces = ",".join(key_record[i : i + 200] for i in range(0, len(key_record), 200))
    zones = [
        # SPF: good.test sends from loopback; bank.test, quar.test and spoofed.test never do.
        "--txt-record=good.test,v=spf1 ip4:127.0.0.0/8 -all",
        "--txt-record=bank.test,v=spf1 ip4:192.0.2.1 -all",
        "--txt-record=_dmarc.bank.test,v=DMARC1; p=reject",
        "--txt-record=quar.test,v=spf1 ip4:192.0.2.1 -all",
        "--txt-record=_dmarc.quar.test,v=DMARC1; p=quarantine",
        "--txt-record=spoofed.test,v=spf1 ip4:192.0.2.1 -all",
        # signed.test: no SPF at all, a strict DMARC policy, passes through its DKIM signature.
        f"--txt-record={SELECTOR}._domainkey.signed.test,{pieces}",
        "--txt-record=_dmarc.signed.test,v=DMARC1; p=reject; adkim=s",
        # DNSBL: 127.0.0.2 is listed in bl.test (reject), 127.0.0.3 in junkbl.test (junk).
        "--host-record=2.0.0.127.bl.test,127.0.0.2",
        "--host-record=3.0.0.127.junkbl.test,127.0.0.4",
    ]
    log = tmp_path_factory.mktemp("dns") / "dnsmasq.log"
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                DNSMASQ,
                # Not --no-daemon: in that mode dnsmasq serves TCP in its one process, and
                # rspamd's idle TCP connections would stop it answering anything else.
                "--keep-in-foreground",
                "--log-facility=-",
                f"--port={port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--local=/test/",
                *zones,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.lifetime = 0.5

    def answers() -> bool:
        try:
            resolver.resolve("good.test", "TXT")
            return True
        except Exception:
            return False

    wait_for(answers, 10, "dnsmasq")
    yield port
    stop(process)


# ---------------------------------------------------------------------------------- engines


def private_dir(prefix: str) -> Path:
    """A directory the engines' own users can read (pytest's tmp dirs are root-only)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@dataclass
class Rspamd:
    port: int
    controller_port: int
    root: Path


RSPAMD_LUA = """
local reconf = config['regexp']
reconf['MAILROOM_TEST_JUNK'] = {
  re = 'Subject=/mailroom-test-junk/H', score = 8.0, description = 'test: junk-level score'
}
reconf['MAILROOM_TEST_REJECT'] = {
  re = 'Subject=/mailroom-test-reject/H', score = 40.0, description = 'test: reject-level score'
}
"""


@pytest.fixture(scope="module")
def rspamd(dns_port: int) -> Iterator[Rspamd]:
    root = private_dir("mailroom-rspamd-")
    redis_port = free_port()
    redis = subprocess.Popen(
        [REDIS, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=root,
    )
    port, controller, proxy = free_port(), free_port(), free_port()
    local = root / "local"
    for sub in ("local.d", "override.d"):
        (local / sub).mkdir(parents=True)
    (local / "override.d" / "worker-normal.inc").write_text(
        f'bind_socket = "127.0.0.1:{port}";\ncount = 1;\n'
    )
    (local / "override.d" / "worker-controller.inc").write_text(
        f'bind_socket = "127.0.0.1:{controller}";\ncount = 1;\n'
    )
    (local / "override.d" / "worker-proxy.inc").write_text(
        f'bind_socket = "127.0.0.1:{proxy}";\nmilter = no;\n'
    )
    (local / "local.d" / "options.inc").write_text(
        f'dns {{ nameserver = ["127.0.0.1:{dns_port}"]; timeout = 1s; retransmits = 1; }}\n'
    )
    (local / "local.d" / "redis.conf").write_text(f'servers = "127.0.0.1:{redis_port}";\n')
    (local / "local.d" / "greylist.conf").write_text("enabled = false;\n")
    (local / "local.d" / "logging.inc").write_text(f'type = "file";\nfilename = "{root}/rspamd.log";\n')
    (local / "rspamd.local.lua").write_text(RSPAMD_LUA)
    for sub in ("db", "run"):
        (root / sub).mkdir()
    command = [RSPAMD, "-f", "-c", "/etc/rspamd/rspamd.conf"]
    if os.geteuid() == 0:
        command += ["-u", "_rspamd", "-g", "_rspamd"]
        owner = pwd.getpwnam("_rspamd")
        for path in (root, root / "db", root / "run"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    command += [f"--var=LOCAL_CONFDIR={local}", f"--var=DBDIR={root / 'db'}", f"--var=RUNDIR={root / 'run'}"]
    command += [f"--var=LOGDIR={root}"]
    with open(root / "stdout.log", "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def pong() -> bool:
        assert process.poll() is None, (root / "stdout.log").read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
                return b"pong" in sock.recv(4096)
        except OSError:
            return False

    # The first start compiles the TLD list into DBDIR (about 15 s).
    wait_for(pong, 90, "rspamd")
    yield Rspamd(port, controller, root)
    stop(process)
    stop(redis)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def clamd_socket() -> Iterator[Path]:
    root = private_dir("mailroom-clamd-")
    (root / "db").mkdir()
    # A hand-written signature (no download possible): the hex of the EICAR test string.
    (root / "db" / "mailroom-test.ndb").write_text(f"Mailroom-Test-EICAR:0:*:{EICAR.hex()}\n")
    socket = root / "clamd.sock"
    conf = root / "clamd.conf"
    conf.write_text(
        f"Foreground yes\nLocalSocket {socket}\nDatabaseDirectory {root / 'db'}\n"
        f"LogFile {root / 'clamd.log'}\nStreamMaxLength 10M\n" + ("User root\n" if os.geteuid() == 0 else "")
    )
    with open(root / "stdout.log", "wb") as out:
        process = subprocess.Popen(
            [CLAMD, "--foreground", "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT
        )

    def ready() -> bool:
        assert process.poll() is None, (root / "stdout.log").read_text()
        return socket.exists()

    wait_for(ready, 60, "clamd")
    yield socket
    stop(process)
    shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------------- smtpd


def filtering(dns_port: int, **overrides: object) -> dict:
    settings: dict = {
        "resolver": {"address": "127.0.0.1", "port": dns_port},
        "dns_timeout": 2,
        "dnsbl": [{"zone": "bl.test", "action": "reject"}, {"zone": "junkbl.test", "action": "junk"}],
        "sender_lists": {"bob@example.test": {"allow": ["good.test"], "block": ["blocked.test"]}},
    }
    settings.update(overrides)
    return settings


def start(tmp_path: Path, name: str, settings: dict) -> Smtpd:
    folder = tmp_path / name
    folder.mkdir()
    port = free_port()
    data = config_data(folder / "mail", port, None)
    data["filtering"] = settings
    config = folder / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    mailroom_config.load(config)  # fails here, naming the key, if the test wrote a bad one
    return Smtpd(port, folder / "mail", config, start_smtpd(config, port))


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, dns_port: int, rspamd: Rspamd, clamd_socket: Path
) -> Iterator[Smtpd]:
    settings = filtering(
        dns_port,
        rspamd={
            "enabled": True,
            "port": rspamd.port,
            "controller_port": rspamd.controller_port,
            "timeout": 20,
            "on_failure": "tempfail",
        },
        clamav={"enabled": True, "socket": str(clamd_socket), "on_failure": "tempfail"},
    )
    smtpd = start(tmp_path_factory.mktemp("filtering"), "full", settings)
    yield smtpd
    stop(smtpd.process)


def message(
    sender: str, to: str = "alice@example.test", subject: str = "Quarterly figures", body: str = ""
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = f"<{uuid.uuid4()}@{sender.rpartition('@')[2]}>"
    msg.set_content(body or "Hello,\n\nthe figures are attached as agreed on the phone.\n\nRegards\n")
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def send(
    smtpd: Smtpd,
    data: bytes,
    sender: str,
    recipients: tuple[str, ...] = ("alice@example.test",),
    source: str = "127.0.0.1",
) -> tuple[list[tuple[int, bytes]], tuple[int, bytes] | None]:
    """(RCPT replies, DATA reply or None when no recipient was accepted)."""
    with smtplib.SMTP("127.0.0.1", smtpd.port, timeout=60, source_address=(source, 0)) as client:
        client.ehlo("client.good.test")
        code, text = client.mail(sender)
        assert code == 250, text
        rcpt = [client.rcpt(r) for r in recipients]
        if not any(code == 250 for code, _ in rcpt):
            return rcpt, None
        return rcpt, client.data(data)


def junk(smtpd: Smtpd, address: str) -> list[bytes]:
    folder = smtpd.maildir(address) / ".Junk" / "new"
    return [p.read_bytes() for p in sorted(folder.iterdir())] if folder.is_dir() else []


def headers_named(stored: bytes, name: str) -> list[str]:
    head = stored.split(b"\n\n", 1)[0].decode()
    unfolded = head.replace("\n\t", " ").replace("\n ", " ")
    return [
        line.split(":", 1)[1].strip()
        for line in unfolded.split("\n")
        if line.lower().startswith(name.lower() + ":")
    ]


def delivered(smtpd: Smtpd, address: str, marker: str) -> bytes:
    found = [m for m in smtpd.messages(address) if marker.encode() in m]
    assert len(found) == 1, f"{marker} in INBOX: {len(found)}"
    return found[0]


# ---------------------------------------------------------------------------------- tests


def test_valid_dkim_signature_passes_dmarc(server: Smtpd, dkim_key: tuple[bytes, str]) -> None:
    data = message("ceo@signed.test", subject="signed-ok")
    signature = dkim.sign(
        data,
        SELECTOR.encode(),
        b"signed.test",
        dkim_key[0],
        include_headers=[b"from", b"to", b"subject", b"date"],
    )
    _, reply = send(server, signature + data, "ceo@signed.test")
    assert reply is not None and reply[0] == 250, reply
    stored = delivered(server, "alice@example.test", "signed-ok")
    results = headers_named(stored, "Authentication-Results")
    assert len(results) == 1
    assert results[0].startswith(f"{HOST};")
    assert f"dkim=pass header.d=signed.test header.s={SELECTOR}" in results[0]
    assert "spf=none" in results[0]
    assert "dmarc=pass (p=reject dis=none) header.from=signed.test" in results[0]


def test_tampered_dkim_signature_fails_and_dmarc_rejects(server: Smtpd, dkim_key: tuple[bytes, str]) -> None:
    data = message("ceo@signed.test", subject="signed-tampered")
    signature = dkim.sign(data, SELECTOR.encode(), b"signed.test", dkim_key[0])
    tampered = data.replace(b"as agreed", b"as NOT agreed")
    _, reply = send(server, signature + tampered, "ceo@signed.test")
    assert reply is not None and reply[0] == 550 and b"5.7.1" in reply[1], reply
    assert not [m for m in server.messages("alice@example.test") if b"signed-tampered" in m]


def test_dmarc_reject_policy_refuses_at_end_of_data(server: Smtpd) -> None:
    _, reply = send(server, message("payments@bank.test", subject="dmarc-reject"), "payments@bank.test")
    assert reply is not None and reply[0] == 550 and reply[1].startswith(b"5.7.1"), reply
    assert not [m for m in server.messages("alice@example.test") if b"dmarc-reject" in m]


def test_dmarc_quarantine_goes_to_junk(server: Smtpd) -> None:
    _, reply = send(server, message("news@quar.test", subject="dmarc-quarantine"), "news@quar.test")
    assert reply is not None and reply[0] == 250, reply
    assert not [m for m in server.messages("alice@example.test") if b"dmarc-quarantine" in m]
    stored = [m for m in junk(server, "alice@example.test") if b"dmarc-quarantine" in m]
    assert len(stored) == 1
    assert "dmarc=fail (p=quarantine dis=quarantine)" in headers_named(stored[0], "Authentication-Results")[0]
    assert headers_named(stored[0], "X-Spam-Flag") == ["YES"]


def test_forged_envelope_sender_is_spf_fail(server: Smtpd) -> None:
    # spoofed.test allows only 192.0.2.1 and publishes no DMARC policy: recorded, not refused.
    _, reply = send(server, message("someone@spoofed.test", subject="spf-forged"), "someone@spoofed.test")
    assert reply is not None and reply[0] == 250, reply
    stored = delivered(server, "alice@example.test", "spf-forged")
    results = headers_named(stored, "Authentication-Results")[0]
    assert "spf=fail" in results and "smtp.mailfrom=someone@spoofed.test" in results
    assert "dmarc=none" in results


def test_forged_authentication_results_are_removed(server: Smtpd) -> None:
    data = message("someone@good.test", subject="forged-ar")
    forged = (
        f"Authentication-Results: {HOST.upper()}; dkim=pass header.d=bank.test;\r\n\tdmarc=pass\r\n"
        "Authentication-Results: mx.elsewhere.test; spf=pass smtp.mailfrom=good.test\r\n"
        "X-Spam-Flag: NO\r\nX-Virus-Status: clean\r\n"
    ).encode()
    _, reply = send(server, forged + data, "someone@good.test")
    assert reply is not None and reply[0] == 250, reply
    stored = delivered(server, "alice@example.test", "forged-ar")
    results = headers_named(stored, "Authentication-Results")
    ours = [r for r in results if r.lower().startswith(HOST + ";")]
    assert len(ours) == 1 and "header.d=bank.test" not in ours[0]
    assert "spf=pass (good.test: sender is authorized) smtp.mailfrom=someone@good.test" in ours[0]
    assert any(r.startswith("mx.elsewhere.test;") for r in results)  # another host's header stays
    assert headers_named(stored, "X-Spam-Flag") == []
    assert headers_named(stored, "X-Virus-Status") == ["clean"]  # ours, not the forged one
    assert stored.count(b"X-Virus-Status") == 1


def test_dnsbl_listed_client_is_refused_at_rcpt(server: Smtpd) -> None:
    rcpt, reply = send(server, message("x@good.test"), "x@good.test", source="127.0.0.2")
    assert reply is None
    assert rcpt[0][0] == 554 and rcpt[0][1].startswith(b"5.7.1"), rcpt


def test_dnsbl_junk_list_sends_to_junk(server: Smtpd) -> None:
    _, reply = send(server, message("x@good.test", subject="dnsbl-junk"), "x@good.test", source="127.0.0.3")
    assert reply is not None and reply[0] == 250, reply
    stored = [m for m in junk(server, "alice@example.test") if b"dnsbl-junk" in m]
    assert len(stored) == 1
    assert headers_named(stored[0], "X-Spam-DNSBL") == ["junkbl.test=127.0.0.4"]


def test_eicar_is_refused_with_554(server: Smtpd) -> None:
    data = message("x@good.test", subject="virus", body="see below\n" + EICAR.decode() + "\n")
    _, reply = send(server, data, "x@good.test")
    assert reply is not None and reply[0] == 554 and reply[1].startswith(b"5.7.1"), reply
    assert not [m for m in server.messages("alice@example.test") if b"EICAR" in m]


def test_clean_message_is_tagged_by_both_engines(server: Smtpd) -> None:
    _, reply = send(server, message("x@good.test", subject="clean-one"), "x@good.test")
    assert reply is not None and reply[0] == 250, reply
    stored = delivered(server, "alice@example.test", "clean-one")
    assert headers_named(stored, "X-Virus-Status") == ["clean"]
    status = headers_named(stored, "X-Spam-Status")
    assert len(status) == 1 and status[0].startswith("No, score=")
    assert float(headers_named(stored, "X-Spam-Score")[0]) < 6


def test_rspamd_junk_score_goes_to_junk(server: Smtpd) -> None:
    _, reply = send(server, message("x@good.test", subject="mailroom-test-junk"), "x@good.test")
    assert reply is not None and reply[0] == 250, reply
    assert not [m for m in server.messages("alice@example.test") if b"mailroom-test-junk" in m]
    stored = [m for m in junk(server, "alice@example.test") if b"mailroom-test-junk" in m]
    assert len(stored) == 1
    assert headers_named(stored[0], "X-Spam-Status")[0].startswith("Yes, score=")
    # The Junk folder is the one IMAP shows as \Junk (Maildir++ .Junk, made with the others).
    assert (server.maildir("alice@example.test") / ".Sent" / "cur").is_dir()


def test_rspamd_reject_score_is_refused(server: Smtpd) -> None:
    _, reply = send(server, message("x@spoofed.test", subject="mailroom-test-reject"), "x@spoofed.test")
    assert reply is not None and reply[0] == 550 and reply[1].startswith(b"5.7.1"), reply


def test_allow_list_of_an_authenticated_sender_keeps_the_inbox(server: Smtpd) -> None:
    # bob allows good.test; the envelope sender passes SPF, so the junk-level score is overridden
    # for bob only: alice, who allows nothing, gets the copy in her Junk folder.
    recipients = ("alice@example.test", "bob@example.test")
    subject = "mailroom-test-junk allowed"
    _, reply = send(server, message("friend@good.test", subject=subject), "friend@good.test", recipients)
    assert reply is not None and reply[0] == 250, reply
    assert [m for m in server.messages("bob@example.test") if subject.encode() in m]
    assert [m for m in junk(server, "alice@example.test") if subject.encode() in m]


def test_block_list_refuses_the_sender_for_that_user_only(server: Smtpd) -> None:
    rcpt, reply = send(
        server,
        message("spam@blocked.test", subject="blocked"),
        "spam@blocked.test",
        ("bob@example.test", "alice@example.test"),
    )
    assert rcpt[0][0] == 550 and rcpt[0][1].startswith(b"5.7.1"), rcpt
    assert rcpt[1][0] == 250
    assert reply is not None and reply[0] == 250


def learned(rspamd: Rspamd) -> int:
    """How many learn requests rspamd carried out (controller /stat)."""
    with socket.create_connection(("127.0.0.1", rspamd.controller_port), timeout=10) as sock:
        sock.sendall(b"GET /stat HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(json.loads(answer.split(b"\r\n\r\n", 1)[1])["learned"])


def test_learning_against_real_rspamd(server: Smtpd, rspamd: Rspamd) -> None:
    config = mailroom_config.load(server.config)
    words = " ".join(f"word{i} offer{i} cheap{i}" for i in range(40))
    data = message("x@good.test", subject="learn me", body=f"Buy now: {words}\n")
    before = learned(rspamd)
    assert asyncio.run(learn_spam(config, data)) == "learned"
    assert learned(rspamd) == before + 1
    # The same message again is no error (rspamd may say it knows it already).
    assert asyncio.run(learn_spam(config, data)) in ("learned", "already-learned")
    middle = learned(rspamd)
    assert asyncio.run(learn_ham(config, data)) == "learned"  # moved out of Junk: relearned as ham
    assert learned(rspamd) == middle + 1
    disabled = mailroom_config.parse(
        {**yaml.safe_load(server.config.read_text()), "filtering": {"rspamd": {"enabled": False}}}
    )
    assert asyncio.run(learn_spam(disabled, data)) == "disabled"


@pytest.mark.parametrize("mode", ["accept", "tempfail"])
def test_engines_down(tmp_path: Path, dns_port: int, mode: str) -> None:
    dead_port = free_port()  # nothing listens there
    settings = filtering(
        dns_port,
        rspamd={
            "enabled": True,
            "port": dead_port,
            "controller_port": dead_port,
            "timeout": 2,
            "on_failure": mode,
        },
        clamav={"enabled": True, "socket": str(tmp_path / "no-clamd.sock"), "timeout": 2, "on_failure": mode},
    )
    smtpd = start(tmp_path, mode, settings)
    try:
        _, reply = send(smtpd, message("x@good.test", subject="engines-down"), "x@good.test")
        if mode == "tempfail":
            assert reply is not None and reply[0] == 451 and reply[1].startswith(b"4.7.1"), reply
            assert smtpd.messages("alice@example.test") == []
        else:
            assert reply is not None and reply[0] == 250, reply
            stored = delivered(smtpd, "alice@example.test", "engines-down")
            assert headers_named(stored, "X-Spam-Status") == ["unchecked (scanner unavailable)"]
            assert headers_named(stored, "X-Virus-Status") == ["unchecked (scanner unavailable)"]
    finally:
        stop(smtpd.process)


def test_greylisting_shared_by_workers_and_kept_across_restarts(tmp_path: Path, dns_port: int) -> None:
    settings = filtering(
        dns_port, greylisting={"enabled": True, "delay": 1, "path": str(tmp_path / "grey.table")}
    )
    smtpd = start(tmp_path, "grey", settings)
    try:
        rcpt, _ = send(smtpd, message("x@good.test"), "x@good.test")
        assert rcpt[0][0] == 451 and rcpt[0][1].startswith(b"4.7.1"), rcpt
        rcpt, _ = send(smtpd, message("x@good.test"), "x@good.test")  # too early, whichever worker
        assert rcpt[0][0] == 451, rcpt
        time.sleep(1.2)
        stop(smtpd.process)
        smtpd.start()  # the table is a file: a restart forgets nothing
        for _ in range(4):  # two workers: each answers from the same table
            rcpt, reply = send(smtpd, message("x@good.test", subject="grey-ok"), "x@good.test")
            assert rcpt[0][0] == 250 and reply is not None and reply[0] == 250, (rcpt, reply)
        # Another sender is a new triplet.
        rcpt, _ = send(smtpd, message("y@good.test"), "y@good.test")
        assert rcpt[0][0] == 451
    finally:
        stop(smtpd.process)
