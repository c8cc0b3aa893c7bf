"""webd's answers: autoconfig, autodiscover, mobileconfig and the MTA-STS policy, from the config."""

from __future__ import annotations

import asyncio
import copy
import plistlib
import re
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from mailroom.config import ConfigError, parse
from mailroom.web import content
from mailroom.web.server import HttpError, Request, Site, read_request

BASE = {
    "hostname": "mail.example.test",
    "domains": ["example.test", "example.org"],
    "users": [{"address": "alice@example.test", "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$x$y"}],
    "store": {"root": "/var/lib/mailroom/mail"},
    "queue": {"root": "/var/lib/mailroom/queue"},
    "tls": {"certificate": "/etc/mailroom/tls/mail.crt", "private_key": "/etc/mailroom/tls/mail.key"},
    "smtp": {
        "listeners": [
            {"name": "mx", "address": "0.0.0.0", "port": 25},
            {"name": "submission", "address": "0.0.0.0", "port": 587},
            {"name": "submissions", "address": "0.0.0.0", "port": 465},
        ]
    },
    "pop3": {
        "listeners": [
            {"name": "pop3", "address": "0.0.0.0", "port": 110},
            {"name": "pop3s", "address": "0.0.0.0", "port": 995},
        ]
    },
    "web": {
        "listeners": [
            {"name": "web", "address": "0.0.0.0", "port": 80},
            {"name": "webs", "address": "0.0.0.0", "port": 443},
        ],
        "mta_sts": {"mode": "enforce", "max_age": 604800},
    },
}


def config(**changes: object):
    data = copy.deepcopy(BASE)
    data.update(changes)
    return parse(data)


def xml_tree(data: bytes) -> ET.Element:
    return ET.fromstring(data)  # noqa: S314 - our own output, not untrusted input


def servers_in(xml: bytes) -> set[tuple[str, str, str, int, str]]:
    """(element, type, hostname, port, socketType) of each server in a clientConfig document."""
    root = xml_tree(xml)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    provider = root.find("emailProvider")
    assert provider is not None
    found = set()
    for element in provider:
        if element.tag not in ("incomingServer", "outgoingServer"):
            continue
        assert element.findtext("username") == "%EMAILADDRESS%"
        assert element.findtext("authentication") == "password-cleartext"
        found.add(
            (
                element.tag,
                element.get("type", ""),
                element.findtext("hostname", ""),
                int(element.findtext("port", "0")),
                element.findtext("socketType", ""),
            )
        )
    return found


def test_autoconfig_lists_every_client_listener_with_its_socket_type() -> None:
    xml = content.autoconfig_xml(config(), "example.org")
    provider = xml_tree(xml).find("emailProvider")
    assert provider is not None and provider.get("id") == "example.org"
    assert provider.findtext("domain") == "example.org"
    host = "mail.example.test"
    assert servers_in(xml) == {
        # No imap section yet: the IMAP defaults.
        ("incomingServer", "imap", host, 993, "SSL"),
        ("incomingServer", "imap", host, 143, "STARTTLS"),
        ("incomingServer", "pop3", host, 995, "SSL"),
        ("incomingServer", "pop3", host, 110, "STARTTLS"),
        ("outgoingServer", "smtp", host, 465, "SSL"),
        ("outgoingServer", "smtp", host, 587, "STARTTLS"),
    }
    # Clients take the first server of a kind: implicit TLS first, IMAP before POP3.
    first = [e.findtext("port") for e in xml_tree(xml).iter("incomingServer")]
    assert first[0] == "993"
    # The MX port is for other mail servers, never for clients.
    assert all(port != 25 for *_, port, _ in servers_in(xml))


def test_autoconfig_follows_the_configured_ports() -> None:
    smtp = {"listeners": [{"name": "mx", "address": "0.0.0.0", "port": 25},
                          {"name": "submission", "address": "0.0.0.0", "port": 2587}]}  # fmt: skip
    changed = config(smtp=smtp, pop3=None)
    ports = {
        (kind, port, socket) for _, kind, _, port, socket in servers_in(content.autoconfig_xml(changed, "x"))
    }
    assert ports == {("imap", 993, "SSL"), ("imap", 143, "STARTTLS"), ("smtp", 2587, "STARTTLS")}


def test_autoconfig_uses_the_imap_section_when_there_is_one() -> None:
    imap = {"listeners": [{"name": "imaps", "address": "0.0.0.0", "port": 10993}]}
    try:
        with_imap = config(imap=imap)
    except ConfigError as exc:
        pytest.skip(f"this configuration has no imap section yet: {exc}")
    kinds = {(kind, port) for _, kind, _, port, _ in servers_in(content.autoconfig_xml(with_imap, "x"))}
    assert ("imap", 10993) in kinds and ("imap", 993) not in kinds


def test_client_hostname_can_differ_from_the_smtp_host_name() -> None:
    web = copy.deepcopy(BASE["web"])
    web["client_hostname"] = "imap.example.test"  # type: ignore[index]
    hosts = {host for _, _, host, _, _ in servers_in(content.autoconfig_xml(config(web=web), "example.test"))}
    assert hosts == {"imap.example.test"}


# RFC 8461 3.2: sts-policy-record; fields separated by CRLF (LF accepted), "version" first.
POLICY_FIELD = re.compile(r"^(version|mode|mx|max_age): ([^\r\n]*)$")
MX_PATTERN = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


def check_policy(text: bytes) -> dict[str, list[str]]:
    assert text.endswith(b"\r\n") and b"\n" not in text.replace(b"\r\n", b"")
    fields: dict[str, list[str]] = {}
    lines = text.decode("ascii").split("\r\n")[:-1]
    assert lines[0] == "version: STSv1", "version must be the first field"
    for line in lines:
        match = POLICY_FIELD.match(line)
        assert match, f"not a policy field: {line!r}"
        fields.setdefault(match.group(1), []).append(match.group(2))
    assert all(len(fields[k]) == 1 for k in ("version", "mode", "max_age"))
    assert fields["mode"][0] in ("none", "testing", "enforce")
    assert fields["max_age"][0].isdigit() and len(fields["max_age"][0]) <= 10
    assert 0 <= int(fields["max_age"][0]) <= 31557600
    if fields["mode"][0] != "none":
        assert fields.get("mx"), "testing and enforce need at least one mx"
    assert all(MX_PATTERN.match(mx) for mx in fields.get("mx", []))
    return fields


@pytest.mark.parametrize("mode", ["none", "testing", "enforce"])
def test_mta_sts_policy_is_valid_and_takes_mode_and_max_age_from_the_config(mode: str) -> None:
    web = copy.deepcopy(BASE["web"])
    web["mta_sts"] = {"mode": mode, "max_age": 86400, "mx": ["mail.example.test", "*.backup.example.test"]}  # type: ignore[index]
    fields = check_policy(content.mta_sts_policy(config(web=web)))
    assert fields["mode"] == [mode]
    assert fields["max_age"] == ["86400"]
    assert fields["mx"] == ["mail.example.test", "*.backup.example.test"]


def test_mta_sts_policy_defaults_to_the_host_name_and_testing() -> None:
    web = {"listeners": BASE["web"]["listeners"]}  # type: ignore[index]
    fields = check_policy(content.mta_sts_policy(config(web=web)))
    assert fields == {
        "version": ["STSv1"],
        "mode": ["testing"],
        "mx": ["mail.example.test"],
        "max_age": ["604800"],
    }


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"mode": "strict"}, "web.mta_sts.mode"),
        ({"max_age": 31557601}, "web.mta_sts.max_age"),
        ({"mx": ["not a host"]}, "web.mta_sts.mx[0]"),
        ({"colour": "blue"}, "web.mta_sts.colour"),
    ],
)
def test_bad_mta_sts_settings_are_refused_naming_the_key(change: dict, key: str) -> None:
    web = copy.deepcopy(BASE["web"])
    web["mta_sts"].update(change)  # type: ignore[index]
    with pytest.raises(ConfigError) as error:
        config(web=web)
    assert error.value.key == key


def test_acme_defaults_cover_the_host_and_the_policy_and_autoconfig_names() -> None:
    tls = {**BASE["tls"], "acme": {"email": "postmaster@example.test"}}  # type: ignore[dict-item]
    acme = config(tls=tls).acme
    assert acme is not None
    assert acme.directory == "https://acme-v02.api.letsencrypt.org/directory"
    assert acme.names == (
        "mail.example.test",
        "mta-sts.example.test",
        "autoconfig.example.test",
        "mta-sts.example.org",
        "autoconfig.example.org",
    )


@pytest.mark.parametrize(
    ("acme", "key"),
    [
        ({"directory": "http://ca.example/dir"}, "tls.acme.directory"),
        ({"email": "not-an-address"}, "tls.acme.email"),
        ({"names": ["ok.example.test", "bad name"]}, "tls.acme.names[1]"),
        ({"key_type": "dsa"}, "tls.acme.key_type"),
        ({"ca_bundle": "relative.pem"}, "tls.acme.ca_bundle"),
    ],
)
def test_bad_acme_settings_are_refused_naming_the_key(acme: dict, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        config(tls={**BASE["tls"], "acme": acme})  # type: ignore[dict-item]
    assert error.value.key == key


def test_autodiscover_answers_with_imap_and_smtp_over_tls() -> None:
    xml = content.autodiscover_xml(config(), "alice@example.test")
    ns = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
    protocols = {
        p.findtext(f"{ns}Type"): (
            int(p.findtext(f"{ns}Port", "0")),
            p.findtext(f"{ns}SSL"),
            p.findtext(f"{ns}LoginName"),
        )
        for p in xml_tree(xml).iter(f"{ns}Protocol")
    }
    assert protocols == {"IMAP": (993, "on", "alice@example.test"), "SMTP": (465, "on", "alice@example.test")}


def test_mobileconfig_is_a_profile_with_one_mail_account() -> None:
    profile = plistlib.loads(content.mobileconfig(config(), "Alice@Example.test"))
    assert profile["PayloadType"] == "Configuration"
    (account,) = profile["PayloadContent"]
    assert account["PayloadType"] == "com.apple.mail.managed"
    assert account["EmailAddress"] == "alice@example.test"
    assert account["EmailAccountType"] == "EmailTypeIMAP"
    assert (account["IncomingMailServerHostName"], account["IncomingMailServerPortNumber"]) == (
        "mail.example.test",
        993,
    )
    assert account["OutgoingMailServerPortNumber"] == 465
    assert account["IncomingMailServerUseSSL"] and account["OutgoingMailServerUseSSL"]
    # The same address gets the same identifiers: installing it again replaces the account.
    assert plistlib.loads(content.mobileconfig(config(), "alice@example.test")) == profile
    with pytest.raises(ValueError):
        content.mobileconfig(config(), "mallory@elsewhere.test")


def request(raw: bytes) -> Request:
    async def read() -> Request:
        reader = asyncio.StreamReader(limit=8192)
        reader.feed_data(raw)
        reader.feed_eof()
        return await read_request(reader)

    return asyncio.run(read())


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_routes_on_the_https_listener() -> None:
    site = Site(config())
    policy = site.secure(
        request(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.org\r\n\r\n")
    )
    assert status(policy) == 200 and b"mode: enforce" in policy
    with pytest.raises(HttpError) as error:
        site.secure(request(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mail.example.test\r\n\r\n"))
    assert error.value.status == 404
    for path in (
        b"/mail/config-v1.1.xml?emailaddress=bob%40example.org",
        b"/.well-known/autoconfig/mail/config-v1.1.xml",
    ):
        answer = site.secure(request(b"GET " + path + b" HTTP/1.1\r\nHost: autoconfig.example.org\r\n\r\n"))
        assert status(answer) == 200
        assert b'<emailProvider id="example.org">' in answer
    body = b"<Autodiscover><Request><EMailAddress>alice@example.test</EMailAddress></Request></Autodiscover>"
    answer = site.secure(
        request(
            b"POST /Autodiscover/Autodiscover.xml HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
    )
    assert status(answer) == 200 and b"<LoginName>alice@example.test</LoginName>" in answer
    answer = site.secure(request(b"GET /mobileconfig?email=alice@example.test HTTP/1.1\r\n\r\n"))
    assert status(answer) == 200 and b"application/x-apple-aspen-config" in answer


def test_the_http_listener_serves_tokens_and_redirects_the_rest(tmp_path: Path) -> None:
    tls = {**BASE["tls"], "acme": {"challenge_dir": str(tmp_path)}}  # type: ignore[dict-item]
    site = Site(config(tls=tls))
    (tmp_path / "tok-EN_1").write_text("tok-EN_1.thumbprint")
    answer = site.plain(request(b"GET /.well-known/acme-challenge/tok-EN_1 HTTP/1.1\r\nHost: a\r\n\r\n"))
    assert status(answer) == 200 and answer.endswith(b"\r\n\r\ntok-EN_1.thumbprint")
    (tmp_path.parent / "secret").write_text("no")
    for bad in (b"..%2Fsecret", b"../secret", b"missing"):
        with pytest.raises(HttpError) as error:
            site.plain(request(b"GET /.well-known/acme-challenge/" + bad + b" HTTP/1.1\r\n\r\n"))
        assert error.value.status == 404
    answer = site.plain(
        request(b"GET /mail/config-v1.1.xml HTTP/1.1\r\nHost: autoconfig.example.test\r\n\r\n")
    )
    assert status(answer) == 301
    assert b"Location: https://autoconfig.example.test/mail/config-v1.1.xml\r\n" in answer


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /%0d%0aSet-Cookie:x HTTP/1.1\r\n\r\n".replace(b"%0d%0a", b"\x01"),
        b"GET / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"NONSENSE\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X: " + b"a" * 9000 + b"\r\n\r\n",
    ],
)
def test_bad_requests_are_refused(raw: bytes) -> None:
    with pytest.raises(HttpError) as error:
        request(raw)
    assert error.value.status in (400, 413)


def test_the_redirect_never_carries_a_header_injection() -> None:
    site = Site(config())
    answer = site.plain(request(b"GET /a%0d%0aSet-Cookie:%20x HTTP/1.1\r\nHost: mail.example.test\r\n\r\n"))
    head = answer.split(b"\r\n\r\n", 1)[0]
    assert b"Location: https://mail.example.test/a%0d%0aSet-Cookie:%20x\r\n" in answer
    assert all(not line.startswith(b"Set-Cookie") for line in head.split(b"\r\n"))
