"""MTA-STS: real DNS (dnsmasq), a real HTTPS policy server with a test CA, a real remote smtpd."""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from mailroom.accounts import hash_password
from mailroom.queue.mtasts import Policy, PolicyError, parse_policy, parse_txt
from mailroom.queue.spool import Envelope, Spool
from tests.conftest import (
    DNSMASQ,
    PASSWORD,
    SALT_KEY,
    config_data,
    dnsmasq,
    free_port,
    maildir_messages,
    start_smtpd,
)
from tests.integration.test_delivery import Local, message, wait_for
from tests.integration.test_smarthost import make_ca

pytestmark = pytest.mark.skipif(DNSMASQ is None, reason="dnsmasq is not installed (apt-get install dnsmasq)")

POLICY_IP = "127.0.0.7"
POLICIES = {
    # domain: (mode, mx patterns); each MX is mx.<domain>
    "enforce.test": ("enforce", ["mx.enforce.test"]),
    "wild.test": ("enforce", ["*.wild.test"]),
    "testing.test": ("testing", ["other.testing.test"]),
    "badmx.test": ("enforce", ["*.elsewhere.test"]),
    "badcert.test": ("enforce", ["mx.badcert.test"]),
}
# The remote smtpd's certificate names these MX hosts, not mx.badcert.test (on 127.0.0.3).
CERTIFIED_MX = ["mx.enforce.test", "mx.wild.test", "mx.testing.test", "mx.badmx.test"]


def test_policy_parsing_and_matching() -> None:
    policy = parse_policy(
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\nmx: *.example.net\nmax_age: 86400\r\n"
    )
    assert policy == Policy("enforce", ("mail.example.com", "*.example.net"), 86400)
    assert policy.matches("MAIL.example.com.") and policy.matches("a.example.net")
    assert not policy.matches("a.b.example.net") and not policy.matches("example.net")
    assert (
        parse_policy("version: STSv1\nmode: enforce\nmx: x.test\nmax_age: 99999999999\n").max_age == 31557600
    )
    for bad in (
        "mode: enforce\nmx: x\nmax_age: 1",
        "version: STSv1\nmode: maybe\nmx: x\nmax_age: 1",
        "version: STSv1\nmode: enforce\nmax_age: 1",
        "version: STSv1\nmode: enforce\nmx: x\nmax_age: x",
    ):
        with pytest.raises(PolicyError):
            parse_policy(bad)
    assert parse_txt(["v=spf1 -all"]) is None
    assert parse_txt(["v=STSv1; id=20261127T1;"]) == "20261127T1"
    with pytest.raises(PolicyError):
        parse_txt(["v=STSv1; id=1", "v=STSv1; id=2"])
    with pytest.raises(PolicyError):
        parse_txt(["v=STSv1; id=not-alnum!"])


@dataclass
class PolicyServer:
    port: int
    ca: Path
    requests: list[str] = field(default_factory=list)  # Host headers, in order
    broken: bool = False


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pki")


@pytest.fixture(scope="module")
def policy_server(pki: Path) -> Iterator[PolicyServer]:
    ca, cert, key = make_ca(pki, [f"mta-sts.{d}" for d in POLICIES], name="mta-sts")
    server_state = PolicyServer(free_port(), ca)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host = self.headers.get("Host", "")
            server_state.requests.append(host)
            domain = host.removeprefix("mta-sts.")
            if server_state.broken or self.path != "/.well-known/mta-sts.txt" or domain not in POLICIES:
                self.send_error(500 if server_state.broken else 404)
                return
            mode, mx = POLICIES[domain]
            body = (
                f"version: STSv1\r\nmode: {mode}\r\n"
                + "".join(f"mx: {m}\r\n" for m in mx)
                + "max_age: 86400\r\n"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer((POLICY_IP, server_state.port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield server_state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def dns_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    records = []
    for domain in POLICIES:
        ip = "127.0.0.3" if domain == "badcert.test" else "127.0.0.2"
        records += [
            f"--mx-host={domain},mx.{domain},10",
            f"--host-record=mx.{domain},{ip}",
            f"--txt-record=_mta-sts.{domain},v=STSv1; id=20261127",
            f"--host-record=mta-sts.{domain},{POLICY_IP}",
        ]
    records += ["--mx-host=plain.test,mx.plain.test,10", "--host-record=mx.plain.test,127.0.0.3"]
    with dnsmasq(records, tmp_path_factory.mktemp("dns"), ("mx.enforce.test", "A")) as port:
        yield port


@dataclass
class Remote:
    port: int
    store: Path

    def messages(self, address: str) -> list[bytes]:
        return maildir_messages(self.store, address)


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[Remote]:
    folder = tmp_path_factory.mktemp("remote")
    _, cert, key = make_ca(pki, CERTIFIED_MX, name="mx")
    port = free_port()
    data = config_data(
        folder / "mail",
        port,
        (cert, key),
        listeners=[{"name": "mx", "address": f"127.0.0.{i}", "port": port} for i in (1, 2, 3)],
    )
    domains = [*POLICIES, "plain.test"]
    data["hostname"] = "mx.enforce.test"
    data["domains"] = domains
    data["users"] = [
        {
            "address": f"bob@{d}",
            "password_hash": hash_password(PASSWORD, address=f"bob@{d}", salt_key=SALT_KEY),
        }
        for d in domains
    ]
    config = folder / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    process = start_smtpd(config, port)
    yield Remote(port, folder / "mail")
    process.terminate()
    process.wait(10)


@pytest.fixture
def local_factory(
    tmp_path: Path, dns_port: int, remote: Remote, policy_server: PolicyServer
) -> Iterator[Callable[..., Local]]:
    made: list[Local] = []

    def make(**mta_sts: object) -> Local:
        folder = tmp_path / f"local{len(made)}"
        folder.mkdir()
        settings = {
            "resolver": {"address": "127.0.0.1", "port": dns_port},
            "remote_port": remote.port,
            "retry_schedule": [60],
            "scan_interval": 0.1,
            "connect_timeout": 2,
            "command_timeout": 5,
            "mta_sts": {
                "ca_file": str(policy_server.ca),
                "https_port": policy_server.port,
                "timeout": 5,
                **mta_sts,
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


def pending_error(local: Local, queue_id: str, rcpt: str) -> str:
    path = local.spool.incoming / f"{queue_id}.state"
    wait_for(path.exists, what="the deferral")
    state = local.state(queue_id)["recipients"][rcpt]
    assert state["status"] == "pending"
    return str(state["last_error"])


def test_enforce_delivers_over_verified_tls_and_caches_on_disk(
    remote: Remote, policy_server: PolicyServer, local_factory: Callable[..., Local]
) -> None:
    local = local_factory()
    local.spool.enqueue(
        Envelope("alice@example.test", ("bob@enforce.test", "bob@wild.test")), message("sts1")
    )
    local.start()
    wait_for(
        lambda: remote.messages("bob@enforce.test") and remote.messages("bob@wild.test"), what="delivery"
    )
    assert b"with ESMTPS" in remote.messages("bob@enforce.test")[0].split(b"\n\n")[0]
    assert "mta-sts.enforce.test" in policy_server.requests  # fetched with the Host (and SNI) of the name
    cache = local.spool.root / "mta-sts" / "enforce.test.json"
    assert cache.exists() and '"mode": "enforce"' in cache.read_text()
    fetches = policy_server.requests.count("mta-sts.enforce.test")

    # A restarted deliveryd uses the policy cached on disk while the TXT id is the same:
    # the policy server may be down meanwhile.
    local.stop()
    policy_server.broken = True
    try:
        local.spool.enqueue(Envelope("alice@example.test", ("bob@enforce.test",)), message("sts2"))
        local.start()
        try:
            wait_for(lambda: len(remote.messages("bob@enforce.test")) == 2, what="the second delivery")
        except AssertionError as exc:  # say why: a first attempt that failed retries only in 60 s
            states = [p.read_text() for p in local.spool.incoming.glob("*.state")]
            raise AssertionError(f"{exc}\nqueue: {states}\ndeliveryd log:\n{local.log()[-4000:]}") from None
        assert policy_server.requests.count("mta-sts.enforce.test") == fetches
    finally:
        policy_server.broken = False


def test_enforce_defers_when_no_mx_matches(remote: Remote, local_factory: Callable[..., Local]) -> None:
    local = local_factory()
    queue_id = local.spool.enqueue(Envelope("alice@example.test", ("bob@badmx.test",)), message("sts3"))
    local.start()
    error = pending_error(local, queue_id, "bob@badmx.test")
    assert "MTA-STS: no MX host of badmx.test matches its policy" in error
    assert local.state(queue_id)["recipients"]["bob@badmx.test"]["status_code"] == "4.7.5"
    assert remote.messages("bob@badmx.test") == []


def test_enforce_defers_on_an_unverified_certificate_without_plaintext(
    remote: Remote, local_factory: Callable[..., Local]
) -> None:
    local = local_factory()
    queue_id = local.spool.enqueue(Envelope("alice@example.test", ("bob@badcert.test",)), message("sts4"))
    local.start()
    error = pending_error(local, queue_id, "bob@badcert.test")
    assert error.startswith("MTA-STS: TLS handshake failed") and "certificate" in error
    assert "without STARTTLS" not in local.log()
    assert remote.messages("bob@badcert.test") == []


def test_testing_mode_delivers_but_logs(remote: Remote, local_factory: Callable[..., Local]) -> None:
    local = local_factory()
    local.spool.enqueue(Envelope("alice@example.test", ("bob@testing.test",)), message("sts5"))
    local.start()
    wait_for(lambda: remote.messages("bob@testing.test"), what="delivery despite the policy")
    assert "MTA-STS testing: MX mx.testing.test of testing.test not in the policy" in local.log()


def test_no_policy_and_disabled_stay_opportunistic(
    remote: Remote, policy_server: PolicyServer, local_factory: Callable[..., Local]
) -> None:
    # plain.test publishes no policy: its MX (with a certificate for other names) still gets the mail.
    local = local_factory()
    local.spool.enqueue(Envelope("alice@example.test", ("bob@plain.test",)), message("sts6"))
    local.start()
    wait_for(lambda: remote.messages("bob@plain.test"), what="opportunistic delivery")
    # With MTA-STS off, badcert.test is delivered like any other domain, and no policy is fetched.
    before = len(policy_server.requests)
    off = local_factory(enabled=False)
    off.spool.enqueue(Envelope("alice@example.test", ("bob@badcert.test",)), message("sts7"))
    off.start()
    wait_for(lambda: remote.messages("bob@badcert.test"), what="delivery without MTA-STS")
    assert len(policy_server.requests) == before
