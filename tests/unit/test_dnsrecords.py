"""`mailroom dns`: every record, its zone-file form parsed by dnspython, JSON, and the CLI's errors."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import subprocess
from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest
import yaml

from mailroom import cli, dnsrecords
from mailroom.config import ConfigError, parse
from mailroom.dkim import load_keys
from mailroom.web import content as web_content

HASH = "$argon2id$v=19$m=65536,t=3,p=4$x$y"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dns")
    paths = {
        "rsa": folder / "example.test.mr2026r.key",
        "ed25519": folder / "example.test.mr2026e.key",
        "org": folder / "example.org.mr2026r.key",
        "cert": folder / "mail.crt",
        "certkey": folder / "mail.key",
    }
    for name in ("rsa", "org"):
        subprocess.run(
            [
                "openssl",
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                str(paths[name]),
            ],
            check=True,
            capture_output=True,
        )
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(paths["ed25519"])],
        check=True,
        capture_output=True,
    )
    request = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
    subject = ["-subj", "/CN=mail.example.test", "-keyout", str(paths["certkey"]), "-out", str(paths["cert"])]
    subprocess.run([*request, *subject], check=True, capture_output=True)
    return paths


def config_data(files: dict[str, Path]) -> dict:
    return {
        "hostname": "mail.example.test",
        "domains": ["example.test", "example.org"],
        "users": [{"address": "alice@example.test", "password_hash": HASH}],
        "aliases": [{"address": "postmaster@example.test", "to": "alice@example.test"}],
        "store": {"root": "/var/lib/mailroom/mail"},
        "queue": {"root": "/var/lib/mailroom/queue"},
        "tls": {"certificate": str(files["cert"]), "private_key": str(files["certkey"])},
        "smtp": {
            "listeners": [
                {"name": "mx", "address": "0.0.0.0", "port": 25},
                {"name": "submission", "address": "0.0.0.0", "port": 587},
                {"name": "submissions", "address": "0.0.0.0", "port": 4465},
            ]
        },
        "pop3": {"listeners": [{"name": "pop3s", "address": "0.0.0.0", "port": 995}]},
        "dkim": {
            "keys": [
                {
                    "domain": "example.test",
                    "selector": "mr2026r",
                    "algorithm": "rsa-sha256",
                    "private_key": str(files["rsa"]),
                },
                {
                    "domain": "example.test",
                    "selector": "mr2026e",
                    "algorithm": "ed25519-sha256",
                    "private_key": str(files["ed25519"]),
                },
                {"domain": "example.org", "selector": "mr2026r", "private_key": str(files["org"])},
            ]
        },
        "dns": {"ipv4": "203.0.113.25", "ipv6": "2001:db8::25"},
    }


def build(data: dict, tlsa: bool = False) -> list[dnsrecords.Record]:
    config = parse(data)
    return dnsrecords.records(config, load_keys(config), dnsrecords.certificate_of(config) if tlsa else None)


def one(found: list[dnsrecords.Record], name: str, rtype: str) -> dnsrecords.Record:
    matches = [r for r in found if r.name == name and r.type == rtype]
    assert len(matches) == 1, (name, rtype, matches)
    return matches[0]


def test_every_record_with_a_reason(files: dict[str, Path]) -> None:
    found = build(config_data(files))
    assert all(r.why.endswith((".", ")")) and len(r.why) > 20 for r in found)
    assert one(found, "mail.example.test", "A").value == "203.0.113.25"
    assert one(found, "mail.example.test", "AAAA").value == "2001:db8::25"
    assert one(found, "25.113.0.203.in-addr.arpa", "PTR").elsewhere
    for domain in ("example.test", "example.org"):
        assert one(found, domain, "MX").value == "10 mail.example.test."
        assert one(found, domain, "TXT").value == "v=spf1 mx -all"
        assert one(found, f"_dmarc.{domain}", "TXT").value == (
            f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"
        )
        assert (
            one(found, f"_smtp._tls.{domain}", "TXT").value == f"v=TLSRPTv1; rua=mailto:postmaster@{domain}"
        )
        assert one(found, f"_mta-sts.{domain}", "TXT").value.startswith("v=STSv1; id=")
        assert one(found, f"mta-sts.{domain}", "CNAME").value == "mail.example.test."
        assert one(found, f"autoconfig.{domain}", "CNAME").value == "mail.example.test."
        assert one(found, f"autodiscover.{domain}", "CNAME").value == "mail.example.test."
        # The listeners' real ports; services that are off say so with target "." (RFC 6186 3.4).
        assert one(found, f"_submissions._tcp.{domain}", "SRV").value == "0 1 4465 mail.example.test."
        assert one(found, f"_submission._tcp.{domain}", "SRV").value == "10 1 587 mail.example.test."
        assert one(found, f"_pop3s._tcp.{domain}", "SRV").value == "0 1 995 mail.example.test."
        assert one(found, f"_pop3._tcp.{domain}", "SRV").value == "0 0 0 ."
        assert one(found, f"_imaps._tcp.{domain}", "SRV").value == "0 0 0 ."
        assert one(found, f"_imap._tcp.{domain}", "SRV").value == "0 0 0 ."
    # postmaster@example.org reaches nobody: the DMARC line says so.
    assert "reaches nobody" in one(found, "_dmarc.example.org", "TXT").why
    assert "reaches nobody" not in one(found, "_dmarc.example.test", "TXT").why
    assert not [r for r in found if r.type == "TLSA"]


def test_dkim_records_hold_the_public_keys(files: dict[str, Path]) -> None:
    found = build(config_data(files))
    der = subprocess.run(
        ["openssl", "pkey", "-in", str(files["rsa"]), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    assert one(found, "mr2026r._domainkey.example.test", "TXT").value == (
        f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
    )
    raw = subprocess.run(
        ["openssl", "pkey", "-in", str(files["ed25519"]), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout[-32:]  # the SubjectPublicKeyInfo of an Ed25519 key ends with the raw key
    assert one(found, "mr2026e._domainkey.example.test", "TXT").value == (
        f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    )
    assert one(found, "mr2026r._domainkey.example.org", "TXT").value.startswith("v=DKIM1; k=rsa; p=MII")


def test_tlsa_is_the_sha256_of_the_certificates_public_key(files: dict[str, Path]) -> None:
    spki = subprocess.run(
        ["openssl", "pkey", "-in", str(files["certkey"]), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    found = build(config_data(files), tlsa=True)
    assert (
        one(found, "_25._tcp.mail.example.test", "TLSA").value == f"3 1 1 {hashlib.sha256(spki).hexdigest()}"
    )


def test_zone_snippets_parse_with_dnspython(files: dict[str, Path]) -> None:
    found = build(config_data(files), tlsa=True)
    text = dnsrecords.render_zone(found)
    zones = dnsrecords.split_zones(text)
    assert set(zones) == {"example.test", "example.org"}
    parsed = {
        origin: dns.zone.from_text(snippet, origin=origin, relativize=False, check_origin=False)
        for origin, snippet in zones.items()
    }
    keys = load_keys(parse(config_data(files)))
    for key in keys:
        rdataset = parsed[key.domain].find_rdataset(f"{key.record_name}.", dns.rdatatype.TXT)
        (rdata,) = list(rdataset)
        assert all(len(s) <= 255 for s in rdata.strings)
        assert b"".join(rdata.strings).decode() == key.txt_record()
        assert rdataset.ttl == dnsrecords.TTL
    example = parsed["example.test"]
    (srv,) = example.find_rdataset("_pop3._tcp.example.test.", dns.rdatatype.SRV)
    assert (srv.priority, srv.weight, srv.port, srv.target.to_text()) == (0, 0, 0, ".")
    (mx,) = example.find_rdataset("example.test.", dns.rdatatype.MX)
    assert mx.exchange.to_text() == "mail.example.test."
    (tlsa,) = example.find_rdataset("_25._tcp.mail.example.test.", dns.rdatatype.TLSA)
    assert (tlsa.usage, tlsa.selector, tlsa.mtype) == (3, 1, 1)
    (a,) = example.find_rdataset("mail.example.test.", dns.rdatatype.A)
    assert a.address == "203.0.113.25"
    # The reverse record belongs to the provider's zone: commented out, with the reason.
    assert "; 25.113.0.203.in-addr.arpa. 3600 IN PTR mail.example.test." in text
    # Every record in the table is in the zone file (PTR aside), and nothing else.
    in_zones = sum(len(list(node.rdatasets)) for zone in parsed.values() for node in zone.nodes.values())
    distinct = {(r.name, r.type) for r in found if not r.elsewhere}
    assert in_zones == len(distinct)


def test_placeholders_without_public_addresses(files: dict[str, Path]) -> None:
    data = config_data(files)
    del data["dns"]
    found = build(data)
    assert one(found, "mail.example.test", "A").placeholder
    assert "mailroom_public_ipv4" in one(found, "mail.example.test", "A").why
    assert not [r for r in found if r.type == "PTR"]
    zones = dnsrecords.split_zones(dnsrecords.render_zone(found))
    zone = dns.zone.from_text(
        zones["example.test"], origin="example.test", relativize=False, check_origin=False
    )
    assert zone.get_rdataset("mail.example.test.", dns.rdatatype.A) is None
    assert "; mail.example.test. 3600 IN A <public IPv4 address>" in zones["example.test"]


def test_mta_sts_id_changes_with_the_policy_only(files: dict[str, Path]) -> None:
    data = config_data(files)
    first = dnsrecords.mta_sts_id(parse(data))
    assert first == dnsrecords.mta_sts_id(parse(copy.deepcopy(data)))
    assert first.isalnum() and 1 <= len(first) <= 32
    assert dnsrecords.mta_sts_policy(parse(data)) == (
        "version: STSv1\r\nmode: testing\r\nmx: mail.example.test\r\nmax_age: 604800\r\n"
    )
    # With a web section, the policy is exactly what webd serves, and so is the id's source.
    data["web"] = {"listeners": [{"name": "webs", "address": "0.0.0.0", "port": 443}]}
    assert dnsrecords.mta_sts_id(parse(data)) == first
    data["web"]["mta_sts"] = {"mode": "enforce", "max_age": 86400}
    config = parse(data)
    assert dnsrecords.mta_sts_id(config) != first
    assert dnsrecords.mta_sts_policy(config).encode() == web_content.mta_sts_policy(config)
    assert "(mode enforce)" in one(dnsrecords.records(config), "_mta-sts.example.test", "TXT").why
    # SRV records name the host webd tells clients to use.
    data["web"]["client_hostname"] = "imap.example.test"
    srv = one(dnsrecords.records(parse(data)), "_submission._tcp.example.test", "SRV")
    assert srv.value == "10 1 587 imap.example.test."


def test_dmarc_reports_to_another_domain_need_its_consent(files: dict[str, Path]) -> None:
    data = config_data(files)
    data["dns"].update(dmarc_policy="reject", dmarc_report_to="reports@example.test")
    found = build(data)
    assert (
        one(found, "_dmarc.example.org", "TXT").value == "v=DMARC1; p=reject; rua=mailto:reports@example.test"
    )
    consent = one(found, "example.org._report._dmarc.example.test", "TXT")
    assert (consent.zone, consent.value) == ("example.test", "v=DMARC1")
    assert not [r for r in found if r.name == "example.test._report._dmarc.example.test"]


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("ipv4", "2001:db8::1", "not an IPv4 address"),
        ("ipv6", "203.0.113.1", "not an IPv6 address"),
        ("ipv4", "mail.example.test", "not an IPv4 address"),
        ("dmarc_policy", "block", "must be one of none, quarantine, reject"),
        ("dmarc_report_to", "nobody", "not a valid mail address"),
        ("mta_sts_mode", "enforce", "unknown key"),  # the policy is web.mta_sts, which webd serves
        ("ttl", 300, "unknown key"),
    ],
)
def test_dns_section_errors_name_the_key(files: dict[str, Path], key: str, value: object, words: str) -> None:
    data = config_data(files)
    data["dns"][key] = value
    with pytest.raises(ConfigError) as error:
        parse(data)
    assert error.value.key == f"dns.{key}"
    assert words in error.value.problem


def test_cli_table_zone_and_json(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mailroom.yml"
    path.write_text(yaml.safe_dump(config_data(files)))
    assert cli.main(["dns", "--config", str(path)]) == 0
    table = capsys.readouterr().out
    assert "== zone example.test" in table and "version: STSv1" in table
    assert "-- DKIM: the public Ed25519 key" in table
    assert cli.main(["dns", "--config", str(path), "--zone", "--tlsa"]) == 0
    assert "IN TLSA 3 1 1 " in capsys.readouterr().out
    assert cli.main(["dns", "--config", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mta_sts_policy"].startswith("version: STSv1\r\n")
    kinds = {(r["name"], r["type"]) for r in data["records"]}
    assert ("mr2026e._domainkey.example.test", "TXT") in kinds
    assert all(set(r) >= {"zone", "name", "type", "value", "why"} for r in data["records"])


def test_cli_errors_name_the_key(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = config_data(files)
    data["dkim"]["keys"][1]["private_key"] = str(tmp_path / "missing.key")
    path = tmp_path / "mailroom.yml"
    path.write_text(yaml.safe_dump(data))
    assert cli.main(["dns", "--config", str(path)]) == 1
    assert "dkim.keys[1].private_key: " in capsys.readouterr().err
    assert cli.main(["config", "check", str(path)]) == 1
    assert "dkim.keys[1].private_key: " in capsys.readouterr().err

    data = config_data(files)
    for name in ("tls", "pop3", "queue", "dkim"):
        del data[name]
    data["smtp"]["listeners"] = data["smtp"]["listeners"][:1]
    path.write_text(yaml.safe_dump(data))
    assert cli.main(["dns", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "_domainkey" not in out
    assert cli.main(["dns", "--config", str(path), "--tlsa"]) == 1
    assert "tls.certificate: is not configured" in capsys.readouterr().err
