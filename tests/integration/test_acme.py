"""ACME against a real CA (pebble) with real DNS (dnsmasq): issue, serve, renew, reload in place.

pebble validates HTTP-01 by asking dnsmasq for the names (all 127.0.0.1) and fetching the token
from webd's port-80 listener, which here is a loopback port (pebble's httpPort). The daemons run
as in production (smtpd with two pre-fork workers); a renewal reaches them by SIGHUP and must
show on new connections while an open TLS connection stays up and no listener restarts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from tests.conftest import config_data, free_port, start_daemon

PEBBLE = shutil.which("pebble")
DNSMASQ = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None)
pytestmark = pytest.mark.skipif(
    PEBBLE is None or DNSMASQ is None, reason="needs pebble and dnsmasq (apt-get install pebble dnsmasq)"
)
# The host name, then mta-sts. and autoconfig. of each domain (config_data has two domains).
NAMES = (
    "mail.example.test",
    "mta-sts.example.test",
    "autoconfig.example.test",
    "mta-sts.example.org",
    "autoconfig.example.org",
)


def wait_for(predicate: Callable[[], object], timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@dataclass
class Pebble:
    directory: str
    ca_bundle: Path  # pebble's own API certificate
    management: int

    def issuing_roots(self) -> str:
        """The roots pebble signs with (made fresh at each start), from its management API."""
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        with urllib.request.urlopen(f"https://127.0.0.1:{self.management}/roots/0", context=context) as r:
            return r.read().decode()


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
                "--local=/example.org/",
                *(f"--host-record={name},127.0.0.1" for name in NAMES),
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
            resolver.resolve(NAMES[0], "A")
            return True
        except Exception:
            return False

    wait_for(answers, 10, "dnsmasq to answer")
    yield port
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def http_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory, dns_port: int, http_port: int) -> Iterator[Pebble]:
    folder = tmp_path_factory.mktemp("pebble")
    cert, key = folder / "pebble.crt", folder / "pebble.key"
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=pebble", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    api, management = free_port(), free_port()
    (folder / "pebble.json").write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{api}",
                    "managementListenAddress": f"127.0.0.1:{management}",
                    "certificate": str(cert),
                    "privateKey": str(key),
                    "httpPort": http_port,
                    "tlsPort": free_port(),
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    with open(folder / "pebble.log", "wb") as out:
        process = subprocess.Popen(
            [str(PEBBLE), "-config", str(folder / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns_port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", api), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(listening, 15, "pebble to listen")
    yield Pebble(f"https://127.0.0.1:{api}/dir", cert, management)
    process.terminate()
    process.wait(10)


@dataclass
class Host:
    config: Path
    cert: Path
    ports: dict[str, int]
    daemons: dict[str, subprocess.Popen]

    def renew(self, *extra: str) -> subprocess.CompletedProcess:
        pids = " ".join(str(p.pid) for p in self.daemons.values())
        # The test's processes are not under supervisor: the reload command signals them directly.
        env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")}
        command = [sys.executable, "-m", "mailroom.cli", "cert", "renew", "--config", str(self.config)]
        return subprocess.run(
            [*command, "--reload-command", f"kill -HUP {pids}", *extra],
            check=False,  # the tests look at the exit code and the output
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
        )


@pytest.fixture(scope="module")
def host(
    tmp_path_factory: pytest.TempPathFactory, pebble: Pebble, http_port: int, tls_files: tuple[Path, Path]
) -> Iterator[Host]:
    folder = tmp_path_factory.mktemp("host")
    tls_dir = folder / "tls"
    tls_dir.mkdir()
    # The placeholder the role makes before the first renewal: self-signed.
    cert, key = tls_dir / "mail.crt", tls_dir / "mail.key"
    shutil.copy(tls_files[0], cert)
    shutil.copy(tls_files[1], key)
    ports = {name: free_port() for name in ("mx", "submissions", "pop3", "pop3s", "imap", "imaps", "webs")}
    data = config_data(
        folder / "mail",
        ports["mx"],
        (cert, key),
        listeners=[
            {"name": "mx", "address": "127.0.0.1", "port": ports["mx"]},
            {"name": "submissions", "address": "127.0.0.1", "port": ports["submissions"]},
        ],
        extra={
            "queue": {"root": str(folder / "queue")},
            "pop3": {
                "listeners": [
                    {"name": "pop3", "address": "127.0.0.1", "port": ports["pop3"]},
                    {"name": "pop3s", "address": "127.0.0.1", "port": ports["pop3s"]},
                ]
            },
            "imap": {
                "workers": 2,
                "listeners": [
                    {"name": "imap", "address": "127.0.0.1", "port": ports["imap"]},
                    {"name": "imaps", "address": "127.0.0.1", "port": ports["imaps"]},
                ],
            },
            "web": {
                "listeners": [
                    {"name": "web", "address": "127.0.0.1", "port": http_port},
                    {"name": "webs", "address": "127.0.0.1", "port": ports["webs"]},
                ],
                "mta_sts": {"mode": "enforce", "max_age": 86400},
            },
        },
    )
    data["tls"]["acme"] = {
        "directory": pebble.directory,
        "email": "postmaster@example.test",
        "ca_bundle": str(pebble.ca_bundle),
        "account_key": str(tls_dir / "acme-account.key"),
        "challenge_dir": str(folder / "acme-challenge"),
    }
    config = folder / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    daemons = {
        "webd": start_daemon("webd", config, http_port),
        "smtpd": start_daemon("smtpd", config, ports["submissions"]),
        "pop3d": start_daemon("pop3d", config, ports["pop3s"]),
        "imapd": start_daemon("imapd", config, ports["imaps"]),
    }
    yield Host(config, cert, ports, daemons)
    for process in daemons.values():
        process.send_signal(signal.SIGTERM)
    for process in daemons.values():
        process.wait(10)


def served(port: int, server_name: str = NAMES[0]) -> x509.Certificate:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def served_starttls(port: int) -> x509.Certificate:
    import smtplib

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        smtp.starttls(context=context)
        der = smtp.sock.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der)


def on_disk(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_fresh_host_gets_a_certificate_for_all_names_and_serves_it(host: Host, pebble: Pebble) -> None:
    placeholder = on_disk(host.cert)
    assert placeholder.issuer == placeholder.subject
    done = host.renew()
    assert done.returncode == 0, done.stderr
    assert "renewed (the certificate is not from this ACME CA)" in done.stdout
    cert = on_disk(host.cert)
    san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    assert sorted(san.get_values_for_type(x509.DNSName)) == sorted(NAMES)
    # Tokens are removed after the order.
    assert not list((host.config.parent / "acme-challenge").iterdir())

    wait_for(lambda: served(host.ports["pop3s"]).serial_number == cert.serial_number, 5, "pop3d to reload")
    for _ in range(6):  # both smtpd workers got the signal from their parent
        assert served(host.ports["submissions"]).serial_number == cert.serial_number
    assert served_starttls(host.ports["mx"]).serial_number == cert.serial_number
    for _ in range(4):
        assert served(host.ports["imaps"]).serial_number == cert.serial_number

    # A real client verifies the chain against pebble's root and the name, over HTTPS on webd.
    context = ssl.create_default_context(cadata=pebble.issuing_roots())
    for name in ("mail.example.test", "mta-sts.example.test"):
        with (
            socket.create_connection(("127.0.0.1", host.ports["webs"]), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            tls.sendall(f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
            answer = b""
            while chunk := tls.recv(4096):
                answer += chunk
        if name.startswith("mta-sts."):
            assert answer.startswith(b"HTTP/1.1 200")
            policy = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.test\r\nmax_age: 86400\r\n"
            assert answer.endswith(b"\r\n\r\n" + policy)
        else:
            assert answer.startswith(b"HTTP/1.1 404")  # the policy lives on mta-sts.<domain> only

    again = host.renew()
    assert again.returncode == 0, again.stderr
    assert "not due" in again.stdout
    assert on_disk(host.cert).serial_number == cert.serial_number


def test_forced_renewal_is_served_on_new_connections_while_old_ones_stay(host: Host) -> None:
    if on_disk(host.cert).issuer == on_disk(host.cert).subject:
        assert host.renew().returncode == 0
    before = on_disk(host.cert)
    pids = {name: p.pid for name, p in host.daemons.items()}

    # An open POP3S session and an open SMTPS session across the renewal.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    pop3 = context.wrap_socket(socket.create_connection(("127.0.0.1", host.ports["pop3s"]), timeout=5))
    smtp = context.wrap_socket(socket.create_connection(("127.0.0.1", host.ports["submissions"]), timeout=5))
    imap = context.wrap_socket(socket.create_connection(("127.0.0.1", host.ports["imaps"]), timeout=5))
    try:
        assert pop3.recv(512).startswith(b"+OK")
        assert smtp.recv(512).startswith(b"220")
        assert imap.recv(512).startswith(b"* OK")

        done = host.renew("--force")
        assert done.returncode == 0, done.stderr
        assert "renewed (forced)" in done.stdout
        after = on_disk(host.cert)
        assert after.serial_number != before.serial_number

        wait_for(lambda: served(host.ports["pop3s"]).serial_number == after.serial_number, 5, "pop3d reload")
        for _ in range(6):
            assert served(host.ports["submissions"]).serial_number == after.serial_number
        assert served_starttls(host.ports["mx"]).serial_number == after.serial_number
        assert served(host.ports["webs"]).serial_number == after.serial_number
        for _ in range(4):  # both imapd workers
            assert served(host.ports["imaps"]).serial_number == after.serial_number

        # The sessions opened before the renewal still work, on the old certificate.
        assert x509.load_der_x509_certificate(pop3.getpeercert(True)).serial_number == before.serial_number
        pop3.sendall(b"CAPA\r\n")
        assert pop3.recv(512).startswith(b"+OK")
        smtp.sendall(b"EHLO client.example\r\n")
        assert smtp.recv(512).startswith(b"250")
        imap.sendall(b"a1 CAPABILITY\r\n")
        reply = b""
        while b"a1 OK" not in reply:
            chunk = imap.recv(4096)
            assert chunk, "imapd closed the session opened before the renewal"
            reply += chunk
    finally:
        pop3.close()
        smtp.close()
        imap.close()
    # No listener was restarted: the same processes, all still running.
    assert {name: p.pid for name, p in host.daemons.items()} == pids
    assert all(p.poll() is None for p in host.daemons.values())


def test_a_bad_certificate_is_not_loaded_and_the_old_one_stays(host: Host) -> None:
    if on_disk(host.cert).issuer == on_disk(host.cert).subject:
        assert host.renew().returncode == 0
    current = on_disk(host.cert)
    good = host.cert.read_bytes()
    try:
        host.cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        host.daemons["pop3d"].send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert host.daemons["pop3d"].poll() is None
        assert served(host.ports["pop3s"]).serial_number == current.serial_number
    finally:
        host.cert.write_bytes(good)
    log = host.config.with_suffix(".log").read_text()
    assert "not reloaded, keeping the previous one" in log
