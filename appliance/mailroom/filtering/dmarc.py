"""DMARC (RFC 7489) evaluated on our own SPF and DKIM results.

The policy record is looked up at _dmarc.<From domain>, else at _dmarc.<organizational
domain> (Public Suffix List, from the publicsuffixlist package). DMARC passes when SPF
passed for an aligned MAIL FROM domain or a DKIM signature passed for an aligned d=
(relaxed: same organizational domain; strict: the same name). On failure the policy is
p= (or sp= for a subdomain found through the organizational record), sampled by pct=.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import getaddresses

import dns.asyncresolver

from .authresults import MethodResult, header_values
from .dkim import DkimResult
from .resolver import DnsTemporaryError, txt_records
from .spf import SpfResult

POLICIES = ("none", "quarantine", "reject")


@functools.lru_cache(maxsize=1)
def _psl():  # type: ignore[no-untyped-def]
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    domain = domain.lower().rstrip(".")
    return _psl().privatesuffix(domain) or domain


@dataclass(frozen=True)
class Record:
    policy: str
    subdomain_policy: str
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100


def parse_record(text: bytes) -> Record | None:
    """The policy of a v=DMARC1 record; None when it is not one (RFC 7489 6.3, 6.6.3)."""
    try:
        value = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    tags: dict[str, str] = {}
    for part in value.split(";"):
        name, eq, tag_value = part.partition("=")
        if eq:
            tags.setdefault(name.strip().lower(), tag_value.strip())
    parts = [p.strip() for p in value.split(";")]
    if not parts or parts[0].replace(" ", "") != "v=DMARC1":
        return None
    policy = tags.get("p", "").lower()
    if policy not in POLICIES:
        # An invalid or missing p= with a valid rua= counts as p=none (6.6.3); otherwise no policy.
        if "rua" not in tags:
            return None
        policy = "none"
    subdomain = tags.get("sp", policy).lower()
    if subdomain not in POLICIES:
        subdomain = policy
    try:
        pct = max(0, min(100, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    adkim = "s" if tags.get("adkim", "r").lower() == "s" else "r"
    aspf = "s" if tags.get("aspf", "r").lower() == "s" else "r"
    return Record(policy, subdomain, adkim, aspf, pct)


@dataclass(frozen=True)
class DmarcResult:
    result: str  # pass, fail, none, temperror, permerror
    from_domain: str
    policy: str = "none"  # what the domain asks for on failure (after sp=)
    disposition: str = "none"  # what applies to this message: none, quarantine, reject
    reason: str = ""

    @property
    def authres(self) -> MethodResult:
        comment = (
            f"p={self.policy} dis={self.disposition}" if self.result in ("pass", "fail") else self.reason
        )
        props = (("header.from", self.from_domain),) if self.from_domain else ()
        return MethodResult("dmarc", self.result, comment, props)


def from_domain(message: bytes) -> str | None:
    """The domain of the one author address; None when there is not exactly one (RFC 7489 6.6.1)."""
    values = header_values(message, "From")
    if len(values) != 1:
        return None
    addresses = [a for _, a in getaddresses(values) if a]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    domain = addresses[0].rpartition("@")[2].strip().lower().rstrip(".")
    return domain or None


def aligned(identifier: str, author: str, mode: str) -> bool:
    identifier, author = identifier.lower().rstrip("."), author.lower().rstrip(".")
    if mode == "s":
        return identifier == author
    return organizational_domain(identifier) == organizational_domain(author)


async def lookup(resolver: dns.asyncresolver.Resolver, domain: str) -> tuple[Record | None, bool]:
    """(record, found at the organizational domain instead of the From domain)."""
    for name, inherited in ((domain, False), (organizational_domain(domain), True)):
        if inherited and name == domain:
            break
        records = [r for r in await txt_records(resolver, f"_dmarc.{name}") if r[:8].upper() == b"V=DMARC1"]
        if len(records) == 1:
            parsed = parse_record(records[0])
            if parsed is not None:
                return parsed, inherited
        if len(records) > 1:  # several records: none applies (6.6.3)
            return None, inherited
    return None, False


async def check(
    message: bytes,
    spf: SpfResult | None,
    dkim: list[DkimResult],
    resolver: dns.asyncresolver.Resolver,
    sample: Callable[[], float] = random.random,
) -> DmarcResult:
    author = from_domain(message)
    if author is None:
        return DmarcResult("permerror", "", reason="not exactly one From address")
    try:
        record, inherited = await lookup(resolver, author)
    except DnsTemporaryError:
        return DmarcResult("temperror", author, reason="policy lookup failed")
    if record is None:
        return DmarcResult("none", author, reason="no policy")
    policy = record.subdomain_policy if inherited else record.policy
    spf_ok = (
        spf is not None
        and spf.result == "pass"
        and spf.scope == "mailfrom"
        and aligned(spf.domain, author, record.aspf)
    )
    dkim_ok = any(d.result == "pass" and aligned(d.domain, author, record.adkim) for d in dkim)
    if spf_ok or dkim_ok:
        return DmarcResult("pass", author, policy, "none")
    disposition = policy
    if record.pct < 100 and sample() * 100 >= record.pct:
        # Not sampled (6.6.4): the next less strict treatment.
        disposition = {"reject": "quarantine", "quarantine": "none"}.get(policy, "none")
    return DmarcResult("fail", author, policy, disposition)
