"""testssl.sh against the running daemons: the Mozilla intermediate profile, nothing rated HIGH.

Slow-ish (about 30 s per target): protocols, cipher categories, forward secrecy and the
vulnerability checks (-p -s -f -U), on implicit TLS (465) and on STARTTLS (25 and IMAP's 143);
995 and 993 get the quicker handshake checks. Findings rated HIGH or CRITICAL fail the test (what
`--severity HIGH` would leave in the JSON); the unfiltered JSON also shows that the old protocols
were really probed and refused.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from mailroom.tls import INTERMEDIATE_CIPHERS
from tests.conftest import config_data, free_port, start_daemon

TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")
pytestmark = pytest.mark.skipif(
    TESTSSL is None, reason="testssl.sh is not installed (apt-get install testssl.sh)"
)


@pytest.fixture(scope="module")
def daemons(
    tmp_path_factory: pytest.TempPathFactory, tls_files: tuple[Path, Path]
) -> Iterator[dict[str, int]]:
    folder = tmp_path_factory.mktemp("hardening")
    names = ("mx", "submission", "submissions", "pop3", "pop3s", "imap", "imaps")
    ports = {name: free_port() for name in names}
    data = config_data(
        folder / "mail",
        ports["mx"],
        tls_files,
        listeners=[
            {"name": n, "address": "127.0.0.1", "port": ports[n]} for n in ("mx", "submission", "submissions")
        ],
        extra={
            "queue": {"root": str(folder / "queue")},
            "pop3": {
                "listeners": [
                    {"name": n, "address": "127.0.0.1", "port": ports[n]} for n in ("pop3", "pop3s")
                ]
            },
            "imap": {
                "listeners": [
                    {"name": n, "address": "127.0.0.1", "port": ports[n]} for n in ("imap", "imaps")
                ]
            },
        },
    )
    config = folder / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    processes = [
        start_daemon("smtpd", config, ports["submissions"]),
        start_daemon("pop3d", config, ports["pop3s"]),
        start_daemon("imapd", config, ports["imaps"]),
    ]
    yield ports
    for process in processes:
        process.terminate()
        process.wait(10)


def run_testssl(port: int, out: Path, *extra: str) -> list[dict]:
    done = subprocess.run(
        [
            str(TESTSSL),
            "--quiet",
            "--color", "0",
            "--warnings", "off",
            "--openssl-timeout", "10",
            "-p", "-s", "-f", "-U",
            "--jsonfile", str(out),
            *extra,
            f"127.0.0.1:{port}",
        ],
        check=False,  # its exit code counts findings; the JSON is what we judge
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert out.exists(), (
        f"testssl wrote no JSON (exit {done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}"
    )
    return json.loads(out.read_text())


def check(findings: list[dict]) -> None:
    by_id = {f["id"]: f for f in findings}
    bad = [f"{f['id']}: {f['finding']}" for f in findings if f.get("severity") in ("HIGH", "CRITICAL")]
    assert not bad, "testssl rated these HIGH or CRITICAL:\n" + "\n".join(bad)
    assert not [f for f in findings if f["id"] in ("scanProblem", "engine_problem")], findings
    # The scan really ran: old protocols probed and refused, the two current ones spoken.
    for old in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert by_id[old]["finding"].startswith("not offered"), by_id[old]
    assert by_id["TLS1_2"]["finding"].startswith("offered"), by_id["TLS1_2"]
    assert by_id["TLS1_3"]["finding"].startswith("offered"), by_id["TLS1_3"]
    # Nothing weak, and every suite forward secret.
    for category in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT", "cipherlist_LOW",
                     "cipherlist_3DES_IDEA", "cipherlist_AVERAGE"):  # fmt: skip
        assert by_id[category]["finding"] == "not offered", by_id[category]
    assert by_id["cipherlist_STRONG"]["finding"] == "offered", by_id["cipherlist_STRONG"]
    assert by_id["PFS"]["finding"] == "offered", by_id["PFS"]
    assert by_id["secure_client_renego"]["finding"] == "not vulnerable", by_id["secure_client_renego"]


def test_submissions_465_has_no_high_findings(daemons: dict[str, int], tmp_path: Path) -> None:
    check(run_testssl(daemons["submissions"], tmp_path / "465.json"))


def test_port_25_starttls_has_no_high_findings(daemons: dict[str, int], tmp_path: Path) -> None:
    check(run_testssl(daemons["mx"], tmp_path / "25.json", "-t", "smtp"))


def test_imap_starttls_has_no_high_findings(daemons: dict[str, int], tmp_path: Path) -> None:
    check(run_testssl(daemons["imap"], tmp_path / "143.json", "-t", "imap"))


def handshake(port: int, **settings: object) -> ssl.SSLSocket:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for name, value in settings.items():
        if name == "ciphers":
            context.set_ciphers(str(value))
        else:
            with warnings.catch_warnings(action="ignore", category=DeprecationWarning):  # TLS 1.0/1.1
                setattr(context, name, value)
    return context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5))


def test_the_profile_in_a_handshake(daemons: dict[str, int]) -> None:
    """Quick checks of the same profile without testssl: versions, suites, no compression."""
    for port in (daemons["pop3s"], daemons["imaps"]):
        with handshake(port) as tls:
            assert tls.version() == "TLSv1.3" and tls.compression() is None
    tls12 = {"minimum_version": ssl.TLSVersion.TLSv1_2, "maximum_version": ssl.TLSVersion.TLSv1_2}
    with handshake(daemons["submissions"], **tls12) as tls:
        assert tls.cipher()[0] in INTERMEDIATE_CIPHERS.split(":")
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            handshake(
                daemons["submissions"], minimum_version=old, maximum_version=old, ciphers="ALL:@SECLEVEL=0"
            )
    # A TLS 1.2 client that offers only CBC or non-forward-secret suites gets no handshake.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(daemons["pop3s"], ciphers="AES128-SHA:AES256-GCM-SHA384:ECDHE-RSA-AES128-SHA", **tls12)
