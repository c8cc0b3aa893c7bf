"""DNS for the checks: one async resolver (DNSBL, DKIM keys, DMARC) and one blocking
resolver for pyspf, which runs in a worker thread, both pointed at the configured server."""

from __future__ import annotations

from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

from ..config import Filtering


class DnsTemporaryError(Exception):
    """No answer now (timeout, SERVFAIL): the check result is temperror."""


def async_resolver(settings: Filtering) -> dns.asyncresolver.Resolver:
    if settings.resolver_address is None:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [settings.resolver_address]
        resolver.port = settings.resolver_port
    resolver.lifetime = settings.dns_timeout
    resolver.timeout = min(2.0, settings.dns_timeout)
    return resolver


def blocking_resolver(settings: Filtering) -> dns.resolver.Resolver:
    if settings.resolver_address is None:
        resolver = dns.resolver.Resolver()
    else:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [settings.resolver_address]
        resolver.port = settings.resolver_port
    resolver.lifetime = settings.dns_timeout
    resolver.timeout = min(2.0, settings.dns_timeout)
    return resolver


async def txt_records(resolver: dns.asyncresolver.Resolver, name: str) -> list[bytes]:
    """The TXT records of name, each with its strings joined; [] when there are none."""
    try:
        answer = await resolver.resolve(dns.name.from_text(name), "TXT", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise DnsTemporaryError(f"{name} TXT: {exc.__class__.__name__}") from None
    except dns.exception.DNSException as exc:  # a name too long, a bad label: there is nothing to find
        if isinstance(exc, dns.name.NameTooLong | dns.name.LabelTooLong | dns.name.EmptyLabel):
            return []
        raise DnsTemporaryError(f"{name} TXT: {exc.__class__.__name__}") from None
    return [b"".join(r.strings) for r in answer]


async def a_records(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    try:
        answer = await resolver.resolve(dns.name.from_text(name), "A", search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise DnsTemporaryError(f"{name} A: {exc.__class__.__name__}") from None
    return [r.to_text() for r in answer]


def pyspf_lookup(resolver: dns.resolver.Resolver) -> Any:
    """A replacement for pyspf's DNSLookup that asks our resolver (same answers, same errors)."""
    import spf

    def lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20) -> list[Any]:
        found: list[Any] = []
        try:
            answer = resolver.resolve(name, qtype, lifetime=min(timeout, resolver.lifetime), search=False)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            return found
        except dns.exception.DNSException as exc:
            raise spf.TempError(f"DNS {exc.__class__.__name__}") from None
        for rdata in answer:
            if qtype in ("A", "AAAA"):
                found.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                found.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                found.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                found.append(((name, qtype), rdata.strings))
        return found

    return lookup
