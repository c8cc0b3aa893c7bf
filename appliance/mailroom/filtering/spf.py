"""SPF (RFC 7208) of the envelope sender, or of the HELO name for the null sender, with pyspf.

pyspf looks names up through a module-level function; smtpd has one configuration per
process, so that function is set once to ask the configured resolver. pyspf blocks, so the
check runs in a worker thread, with pyspf's own limits (10 DNS mechanisms, 2 void lookups)
and a limit on the time of all its lookups together.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import dns.resolver
import spf as pyspf

from .authresults import MethodResult
from .resolver import pyspf_lookup

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")


@dataclass(frozen=True)
class SpfResult:
    result: str
    domain: str  # the domain checked: of the MAIL FROM address, else the HELO name
    scope: str  # mailfrom or helo
    explanation: str = ""
    checked: str = ""  # what smtp.mailfrom / smtp.helo reports

    @property
    def authres(self) -> MethodResult:
        prop = f"smtp.{self.scope}"
        return MethodResult("spf", self.result, self.explanation, ((prop, self.checked),))


def use_resolver(resolver: dns.resolver.Resolver) -> None:
    pyspf.DNSLookup = pyspf_lookup(resolver)


def check_blocking(ip: str, mail_from: str, helo: str, timeout: float) -> SpfResult:
    helo = (helo or "").strip().rstrip(".")
    if mail_from and "@" in mail_from:
        sender, scope, checked = mail_from, "mailfrom", mail_from
        domain = mail_from.rpartition("@")[2].lower()
    else:
        # RFC 7208 2.4: for the null sender, check the HELO identity as postmaster@helo.
        sender, scope, checked = f"postmaster@{helo}", "helo", helo
        domain = helo.lower()
    if not domain:
        return SpfResult("none", "", scope, "no identity to check", checked)
    try:
        query = pyspf.query(i=ip, s=sender, h=helo or domain, timeout=timeout, querytime=timeout)
        result, _code, _explanation = query.check()
    except Exception as exc:  # pyspf raises on odd input; that is a permanent error of the record
        return SpfResult("permerror", domain, scope, exc.__class__.__name__, checked)
    if result not in RESULTS:
        result = "permerror"
    # Only the result's kind goes into the header: a record's explanation is the sender's text.
    return SpfResult(result, domain, scope, f"{domain}: {_short(result)}", checked)


def _short(result: str) -> str:
    return {
        "pass": "sender is authorized",
        "fail": "sender is not authorized",
        "softfail": "sender is probably not authorized",
        "neutral": "no statement about the sender",
        "none": "no SPF record",
        "temperror": "DNS lookup failed",
        "permerror": "SPF record is broken",
    }[result]


async def check(ip: str, mail_from: str, helo: str, timeout: float) -> SpfResult:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, check_blocking, ip, mail_from, helo, timeout)
