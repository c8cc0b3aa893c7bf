"""Shared fixtures: a configuration on disk and a running smtpd on loopback."""

from __future__ import annotations

import getpass
import grp
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mailroom.accounts import hash_password

SALT_KEY = b"k" * 32
PASSWORD = "correct horse battery staple"
USERS = ("alice@example.test", "bob@example.test")


_PORTS_GIVEN: set[int] = set()


@contextmanager
def held_elsewhere(lock: AbstractContextManager[object]) -> Iterator[None]:
    """Hold lock in another thread for as long as the block runs."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        yield
    finally:
        release.set()
        holder.join()


def free_port() -> int:
    """A loopback port nobody listens on, and not one this test process handed out before (the
    kernel may offer the same free port twice in a row, and a daemon binds it only later)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "mail.crt", folder / "mail.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=mail.example.test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def config_data(
    store: Path,
    port: int,
    tls: tuple[Path, Path] | None,
    listeners: list[dict] | None = None,
    extra: dict | None = None,
    **smtp: object,
) -> dict:
    return {
        "hostname": "mail.example.test",
        "run_as": {"user": getpass.getuser(), "group": grp.getgrgid(os.getgid()).gr_name},
        "domains": ["example.test", "example.org"],
        "users": [
            {"address": a, "password_hash": hash_password(PASSWORD, address=a, salt_key=SALT_KEY)}
            for a in USERS
        ],
        "store": {"root": str(store)},
        # Each test daemon has its own runtime state (login throttling), not the host's.
        "runtime_dir": str(store.parent / "run"),
        **({"tls": {"certificate": str(tls[0]), "private_key": str(tls[1])}} if tls else {}),
        # Two workers, as on a two-core server: tests see the pre-fork daemon and its shared state.
        "smtp": {
            "listeners": listeners or [{"name": "mx", "address": "127.0.0.1", "port": port}],
            "workers": 2,
            **smtp,
        },
        # No DNS outside loopback in tests: SPF/DKIM/DMARC (on by default) only where a test
        # brings its own DNS server (tests/integration/test_filtering.py).
        "filtering": {"spf": False, "dkim": False, "dmarc": False},
        **(extra or {}),
    }


def maildir_messages(store: Path, address: str) -> list[bytes]:
    """The messages in new/ of an address's Maildir below a store root, oldest first."""
    local, domain = address.split("@")
    new = store / domain / local / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


@dataclass
class Smtpd:
    port: int
    store: Path
    config: Path
    process: subprocess.Popen

    def maildir(self, address: str) -> Path:
        local, domain = address.split("@")
        return self.store / domain / local

    def messages(self, address: str) -> list[bytes]:
        return maildir_messages(self.store, address)

    def start(self) -> None:
        self.process = start_smtpd(self.config, self.port)

    def kill(self) -> None:
        kill_smtpd(self.process, self.port)


def kill_smtpd(process: subprocess.Popen, port: int) -> None:
    """SIGKILL the daemon and wait until its workers (which get SIGTERM) have let go of the port."""
    process.kill()
    process.wait(10)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} still answers after the daemon was killed")


def start_daemon(command: str, config: Path, port: int) -> subprocess.Popen:
    """Start `mailroom COMMAND --config CONFIG` and wait until it accepts connections on port."""
    with open(config.with_suffix(".log"), "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailroom.cli", command, "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{command} exited with {process.returncode}: {config.with_suffix('.log').read_text()}"
            )
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{command} did not start listening")


def start_smtpd(config: Path, port: int) -> subprocess.Popen:
    return start_daemon("smtpd", config, port)


def insecure() -> ssl.SSLContext:
    """A client context for the tests' self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def make_smtpd(tmp_path: Path, tls: tuple[Path, Path] | None, **smtp: object) -> Smtpd:
    port = free_port()
    store = tmp_path / "mail"
    config = tmp_path / "mailroom.yml"
    config.write_text(yaml.safe_dump(config_data(store, port, tls, **smtp)))
    return Smtpd(port, store, config, start_smtpd(config, port))


@pytest.fixture
def smtpd(tmp_path: Path, tls_files: tuple[Path, Path]) -> Iterator[Smtpd]:
    server = make_smtpd(tmp_path, tls_files, max_message_size=64 * 1024)
    yield server
    server.process.terminate()
    server.process.wait(10)


DNSMASQ = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None)


@contextmanager
def dnsmasq(records: list[str], folder: Path, probe: tuple[str, str]) -> Iterator[int]:
    """A real DNS server (dnsmasq) on 127.0.0.1 at a free port, authoritative for *.test.

    records are dnsmasq options (--txt-record=..., --mx-host=...); probe is a
    (name, type) it must answer before the port is handed out.
    """
    import dns.resolver

    assert DNSMASQ is not None, "dnsmasq is not installed (apt-get install dnsmasq)"
    port = free_port()
    log = folder / "dnsmasq.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                DNSMASQ,
                "--no-daemon",
                f"--port={port}",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--local=/test/",
                *records,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = port
        resolver.lifetime = 0.5
        deadline = time.monotonic() + 10
        while True:
            try:
                resolver.resolve(*probe)
                break
            except Exception:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"dnsmasq does not answer: {log.read_text()}") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(10)
