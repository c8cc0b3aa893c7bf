"""When `mailroom cert renew` renews: a third of the lifetime left, other names, another CA."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from mailroom.acme import renewal_due, state_path
from mailroom.config import parse

DIRECTORY = "https://ca.example.test/dir"
START = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def config(tmp_path: Path, names: list[str] | None = None):
    acme: dict = {"directory": DIRECTORY}
    if names:
        acme["names"] = names
    return parse(
        {
            "hostname": "mail.example.test",
            "domains": ["example.test"],
            "store": {"root": "/var/lib/mailroom/mail"},
            "tls": {
                "certificate": str(tmp_path / "mail.crt"),
                "private_key": str(tmp_path / "mail.key"),
                "acme": acme,
            },
            "smtp": {"listeners": [{"name": "mx", "address": "127.0.0.1", "port": 25}]},
        }
    )


def write_certificate(tmp_path: Path, names: list[str], days: int = 90, self_signed: bool = False) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    issuer = subject if self_signed else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(START)
        .not_valid_after(START + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "mail.crt").write_bytes(cert.public_bytes(Encoding.PEM))
    state_path(tmp_path / "mail.crt").write_text(json.dumps({"directory": DIRECTORY, "names": names}))


NAMES = ["mail.example.test", "mta-sts.example.test", "autoconfig.example.test"]


def test_renewal_starts_when_a_third_of_the_lifetime_is_left(tmp_path: Path) -> None:
    write_certificate(tmp_path, NAMES, days=90)
    cfg = config(tmp_path)
    assert not renewal_due(cfg, START + datetime.timedelta(days=59)).due
    due = renewal_due(cfg, START + datetime.timedelta(days=61))
    assert due.due and "29 days left" in due.reason
    assert renewal_due(cfg, START + datetime.timedelta(days=100)).due  # expired


def test_no_certificate_a_self_signed_one_or_another_ca_is_renewed(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    assert renewal_due(cfg, START).reason == "no certificate yet"
    write_certificate(tmp_path, NAMES, self_signed=True)
    assert renewal_due(cfg, START + datetime.timedelta(days=1)).due
    write_certificate(tmp_path, NAMES)
    assert not renewal_due(cfg, START + datetime.timedelta(days=1)).due
    state_path(tmp_path / "mail.crt").write_text(json.dumps({"directory": "https://other.example/dir"}))
    assert renewal_due(cfg, START + datetime.timedelta(days=1)).due


def test_changed_names_are_renewed(tmp_path: Path) -> None:
    write_certificate(tmp_path, NAMES)
    more = config(tmp_path, [*NAMES, "autoconfig.example.org"])
    due = renewal_due(more, START + datetime.timedelta(days=1))
    assert due.due and "autoconfig.example.org" in due.reason
    assert renewal_due(config(tmp_path, NAMES[:1]), START + datetime.timedelta(days=1)).due
