"""DNS block lists: the client's address, reversed, looked up below each configured zone.

A listed address has an A record in 127.0.0.0/8. Spamhaus answers 127.255.255.x when it
refuses the query (public resolvers, over the free limit): that is no listing, and is logged
so the admin notices. A lookup that fails counts as not listed (fail-open): a DNS outage
must not stop all mail.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass

import dns.asyncresolver

from .. import metrics
from ..config import DnsblList
from .resolver import DnsTemporaryError, a_records

log = logging.getLogger("mailroom.filtering")


@dataclass(frozen=True)
class Listing:
    zone: str
    action: str  # reject, junk, tag
    answer: str  # the A record, e.g. 127.0.0.2


def query_name(ip: str, zone: str) -> str | None:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        reversed_ip = ".".join(reversed(str(address).split(".")))
    else:
        reversed_ip = ".".join(reversed(address.exploded.replace(":", "")))
    return f"{reversed_ip}.{zone}"


async def _one(resolver: dns.asyncresolver.Resolver, ip: str, entry: DnsblList) -> Listing | None:
    name = query_name(ip, entry.zone)
    if name is None:
        return None
    started = time.monotonic()
    try:
        answers = await a_records(resolver, name)
    except DnsTemporaryError as exc:
        metrics.FILTER_ENGINE_ERRORS.labels("dnsbl", "timeout" if "Timeout" in str(exc) else "error").inc()
        log.warning("dnsbl lookup failed zone=%s: %s", entry.zone, exc)
        return None
    finally:
        metrics.FILTER_SCAN_SECONDS.labels("dnsbl").observe(time.monotonic() - started)
    listed = [a for a in answers if a.startswith("127.") and not a.startswith("127.255.255.")]
    if not listed and answers:
        log.warning("dnsbl zone=%s refused the query (answered %s)", entry.zone, ",".join(answers))
    return Listing(entry.zone, entry.action, listed[0]) if listed else None


async def check(resolver: dns.asyncresolver.Resolver, ip: str, lists: tuple[DnsblList, ...]) -> list[Listing]:
    """Every listing of ip, all zones asked at once."""
    if not lists:
        return []
    found = await asyncio.gather(*(_one(resolver, ip, entry) for entry in lists))
    return [listing for listing in found if listing is not None]
