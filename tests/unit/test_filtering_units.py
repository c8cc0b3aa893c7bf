"""Units of filtering/: header handling, DMARC records and alignment, greylisting, sender
lists, the clamd reply parser, DNSBL names, and the filtering section of mailroom.yml."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest

from mailroom.config import ConfigError, Greylisting, parse
from mailroom.filtering import authresults, clamav, dmarc, dnsbl
from mailroom.filtering.greylist import Greylist, client_network
from mailroom.filtering.policy import matches

GOOD = {
    "hostname": "mail.example.test",
    "domains": ["example.test"],
    "users": [{"address": "alice@example.test", "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$x$y"}],
    "store": {"root": "/var/lib/mailroom/mail"},
    "smtp": {"listeners": [{"name": "mx", "address": "0.0.0.0", "port": 25}]},
}


def with_filtering(section: object) -> dict:
    data = copy.deepcopy(GOOD)
    data["filtering"] = section
    return data


# ------------------------------------------------------------------ Authentication-Results


def test_strip_removes_our_authserv_id_and_our_header_names_only() -> None:
    message = (
        b"Received: from x\r\n"
        b"Authentication-Results: (comment) Mail.Example.Test (v1); dkim=pass\r\n\theader.d=bank.test\r\n"
        b"Authentication-Results: mx.other.test; spf=pass\r\n"
        b"Authentication-Results: mail.example.test.evil; spf=pass\r\n"
        b"x-spam-flag: NO\r\n"
        b"X-Virus-Status: clean\r\n"
        b"X-Spamming-Is-Fine: yes\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"X-Spam-Flag: in the body stays\r\n"
    )
    cleaned, removed = authresults.strip_forged(message, "mail.example.test")
    assert removed == 3
    assert cleaned == (
        b"Received: from x\r\n"
        b"Authentication-Results: mx.other.test; spf=pass\r\n"
        b"Authentication-Results: mail.example.test.evil; spf=pass\r\n"
        b"X-Spamming-Is-Fine: yes\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"X-Spam-Flag: in the body stays\r\n"
    )


def test_strip_keeps_a_message_without_body_and_one_without_headers() -> None:
    assert authresults.strip_forged(b"X-Spam-Score: 1\r\nSubject: a\r\n", "h.test") == (b"Subject: a\r\n", 1)
    assert authresults.strip_forged(b"\r\nX-Spam-Score: 1\r\n", "h.test") == (b"\r\nX-Spam-Score: 1\r\n", 0)


def test_header_is_one_field_with_quoted_values() -> None:
    results = [
        authresults.MethodResult(
            "spf", "fail", "a (nested) comment", (("smtp.mailfrom", "odd user@x.test"),)
        ),
        authresults.MethodResult("dkim", "pass", "", (("header.d", "x.test"), ("header.b", "abc/+="))),
    ]
    text = authresults.header("mail.example.test", results).decode()
    assert text == (
        "Authentication-Results: mail.example.test;\r\n"
        '\tspf=fail (a nested comment) smtp.mailfrom="odd user@x.test";\r\n'
        '\tdkim=pass header.d=x.test header.b="abc/+="\r\n'
    )
    assert authresults.authserv_id_of(text.partition(":")[2].encode()) == "mail.example.test"
    assert authresults.header("h.test", []) == b"Authentication-Results: h.test; none\r\n"


@pytest.mark.parametrize(
    "value",
    ['x"y', "a\\b", "new\r\nline", "ünïcode@x.test", "", "@domain.test"],
)
def test_quoted_values_cannot_break_out(value: str) -> None:
    quoted = authresults.quote_value(value)
    assert "\r" not in quoted and "\n" not in quoted
    if quoted.startswith('"'):
        inner = quoted[1:-1].replace("\\\\", "").replace('\\"', "")
        assert '"' not in inner


# ------------------------------------------------------------------ DMARC


def test_dmarc_record_parsing() -> None:
    record = dmarc.parse_record(b"v=DMARC1; p=reject; sp=quarantine; adkim=s; pct=50")
    assert record == dmarc.Record("reject", "quarantine", "s", "r", 50)
    assert dmarc.parse_record(b"v=DMARC1;p=none") == dmarc.Record("none", "none")
    assert dmarc.parse_record(b"v=DMARC1; p=bogus; rua=mailto:x@y.test") == dmarc.Record("none", "none")
    assert dmarc.parse_record(b"v=DMARC1; p=bogus") is None
    assert dmarc.parse_record(b"v=spf1 -all") is None
    assert dmarc.parse_record(b"p=reject; v=DMARC1") is None  # v= must come first
    assert dmarc.parse_record(b"v=DMARC1; p=reject; pct=abc").pct == 100  # type: ignore[union-attr]


def test_alignment_relaxed_and_strict() -> None:
    assert dmarc.aligned("mail.bank.test", "bank.test", "r")
    assert not dmarc.aligned("mail.bank.test", "bank.test", "s")
    assert dmarc.aligned("BANK.test.", "bank.test", "s")
    assert not dmarc.aligned("bank.test", "other.test", "r")
    # A public suffix is not an organization: two customers of co.uk are not aligned.
    assert not dmarc.aligned("a.co.uk", "b.co.uk", "r")
    assert dmarc.organizational_domain("x.y.example.co.uk") == "example.co.uk"


def test_from_domain_needs_exactly_one_author() -> None:
    assert dmarc.from_domain(b"From: A <a@Bank.Test>\r\n\r\n") == "bank.test"
    assert dmarc.from_domain(b"From: a@x.test, b@y.test\r\n\r\n") is None
    assert dmarc.from_domain(b"From: a@x.test\r\nFrom: b@y.test\r\n\r\n") is None
    assert dmarc.from_domain(b"Subject: none\r\n\r\n") is None


@pytest.fixture
def txt(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[bytes]]:
    records: dict[str, list[bytes]] = {}

    async def fake(resolver: object, name: str) -> list[bytes]:
        return records.get(name, [])

    monkeypatch.setattr(dmarc, "txt_records", fake)
    return records


def run_dmarc(
    message: bytes, spf_domain: str | None, dkim_domains: list[str], sample: float = 0.0
) -> dmarc.DmarcResult:
    from mailroom.filtering.dkim import DkimResult
    from mailroom.filtering.spf import SpfResult

    spf = SpfResult("pass", spf_domain, "mailfrom") if spf_domain else None
    dkim = [DkimResult("pass", d, "s", "b") for d in dkim_domains]
    return asyncio.run(dmarc.check(message, spf, dkim, None, sample=lambda: sample))  # type: ignore[arg-type]


def test_dmarc_policy_of_the_organizational_domain_with_sp(txt: dict[str, list[bytes]]) -> None:
    txt["_dmarc.bank.test"] = [b"v=DMARC1; p=reject; sp=quarantine"]
    sub = b"From: x@news.bank.test\r\n\r\n"
    result = run_dmarc(sub, None, [])
    assert (result.result, result.policy, result.disposition) == ("fail", "quarantine", "quarantine")
    top = run_dmarc(b"From: x@bank.test\r\n\r\n", "other.test", [])
    assert (top.result, top.disposition) == ("fail", "reject")
    assert run_dmarc(sub, "bounces.bank.test", []).result == "pass"  # relaxed SPF alignment
    assert run_dmarc(sub, None, ["bank.test"]).result == "pass"  # relaxed DKIM alignment


def test_dmarc_pct_sampling_softens_the_policy(txt: dict[str, list[bytes]]) -> None:
    txt["_dmarc.bank.test"] = [b"v=DMARC1; p=reject; pct=10"]
    message = b"From: x@bank.test\r\n\r\n"
    assert run_dmarc(message, None, [], sample=0.05).disposition == "reject"
    assert run_dmarc(message, None, [], sample=0.5).disposition == "quarantine"


def test_dmarc_none_when_no_or_several_records(txt: dict[str, list[bytes]]) -> None:
    assert run_dmarc(b"From: x@nobody.test\r\n\r\n", None, []).result == "none"
    txt["_dmarc.two.test"] = [b"v=DMARC1; p=reject", b"v=DMARC1; p=none"]
    assert run_dmarc(b"From: x@two.test\r\n\r\n", None, []).result == "none"


# ------------------------------------------------------------------ greylisting


def test_greylist_delay_pass_and_retry_window(tmp_path: Path) -> None:
    now = [1_000_000.0]
    grey = Greylist(
        Greylisting(True, delay=300, retry_window=3600, expiry=86400), tmp_path / "g", lambda: now[0], 1024
    )
    assert grey.check("192.0.2.10", "a@x.test", "alice@example.test") == 300
    now[0] += 100
    assert grey.check("192.0.2.10", "a@x.test", "alice@example.test") == pytest.approx(200)
    now[0] += 200
    # Another address of the same /24 retries: the pool of a big sender.
    assert grey.check("192.0.2.77", "a@x.test", "alice@example.test") == 0
    now[0] += 80000
    assert grey.check("192.0.2.10", "A@X.test", "alice@example.test") == 0  # remembered, case-insensitive
    assert grey.check("192.0.2.10", "b@x.test", "alice@example.test") == 300  # a new triplet
    now[0] += 7200  # retried too late: starts over
    assert grey.check("192.0.2.10", "b@x.test", "alice@example.test") == 300


def test_greylist_is_shared_through_its_file(tmp_path: Path) -> None:
    now = [5_000.0]
    settings = Greylisting(True, delay=10, retry_window=3600, expiry=86400)
    first = Greylist(settings, tmp_path / "g", lambda: now[0], 1024)
    second = Greylist(settings, tmp_path / "g", lambda: now[0], 1024)
    assert first.check("2001:db8::1", "", "alice@example.test") == 10
    now[0] += 11
    assert second.check("2001:db8::2", "", "alice@example.test") == 0  # same /64, other process
    assert client_network("::ffff:192.0.2.9") == "192.0.2.0/24"


# ------------------------------------------------------------------ small parts


def test_sender_list_matching() -> None:
    entries = ("friend@good.test", "partner.test")
    assert matches(entries, "Friend@Good.Test")
    assert not matches(entries, "other@good.test")
    assert matches(entries, "x@partner.test") and matches(entries, "x@mail.partner.test")
    assert not matches(entries, "x@notpartner.test")


def test_dnsbl_query_names() -> None:
    assert dnsbl.query_name("192.0.2.1", "zen.example") == "1.2.0.192.zen.example"
    assert dnsbl.query_name("::ffff:192.0.2.1", "zen.example") == "1.2.0.192.zen.example"
    six = dnsbl.query_name("2001:db8::1", "zen.example")
    assert six is not None and six.startswith("1.0.0.0.") and six.endswith(".8.b.d.0.1.0.0.2.zen.example")
    assert dnsbl.query_name("not an ip", "zen.example") is None


def test_clamd_replies() -> None:
    assert clamav._parse(b"stream: OK\0") == clamav.ScanResult(False)
    assert clamav._parse(b"stream: Eicar-Test.UNOFFICIAL FOUND\0") == clamav.ScanResult(
        True, "Eicar-Test.UNOFFICIAL"
    )
    with pytest.raises(clamav.ClamdError):
        clamav._parse(b"INSTREAM size limit exceeded. ERROR\0")


def test_clamd_unreachable_and_too_large(tmp_path: Path) -> None:
    with pytest.raises(clamav.ClamdError):
        asyncio.run(clamav.scan(tmp_path / "none.sock", b"data", 1, 1024))
    result = asyncio.run(clamav.scan(tmp_path / "none.sock", b"x" * 2048, 1, 1024))
    assert result.skipped and not result.infected
    assert asyncio.run(clamav.ping(tmp_path / "none.sock")) is False


# ------------------------------------------------------------------ configuration


def test_filtering_defaults() -> None:
    settings = parse(GOOD).filtering
    assert (settings.spf, settings.dkim, settings.dmarc) == (True, True, True)
    assert settings.dnsbl == () and not settings.greylisting.enabled
    assert not settings.rspamd.enabled and settings.rspamd.on_failure == "accept"
    assert not settings.clamav.enabled and settings.clamav.on_failure == "tempfail"


def test_filtering_full_section() -> None:
    settings = parse(
        with_filtering(
            {
                "resolver": {"address": "127.0.0.1", "port": 5353},
                "dnsbl": [{"zone": "zen.spamhaus.org", "action": "tag"}],
                "greylisting": {"enabled": True, "delay": 60},
                "rspamd": {"enabled": True, "junk_score": 5, "reject_score": 12.5, "on_failure": "tempfail"},
                "clamav": {"enabled": True, "socket": "/run/clamav/x.ctl", "on_failure": "accept"},
                "sender_lists": {"Alice@example.test": {"allow": ["friend@x.test"], "block": ["spam.test"]}},
            }
        )
    ).filtering
    assert settings.resolver_port == 5353 and settings.dnsbl[0].action == "tag"
    assert settings.rspamd.reject_score == 12.5 and settings.clamav.on_failure == "accept"
    lists = settings.lists_of("alice@example.test")
    assert lists is not None and lists.block == ("spam.test",)


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"spf": "yes"}, "filtering.spf"),
        ({"surprise": 1}, "filtering.surprise"),
        ({"resolver": {"address": "dns.example"}}, "filtering.resolver.address"),
        ({"dnsbl": [{"zone": "not a zone"}]}, "filtering.dnsbl[0].zone"),
        ({"dnsbl": [{"zone": "zen.spamhaus.org", "action": "drop"}]}, "filtering.dnsbl[0].action"),
        ({"dnsbl": [{"zone": "a.test"}, {"zone": "a.test"}]}, "filtering.dnsbl[1].zone"),
        ({"greylisting": {"delay": 600, "retry_window": 300}}, "filtering.greylisting.retry_window"),
        ({"greylisting": {"path": "relative/file"}}, "filtering.greylisting.path"),
        ({"rspamd": {"on_failure": "maybe"}}, "filtering.rspamd.on_failure"),
        ({"rspamd": {"junk_score": 10, "reject_score": 5}}, "filtering.rspamd.reject_score"),
        ({"rspamd": {"timeout": 0}}, "filtering.rspamd.timeout"),
        ({"rspamd": {"controller_password": "a\nb"}}, "filtering.rspamd.controller_password"),
        ({"clamav": {"socket": "clamd.ctl"}}, "filtering.clamav.socket"),
        ({"clamav": {"max_size": 10}}, "filtering.clamav.max_size"),
        ({"sender_lists": {"nobody@example.test": {}}}, "filtering.sender_lists.nobody@example.test"),
        (
            {"sender_lists": {"alice@example.test": {"allow": ["not valid"]}}},
            "filtering.sender_lists.alice@example.test.allow[0]",
        ),
    ],
)
def test_filtering_errors_name_the_key(section: dict, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(with_filtering(section))
    assert error.value.key == key
