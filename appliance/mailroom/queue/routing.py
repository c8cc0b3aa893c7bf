"""Where mail for a domain goes: MX records by preference, else the domain's own address.

RFC 5321 5.1: the MX hosts in order of preference (equal preferences in random
order); a domain without MX records is its own mail host (A/AAAA, "implicit
MX"); a null MX (RFC 7505: one record "0 .") means the domain takes no mail.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.resolver

from ..config import Delivery


class RouteError(Exception):
    """No route now; permanent says whether it is worth trying again later."""

    def __init__(self, message: str, permanent: bool, status: str, reason: str = "dns") -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status  # enhanced status code for the DSN
        self.reason = reason  # the deferral's metric label


@dataclass(frozen=True)
class Host:
    name: str
    addresses: tuple[str, ...]


def make_resolver(settings: Delivery, timeout: float = 10.0) -> dns.asyncresolver.Resolver:
    if settings.resolver_address is None:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [settings.resolver_address]
        resolver.port = settings.resolver_port
    resolver.lifetime = timeout
    return resolver


class Router:
    def __init__(self, resolver: dns.asyncresolver.Resolver) -> None:
        self.resolver = resolver

    async def _addresses(self, name: str) -> tuple[str, ...]:
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self.resolver.resolve(name, rdtype)
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                continue
            found.extend(r.to_text() for r in answer)
        return tuple(found)

    async def route(self, domain: str) -> list[Host]:
        """The hosts to try, in order; RouteError when there are none."""
        try:
            try:
                answer = await self.resolver.resolve(domain, "MX")
                records = [(r.preference, r.exchange.to_text(omit_final_dot=True)) for r in answer]
            except dns.resolver.NoAnswer:
                records = []
            if len(records) == 1 and records[0][1] in ("", "."):
                raise RouteError(f"{domain} accepts no mail (null MX)", permanent=True, status="5.1.10")
            if not records:
                addresses = await self._addresses(domain)
                if not addresses:
                    raise RouteError(f"{domain} has no MX and no address", permanent=True, status="5.1.2")
                return [Host(domain, addresses)]
            random.shuffle(records)
            records.sort(key=lambda r: r[0])  # stable: equal preferences stay shuffled
            hosts: list[Host] = []
            for _, name in records:
                if name in ("", "."):
                    continue
                addresses = await self._addresses(name)
                if addresses:
                    hosts.append(Host(name, addresses))
            if not hosts:
                raise RouteError(f"no MX host of {domain} has an address", permanent=False, status="4.4.4")
            return hosts
        except dns.resolver.NXDOMAIN:
            raise RouteError(f"{domain} does not exist", permanent=True, status="5.1.2") from None
        except (dns.resolver.NoNameservers, dns.exception.Timeout, dns.resolver.NoAnswer) as exc:
            raise RouteError(
                f"DNS lookup for {domain} failed: {exc}", permanent=False, status="4.4.3"
            ) from None

    async def host(self, name: str) -> Host:
        """One named host (the smarthost) with its addresses; RouteError (temporary) when it has none."""
        try:
            addresses = await self._addresses(name)
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise RouteError(
                f"DNS lookup for {name} failed: {exc}", permanent=False, status="4.4.3"
            ) from None
        if not addresses:
            raise RouteError(f"{name} has no address", permanent=False, status="4.4.4")
        return Host(name, addresses)
