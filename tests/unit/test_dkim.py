"""DKIM signing: key loading, who gets signed, what is signed, and dkimpy verifying the result."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import dkim as dkimpy
import pytest

from mailroom.config import ConfigError, DkimKey, parse
from mailroom.dkim import Signer, SigningKey, from_address, load_key, load_keys

DOMAIN = "example.test"
MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Cc: carol@example.net\r\n"
    b"Subject: Lunch\r\n"
    b"Date: Fri, 27 Nov 2026 07:00:00 +0000\r\n"
    b"Message-ID: <1@example.test>\r\n"
    b"X-Mailer: test\r\n"
    b"\r\n"
    b"Noon at the usual place?\r\n"
)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dkim")
    files = {
        "rsa": folder / "rsa.key",
        "rsa_pkcs1": folder / "rsa-pkcs1.key",
        "ed25519": folder / "ed25519.key",
        "small": folder / "small.key",
        "encrypted": folder / "encrypted.key",
    }
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(files["rsa"]))
    openssl("rsa", "-in", str(files["rsa"]), "-traditional", "-out", str(files["rsa_pkcs1"]))
    openssl("genpkey", "-algorithm", "ed25519", "-out", str(files["ed25519"]))
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:768", "-out", str(files["small"]))
    openssl(
        "genpkey", "-algorithm", "RSA", "-aes256", "-pass", "pass:secret", "-out", str(files["encrypted"])
    )
    return files


@pytest.fixture(scope="module")
def keys(key_files: dict[str, Path]) -> tuple[SigningKey, SigningKey]:
    rsa = load_key(DkimKey(DOMAIN, "mr2026r", "rsa-sha256", key_files["rsa"]))
    ed = load_key(DkimKey(DOMAIN, "mr2026e", "ed25519-sha256", key_files["ed25519"]))
    return rsa, ed


def dns_of(*keys: SigningKey):
    records = {f"{k.record_name}.".encode(): k.txt_record().encode() for k in keys}

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name)

    return lookup


def signatures(message: bytes) -> list[dict[bytes, bytes]]:
    parsed = dkimpy.DKIM(message)
    return [dkimpy.util.parse_tag_value(v) for k, v in parsed.headers if k.lower() == b"dkim-signature"]


def test_public_key_matches_openssl(key_files: dict[str, Path], keys: tuple[SigningKey, SigningKey]) -> None:
    der = subprocess.run(
        ["openssl", "pkey", "-in", str(key_files["rsa"]), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    import base64

    assert keys[0].public == base64.b64encode(der).decode()
    assert keys[0].txt_record() == f"v=DKIM1; k=rsa; p={keys[0].public}"
    assert keys[1].txt_record().startswith("v=DKIM1; k=ed25519; p=")
    assert len(base64.b64decode(keys[1].public)) == 32  # RFC 8463: the raw public key
    assert "secret" not in repr(keys[0]) and "PRIVATE" not in repr(keys[0])


def test_pkcs1_and_pkcs8_give_the_same_key(key_files: dict[str, Path]) -> None:
    a = load_key(DkimKey(DOMAIN, "s", "rsa-sha256", key_files["rsa"]))
    b = load_key(DkimKey(DOMAIN, "s", "rsa-sha256", key_files["rsa_pkcs1"]))
    assert a.public == b.public


@pytest.mark.parametrize(
    ("file", "algorithm", "words"),
    [
        ("missing", "rsa-sha256", "cannot be read"),
        ("ed25519", "rsa-sha256", "not an RSA key"),
        ("rsa", "ed25519-sha256", "not an Ed25519 key"),
        ("small", "rsa-sha256", "768 bits"),
        ("encrypted", "rsa-sha256", "not an unencrypted PEM private key"),
        ("garbage", "rsa-sha256", "not an unencrypted PEM private key"),
    ],
)
def test_bad_key_files_are_refused_naming_the_key(
    key_files: dict[str, Path], tmp_path: Path, file: str, algorithm: str, words: str
) -> None:
    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    path = key_files.get(file, tmp_path / f"{file}.key")
    data = {
        "hostname": "mail.example.test",
        "domains": [DOMAIN],
        "store": {"root": "/var/lib/mailroom/mail"},
        "smtp": {"listeners": [{"name": "mx", "address": "127.0.0.1", "port": 25}]},
        "dkim": {
            "keys": [
                {
                    "domain": DOMAIN,
                    "selector": "a",
                    "algorithm": "ed25519-sha256",
                    "private_key": str(key_files["ed25519"]),
                },
                {"domain": DOMAIN, "selector": "b", "algorithm": algorithm, "private_key": str(path)},
            ]
        },
    }
    if algorithm == "ed25519-sha256":
        data["dkim"]["keys"][0]["algorithm"] = "rsa-sha256"
        data["dkim"]["keys"][0]["private_key"] = str(key_files["rsa"])
    with pytest.raises(ConfigError) as error:
        load_keys(parse(data))
    assert error.value.key == "dkim.keys[1].private_key"
    assert words in error.value.problem


def test_signs_with_both_keys_rsa_on_top_and_both_verify(keys: tuple[SigningKey, SigningKey]) -> None:
    signed = Signer(keys[::-1]).sign(MESSAGE, lambda address: True) + MESSAGE
    tags = signatures(signed)
    assert [t[b"a"] for t in tags] == [b"rsa-sha256", b"ed25519-sha256"]
    for index, tag in enumerate(tags):
        assert tag[b"d"] == DOMAIN.encode()
        assert tag[b"c"] == b"relaxed/relaxed"
        assert tag[b"s"] == (b"mr2026r", b"mr2026e")[index]
        signed_headers = [h.strip() for h in tag[b"h"].split(b":")]
        # The recommended set that is present, X-Mailer not; From over-signed.
        assert signed_headers == [b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"from"]
        assert dkimpy.DKIM(signed).verify(idx=index, dnsfunc=dns_of(*keys))


def test_relaxed_canonicalization_survives_whitespace_changes(keys: tuple[SigningKey, SigningKey]) -> None:
    signed = Signer(keys).sign(MESSAGE, lambda address: True) + MESSAGE
    rewrapped = signed.replace(b"Subject: Lunch", b"Subject:   Lunch ").replace(
        b"place?\r\n", b"place?  \r\n"
    )
    assert dkimpy.verify(rewrapped, dnsfunc=dns_of(*keys))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda m: m.replace(b"Noon", b"Midnight"),  # the body
        lambda m: m.replace(b"Subject: Lunch", b"Subject: Dinner"),
        lambda m: m.replace(b"X-Mailer: test\r\n", b"X-Mailer: test\r\nFrom: mallory@example.org\r\n"),
    ],
)
def test_changes_break_the_signature(keys: tuple[SigningKey, SigningKey], tamper) -> None:
    signed = Signer(keys[:1]).sign(MESSAGE, lambda address: True) + MESSAGE
    assert dkimpy.verify(signed, dnsfunc=dns_of(*keys))
    assert not dkimpy.verify(tamper(signed), dnsfunc=dns_of(*keys))


def test_only_from_is_oversigned(keys: tuple[SigningKey, SigningKey]) -> None:
    # Absent fields are not listed in h=, so a Reply-To added later does not break the
    # signature (over-signing every absent field breaks legitimate mailing lists);
    # a second From does (test_changes_break_the_signature).
    signed = Signer(keys[:1]).sign(MESSAGE, lambda address: True) + MESSAGE
    assert b"reply-to" not in signatures(signed)[0][b"h"]
    added = signed.replace(b"\r\n\r\n", b"\r\nReply-To: mallory@example.org\r\n\r\n", 1)
    assert dkimpy.verify(added, dnsfunc=dns_of(*keys))


@pytest.mark.parametrize(
    ("message", "may_use", "signed"),
    [
        (MESSAGE, True, True),
        (MESSAGE.replace(b"alice@example.test", b"alice@EXAMPLE.test"), True, True),
        (MESSAGE, False, False),  # a From the user may not send as
        (MESSAGE.replace(b"alice@example.test", b"alice@example.org"), True, False),  # no key for it
        (MESSAGE.replace(b"From: Alice <alice@example.test>\r\n", b""), True, False),
        (MESSAGE.replace(b"To:", b"From: alice@example.test\r\nTo:"), True, False),  # two From fields
        (MESSAGE.replace(b"<alice@example.test>", b"<alice@example.test>, bob@example.test"), True, False),
        (b"From: alice@example.test\r\nSubject: only headers\r\n", True, True),
    ],
)
def test_what_gets_signed(
    keys: tuple[SigningKey, SigningKey], message: bytes, may_use: bool, signed: bool
) -> None:
    asked: list[str] = []

    def allowed(address: str) -> bool:
        asked.append(address)
        return may_use

    headers = Signer(keys).sign(message, allowed)
    assert bool(headers) is signed
    if signed:
        assert dkimpy.verify(headers + message, dnsfunc=dns_of(*keys))


def test_from_address() -> None:
    assert from_address(MESSAGE) == "alice@example.test"
    assert (
        from_address(b"From: =?utf-8?q?Al=C3=AFce?= <alice@example.test>\r\n\r\nx\r\n")
        == "alice@example.test"
    )
    assert from_address(b"From: undisclosed\r\n\r\nx\r\n") is None
    assert from_address(b"no header section at all" * 100000) is None


def test_no_dkim_section_no_signer() -> None:
    data = {
        "hostname": "mail.example.test",
        "domains": [DOMAIN],
        "store": {"root": "/var/lib/mailroom/mail"},
        "smtp": {"listeners": [{"name": "mx", "address": "127.0.0.1", "port": 25}]},
    }
    assert Signer.from_config(parse(data)) is None
    with_dkim = copy.deepcopy(data)
    with_dkim["dkim"] = {"keys": []}
    with pytest.raises(ConfigError, match=r"^dkim\.keys: must list at least one key"):
        parse(with_dkim)


@pytest.mark.parametrize(
    ("key", "value", "where", "words"),
    [
        ("domain", "example.org", "dkim.keys[0].domain", "not one of the domains"),
        ("selector", "bad selector", "dkim.keys[0].selector", "not a DNS name"),
        ("selector", "-bad", "dkim.keys[0].selector", "not a DNS name"),
        ("algorithm", "rsa-sha1", "dkim.keys[0].algorithm", "must be one of"),
        ("private_key", "dkim/example.test.key", "dkim.keys[0].private_key", "absolute path"),
        ("colour", "blue", "dkim.keys[0].colour", "unknown key"),
        ("domain", None, "dkim.keys[0].domain", "is required"),
    ],
)
def test_dkim_section_errors_name_the_key(key: str, value: object, where: str, words: str) -> None:
    entry: dict[str, object] = {
        "domain": DOMAIN,
        "selector": "mr2026r",
        "algorithm": "rsa-sha256",
        "private_key": "/etc/mailroom/dkim/example.test.mr2026r.key",
    }
    entry[key] = value
    data = {
        "hostname": "mail.example.test",
        "domains": [DOMAIN],
        "store": {"root": "/var/lib/mailroom/mail"},
        "smtp": {"listeners": [{"name": "mx", "address": "127.0.0.1", "port": 25}]},
        "dkim": {"keys": [entry]},
    }
    with pytest.raises(ConfigError) as error:
        parse(data)
    assert error.value.key == where
    assert words in error.value.problem


def test_one_key_per_algorithm_and_selector_per_domain() -> None:
    def config(*keys: tuple[str, str]) -> dict:
        return {
            "hostname": "mail.example.test",
            "domains": [DOMAIN],
            "store": {"root": "/var/lib/mailroom/mail"},
            "smtp": {"listeners": [{"name": "mx", "address": "127.0.0.1", "port": 25}]},
            "dkim": {
                "keys": [
                    {"domain": DOMAIN, "selector": s, "algorithm": a, "private_key": f"/k/{s}"}
                    for s, a in keys
                ]
            },
        }

    with pytest.raises(ConfigError, match=r"^dkim\.keys\[1\]\.algorithm: example.test has a rsa-sha256 key"):
        parse(config(("a", "rsa-sha256"), ("b", "rsa-sha256")))
    with pytest.raises(ConfigError, match=r"^dkim\.keys\[1\]\.selector: 'a' is used twice"):
        parse(config(("a", "rsa-sha256"), ("a", "ed25519-sha256")))
    assert len(parse(config(("a", "rsa-sha256"), ("b", "ed25519-sha256"))).dkim_keys) == 2
