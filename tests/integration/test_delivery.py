"""deliveryd against real DNS (dnsmasq on loopback) and real remote MTAs (Mailroom smtpd, scripted fakes)."""

from __future__ import annotations

import json
import shutil
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from mailroom.accounts import hash_password
from mailroom.queue.spool import Envelope, Spool
from tests.conftest import PASSWORD, SALT_KEY, config_data, free_port, maildir_messages, start_smtpd

DNSMASQ = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None)
pytestmark = pytest.mark.skipif(DNSMASQ is None, reason="dnsmasq is not installed (apt-get install dnsmasq)")

# The test zones. 127.0.0.9 never listens: the first MX of pref.test is down.
ZONES = [
    "--mx-host=remote.test,mx.remote.test,10",
    "--host-record=mx.remote.test,127.0.0.2",
    "--mx-host=pref.test,down.pref.test,10",
    "--mx-host=pref.test,up.pref.test,20",
    "--host-record=down.pref.test,127.0.0.9",
    "--host-record=up.pref.test,127.0.0.3",
    "--host-record=amx.test,127.0.0.2",  # no MX: the A record is the mail host
    "--dns-rr=null.test,15,000000",  # RFC 7505 null MX: "0 ."
    "--host-record=null.test,127.0.0.2",
    "--mx-host=fake.test,mx.fake.test,10",
    "--host-record=mx.fake.test,127.0.0.4",
    "--host-record=hang.test,127.0.0.5",
    "--txt-record=remote.test,v=spf1 -all",
]
REMOTE_USERS = ("carol@remote.test", "dave@pref.test", "erin@amx.test")


def wait_for(predicate: Callable[[], object], timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def dns_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    log = tmp_path_factory.mktemp("dns") / "dnsmasq.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(DNSMASQ),
                "--no-daemon",
                f"--port={port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--local=/test/",
                *ZONES,
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
            resolver.resolve("mx.remote.test", "A")
            return True
        except Exception:
            return False

    wait_for(answers, 10, f"dnsmasq to answer ({log.read_text() if log.exists() else ''})")
    yield port
    process.terminate()
    process.wait(10)


@dataclass
class Remote:
    """The Mailroom smtpd playing the remote MTAs on 127.0.0.1-3 at the test's remote port."""

    port: int
    store: Path
    process: subprocess.Popen

    def messages(self, address: str) -> list[bytes]:
        return maildir_messages(self.store, address)


@pytest.fixture
def remote(tmp_path: Path, tls_files: tuple[Path, Path]) -> Iterator[Remote]:
    port = free_port()
    folder = tmp_path / "remote"
    folder.mkdir()
    data = config_data(
        folder / "mail",
        port,
        tls_files,
        listeners=[{"name": "mx", "address": f"127.0.0.{i}", "port": port} for i in (1, 2, 3)],
        # One deliveryd sends everything from 127.0.0.1: the default of 60 new connections a
        # minute per address is not what these tests are about (test_sigkill_loses_nothing alone
        # makes 40 and more, and refused ones are retried).
        limits={"connection_rate_per_ip": 10_000},
    )
    data["hostname"] = "mx.remote.test"
    data["domains"] = ["remote.test", "pref.test", "amx.test"]
    data["users"] = [
        {"address": a, "password_hash": hash_password(PASSWORD, address=a, salt_key=SALT_KEY)}
        for a in REMOTE_USERS
    ]
    config = folder / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    server = Remote(port, folder / "mail", start_smtpd(config, port))
    yield server
    server.process.terminate()
    server.process.wait(10)


@dataclass
class Fake:
    """A scripted remote MTA: replies[n] is the RCPT reply of the n-th session (the last one repeats)."""

    rcpt_replies: list[str]
    hang: bool = False
    broken_tls: bool = False  # offers STARTTLS, then answers the handshake with garbage
    sessions: int = 0
    received: list[bytes] = field(default_factory=list)
    commands: list[bytes] = field(default_factory=list)


def start_fake(address: str, port: int, fake: Fake) -> socketserver.ThreadingTCPServer:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            if fake.hang:
                self.request.recv(1)  # accept, say nothing, wait for the client to give up
                return
            index = min(fake.sessions, len(fake.rcpt_replies) - 1)
            fake.sessions += 1
            self.wfile.write(b"220 fake ESMTP\r\n")
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                fake.commands.append(line)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    starttls = b"250-STARTTLS\r\n" if fake.broken_tls else b""
                    self.wfile.write(b"250-fake\r\n" + starttls + b"250 SIZE 1000000\r\n")
                elif line.upper().startswith(b"STARTTLS"):
                    self.wfile.write(b"220 go ahead\r\nthis is not TLS\r\n")
                    return
                elif verb == b"RCPT":
                    self.wfile.write(fake.rcpt_replies[index].encode() + b"\r\n")
                elif verb == b"DATA":
                    self.wfile.write(b"354 go ahead\r\n")
                    data = b""
                    while not data.endswith(b"\r\n.\r\n"):
                        chunk = self.rfile.readline()
                        if not chunk:
                            return
                        data += chunk
                    fake.received.append(data)
                    self.wfile.write(b"250 2.0.0 queued\r\n")
                elif verb == b"QUIT":
                    self.wfile.write(b"221 bye\r\n")
                    return
                else:
                    self.wfile.write(b"250 ok\r\n")

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    server = Server((address, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class Local:
    """Our side: the spool, the local store, and deliveryd."""

    config: Path
    store: Path
    spool: Spool
    process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.config.with_suffix(".log"), "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailroom.cli", "deliveryd", "--config", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)

    def log(self) -> str:
        return self.config.with_suffix(".log").read_text()

    def entries(self) -> list[str]:
        return self.spool.entries()

    def state(self, queue_id: str) -> dict:
        return json.loads((self.spool.incoming / f"{queue_id}.state").read_text())

    def messages(self, address: str) -> list[bytes]:
        return maildir_messages(self.store, address)


def make_local(tmp_path: Path, dns_port: int, remote_port: int, **delivery: object) -> Local:
    folder = tmp_path / "local"
    folder.mkdir()
    settings = {
        "resolver": {"address": "127.0.0.1", "port": dns_port},
        "remote_port": remote_port,
        "retry_schedule": [1],
        "scan_interval": 0.1,
        "connect_timeout": 2,
        "command_timeout": 5,
        **delivery,
    }
    data = config_data(
        folder / "mail",
        free_port(),
        None,
        extra={"queue": {"root": str(folder / "queue")}, "delivery": settings},
    )
    config = folder / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    spool = Spool(folder / "queue")
    spool.create()
    return Local(config, folder / "mail", spool)


@pytest.fixture
def local_factory(tmp_path: Path, dns_port: int) -> Iterator[Callable[..., Local]]:
    made: list[Local] = []

    def make(remote_port: int, **delivery: object) -> Local:
        local = make_local(tmp_path, dns_port, remote_port, **delivery)
        made.append(local)
        return local

    yield make
    for local in made:
        local.stop()


def message(subject: str, extra_headers: str = "") -> bytes:
    return (
        f"From: alice@example.test\r\nTo: someone\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@example.test>\r\n{extra_headers}\r\n"
        "Hello.\r\n.\r\n..two dots\r\n.leading dot\r\nlast line\r\n"
    ).encode()


def without_received(stored: bytes) -> bytes:
    """The Maildir file minus the Received header the remote smtpd added on top."""
    lines = stored.split(b"\n")
    assert lines[0].startswith(b"Received: ")
    i = 1
    while lines[i][:1] in (b"\t", b" "):
        i += 1
    return b"\n".join(lines[i:])


def test_delivers_byte_for_byte_over_starttls(remote: Remote, local_factory: Callable[..., Local]) -> None:
    local = local_factory(remote.port)
    body = message("plain")
    local.spool.enqueue(Envelope("alice@example.test", ("carol@remote.test",)), body)
    local.start()
    wait_for(lambda: remote.messages("carol@remote.test"), what="delivery to carol")
    stored = remote.messages("carol@remote.test")[0]
    assert without_received(stored) == body.replace(b"\r\n", b"\n")
    assert b"with ESMTPS" in stored.split(b"\n\n")[0]  # the hop went over STARTTLS
    # The .env goes first, then the .msg and the .state.
    wait_for(lambda: not list(local.spool.incoming.iterdir()), what="the entry to be removed")


def test_first_mx_down_second_gets_it(remote: Remote, local_factory: Callable[..., Local]) -> None:
    local = local_factory(remote.port)
    local.spool.enqueue(Envelope("alice@example.test", ("dave@pref.test",)), message("pref"))
    local.start()
    wait_for(lambda: remote.messages("dave@pref.test"), what="delivery via the second MX")
    assert "down.pref.test" in local.log()
    wait_for(lambda: not local.entries(), what="the entry to be removed")


def test_no_mx_falls_back_to_a(remote: Remote, local_factory: Callable[..., Local]) -> None:
    local = local_factory(remote.port)
    local.spool.enqueue(Envelope("alice@example.test", ("erin@amx.test",)), message("amx"))
    local.start()
    wait_for(lambda: remote.messages("erin@amx.test"), what="delivery to the A record")


def dsn_fields(dsn: bytes) -> dict[str, str]:
    part = dsn.split(b"Content-Type: message/delivery-status")[1].split(b"\n--")[0].decode()
    fields: dict[str, str] = {}
    for line in part.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            fields[name] = value
    return fields


def test_null_mx_bounces_without_attempts(remote: Remote, local_factory: Callable[..., Local]) -> None:
    local = local_factory(remote.port)
    local.spool.enqueue(Envelope("alice@example.test", ("nobody@null.test",)), message("null"))
    local.start()
    wait_for(lambda: local.messages("alice@example.test"), what="the bounce")
    fields = dsn_fields(local.messages("alice@example.test")[0])
    assert fields["Action"] == "failed"
    assert fields["Status"] == "5.1.10"
    assert "null MX" in fields["Diagnostic-Code"]
    assert remote.messages("nobody@null.test") == []
    assert "connect" not in local.log()


def test_450_deferred_then_delivered(tmp_path: Path, local_factory: Callable[..., Local]) -> None:
    port = free_port()
    fake = Fake(["450 4.2.0 try later", "250 2.1.5 ok"])
    server = start_fake("127.0.0.4", port, fake)
    try:
        local = local_factory(port, retry_schedule=[1])
        queue_id = local.spool.enqueue(Envelope("alice@example.test", ("x@fake.test",)), message("retry"))
        local.start()
        wait_for(lambda: fake.sessions >= 1 and (local.spool.incoming / f"{queue_id}.state").exists())
        state = local.state(queue_id)["recipients"]["x@fake.test"]
        assert state["status"] == "pending" and state["attempts"] == 1 and "450" in state["last_error"]
        wait_for(lambda: fake.received, what="the retry")
        assert fake.received[0].endswith(b"\r\n..\r\n...two dots\r\n..leading dot\r\nlast line\r\n.\r\n")
        wait_for(lambda: not local.entries(), what="the entry to be removed")
        assert local.messages("alice@example.test") == []  # no bounce for a delay
    finally:
        server.shutdown()
        server.server_close()


def test_550_bounces_to_local_sender(local_factory: Callable[..., Local]) -> None:
    port = free_port()
    fake = Fake(["550 5.1.1 no such user"])
    server = start_fake("127.0.0.4", port, fake)
    try:
        local = local_factory(port)
        original = message("rejected")
        local.spool.enqueue(Envelope("alice@example.test", ("x@fake.test",)), original)
        local.start()
        wait_for(lambda: local.messages("alice@example.test"), what="the bounce")
        dsn = local.messages("alice@example.test")[0]
        assert b"multipart/report; report-type=delivery-status" in dsn
        fields = dsn_fields(dsn)
        assert fields["Final-Recipient"] == "rfc822; x@fake.test"
        assert fields["Action"] == "failed"
        assert fields["Status"] == "5.1.1"
        assert fields["Remote-MTA"] == "dns; mx.fake.test [127.0.0.4]"
        assert "550 5.1.1 no such user" in fields["Diagnostic-Code"]
        headers_part = dsn.split(b"Content-Type: text/rfc822-headers\n")[1]
        assert b"\n\nFrom: alice@example.test\nTo: someone\n" in headers_part
        assert b"Message-ID: <rejected@example.test>" in dsn
        assert b"two dots" not in dsn  # headers only
        assert fake.received == []
        wait_for(lambda: not local.entries(), what="the entry to be removed")
    finally:
        server.shutdown()
        server.server_close()


def test_null_sender_is_never_bounced(local_factory: Callable[..., Local]) -> None:
    port = free_port()
    fake = Fake(["550 5.1.1 no such user"])
    server = start_fake("127.0.0.4", port, fake)
    try:
        local = local_factory(port)
        local.spool.enqueue(Envelope("", ("x@fake.test",)), message("nullsender"))
        local.start()
        wait_for(lambda: fake.sessions >= 1 and not local.entries(), what="the failure")
        assert "no bounce: null sender" in local.log()
        assert not any(local.store.rglob("new/*"))
        assert local.entries() == []
    finally:
        server.shutdown()
        server.server_close()


def test_mail_loop_fails_permanently(remote: Remote, local_factory: Callable[..., Local]) -> None:
    local = local_factory(remote.port)
    loop_headers = "".join(f"Received: from hop{i}.test by x; now\r\n" for i in range(31))
    local.spool.enqueue(Envelope("alice@example.test", ("carol@remote.test",)), message("loop", loop_headers))
    local.start()
    wait_for(lambda: local.messages("alice@example.test"), what="the bounce")
    assert dsn_fields(local.messages("alice@example.test")[0])["Status"] == "5.4.6"
    assert remote.messages("carol@remote.test") == []


def test_hanging_remote_does_not_block_others(remote: Remote, local_factory: Callable[..., Local]) -> None:
    fake = Fake([], hang=True)
    server = start_fake("127.0.0.5", remote.port, fake)
    try:
        local = local_factory(remote.port, command_timeout=8, retry_schedule=[60])
        hung = local.spool.enqueue(Envelope("alice@example.test", ("x@hang.test",)), message("hang"))
        local.spool.enqueue(Envelope("alice@example.test", ("carol@remote.test",)), message("meanwhile"))
        local.start()
        wait_for(lambda: remote.messages("carol@remote.test"), what="the other delivery")
        # Ordering, not a stopwatch: the other message went out while the hung session still
        # waited for its reply (its attempt ends, with a state file, only at the timeout).
        assert not (local.spool.incoming / f"{hung}.state").exists()
        wait_for((local.spool.incoming / f"{hung}.state").exists, 20, "the timeout")
        state = local.state(hung)["recipients"]["x@hang.test"]
        assert state["status"] == "pending" and "timeout" in state["last_error"]
    finally:
        server.shutdown()
        server.server_close()


def test_sigkill_loses_nothing(remote: Remote, local_factory: Callable[..., Local]) -> None:
    local = local_factory(remote.port, concurrency=3)
    count = 40
    for i in range(count):
        local.spool.enqueue(Envelope("alice@example.test", ("carol@remote.test",)), message(f"kill{i}"))
    local.start()
    wait_for(lambda: len(remote.messages("carol@remote.test")) >= 5, what="some deliveries")
    assert local.process is not None
    local.process.kill()
    local.process.wait(10)
    assert local.entries(), "everything was delivered before the kill; the test proves nothing"
    local.start()

    def drained() -> bool:
        return not local.entries() and not list(local.spool.incoming.glob("*.state"))

    try:
        wait_for(drained, 120, "the spool to drain")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- deliveryd\n{local.log()[-4000:]}") from None
    ids = [m.split(b"Message-ID: <")[1].split(b">")[0] for m in remote.messages("carol@remote.test")]
    assert {f"kill{i}@example.test".encode() for i in range(count)} <= set(ids)
    assert len(ids) - count <= 3  # at most the deliveries in flight at the kill are repeated
    # A kill inside a removal (the .env goes first) leaves the .msg of a delivered entry: swept
    # only after DEBRIS_AGE, since a .msg without .env may also be an enqueue in progress.
    debris = list(local.spool.incoming.iterdir())
    assert all(p.suffix == ".msg" for p in debris) and len(debris) <= 3, debris
    for path in debris:
        assert path.read_bytes().split(b"Message-ID: <")[1].split(b">")[0] in ids


def test_control_characters_never_reach_the_wire(local_factory: Callable[..., Local]) -> None:
    port = free_port()
    fake = Fake(["250 2.1.5 ok"])
    server = start_fake("127.0.0.4", port, fake)
    try:
        local = local_factory(port)
        evil = "x@fake.test>\r\nRCPT TO:<y@fake.test"
        local.spool.enqueue(Envelope("alice@example.test", ("ok@fake.test", evil)), message("evil"))
        local.start()
        wait_for(lambda: local.messages("alice@example.test"), what="the bounce for the bad address")
        assert dsn_fields(local.messages("alice@example.test")[0])["Status"] == "5.1.3"
        assert len(fake.received) == 1
        rcpts = [c for c in fake.commands if c.upper().startswith(b"RCPT")]
        assert rcpts == [b"RCPT TO:<ok@fake.test>\r\n"]
        assert all(c.count(b"\r") == 1 and b"\0" not in c for c in fake.commands)
    finally:
        server.shutdown()
        server.server_close()


def test_failed_starttls_falls_back_to_plaintext(local_factory: Callable[..., Local]) -> None:
    port = free_port()
    fake = Fake(["250 2.1.5 ok"], broken_tls=True)
    server = start_fake("127.0.0.4", port, fake)
    try:
        local = local_factory(port)
        local.spool.enqueue(Envelope("alice@example.test", ("ok@fake.test",)), message("tls"))
        local.start()
        wait_for(lambda: fake.received, what="the delivery without TLS")
        assert fake.sessions == 2
        assert any(c.startswith(b"MAIL FROM:<alice@example.test> SIZE=") for c in fake.commands)
        wait_for(lambda: not local.entries(), what="the entry to be removed")
    finally:
        server.shutdown()
        server.server_close()


def test_expiry_bounces_with_4_4_7(local_factory: Callable[..., Local]) -> None:
    port = free_port()
    fake = Fake(["451 4.3.0 try again later"])
    server = start_fake("127.0.0.4", port, fake)
    try:
        local = local_factory(port, retry_schedule=[0.5], max_age=2)
        local.start()
        # max_age counts from the enqueue: on a busy machine the start alone can take longer.
        wait_for(lambda: "deliveryd started" in local.log(), what="deliveryd to start")
        local.spool.enqueue(Envelope("alice@example.test", ("x@fake.test",)), message("expire"))
        wait_for(lambda: local.messages("alice@example.test"), what="the bounce after expiry")
        assert fake.sessions >= 2
        fields = dsn_fields(local.messages("alice@example.test")[0])
        assert fields["Action"] == "failed"
        assert fields["Status"] == "4.4.7"
        assert "451 4.3.0 try again later" in fields["Diagnostic-Code"]
        wait_for(lambda: not local.entries(), what="the entry to be removed")
    finally:
        server.shutdown()
        server.server_close()


def test_destination_concurrency_limits_sessions_per_mx_host(local_factory: Callable[..., Local]) -> None:
    """Ten messages for one MX host, 20 sessions allowed in all but 2 per host: never more than 2 at once."""
    port = free_port()
    lock = threading.Lock()
    now = [0]
    peak = [0]
    delivered: list[bytes] = []

    class Slow(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            with lock:
                now[0] += 1
                peak[0] = max(peak[0], now[0])
            try:
                self.wfile.write(b"220 slow ESMTP\r\n")
                while line := self.rfile.readline():
                    verb = line[:4].upper()
                    if verb == b"DATA":
                        self.wfile.write(b"354 go ahead\r\n")
                        data = b""
                        while not data.endswith(b"\r\n.\r\n") and (chunk := self.rfile.readline()):
                            data += chunk
                        time.sleep(0.3)  # the session stays open a while: others must wait for it
                        delivered.append(data)
                        self.wfile.write(b"250 2.0.0 ok\r\n")
                    elif verb == b"QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")
            finally:
                with lock:
                    now[0] -= 1

    server = socketserver.ThreadingTCPServer(("127.0.0.4", port), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        local = local_factory(port, concurrency=20, destination_concurrency=2)
        for i in range(10):
            local.spool.enqueue(Envelope("alice@example.test", ("x@fake.test",)), message(f"c{i}"))
        local.start()
        wait_for(lambda: len(delivered) == 10, 30, "all ten deliveries")
        assert peak[0] == 2  # the limit held, and was reached (the sessions did overlap)
        wait_for(lambda: not local.entries(), what="the entries to be removed")
    finally:
        server.shutdown()
        server.server_close()
