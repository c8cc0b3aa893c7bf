"""The DNS records an admin publishes for each mail domain (`mailroom dns`).

Everything comes from mailroom.yml and the files it names: the host name and
listeners, the DKIM keys (their public halves), the certificate (TLSA) and
the optional `dns:` section (public addresses, DMARC and MTA-STS choices).
Each record carries one sentence saying why it is there, in the spirit of an
operator output that explains itself. Three renderings: a table to read, a
zone-file snippet per zone to paste, and JSON for scripts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .accounts import Directory
from .config import Config, ConfigError, Listener, MtaSts, Web
from .dkim import SigningKey

TTL = 3600
# RFC 6186 / RFC 8314 services, the listener that provides each, and the SRV priority:
# implicit TLS first (RFC 8314 5.1), STARTTLS as the fallback.
SRV_SERVICES = (
    ("_submissions._tcp", "smtp", "submissions", 0),
    ("_submission._tcp", "smtp", "submission", 10),
    ("_imaps._tcp", "imap", "imaps", 0),
    ("_imap._tcp", "imap", "imap", 10),
    ("_pop3s._tcp", "pop3", "pop3s", 0),
    ("_pop3._tcp", "pop3", "pop3", 10),
)
MAX_TXT_STRING = 255  # one character-string of a TXT record (RFC 1035 3.3)


@dataclass(frozen=True)
class Record:
    zone: str  # the zone the record goes into (one of the domains, or the host name's parent)
    name: str  # fully qualified, without the final dot
    type: str
    value: str  # presentation form; for TXT the text itself, unquoted and unsplit
    why: str
    placeholder: bool = False  # the value is to be filled in by the admin
    elsewhere: bool = False  # not in the admin's zone (reverse DNS at the hosting provider)

    def rdata(self) -> str:
        """The value as a zone file writes it."""
        if self.type != "TXT":
            return self.value
        parts = [self.value[i : i + MAX_TXT_STRING] for i in range(0, len(self.value), MAX_TXT_STRING)]
        return " ".join(f'"{part}"' for part in parts or [""])


def mta_sts_policy(config: Config) -> str:
    """The MTA-STS policy (RFC 8461 3.2) at https://mta-sts.<domain>/.well-known/mta-sts.txt.

    Exactly the bytes webd serves (web.mta_sts); without a web section, the
    policy webd would serve with its defaults.
    """
    from .web.content import mta_sts_policy as served

    if config.web is None:
        config = dataclasses.replace(config, web=Web(listeners=()))
    return served(config).decode("ascii")


def mta_sts_mode(config: Config) -> str:
    return (config.web.mta_sts if config.web else MtaSts()).mode


def mta_sts_id(config: Config) -> str:
    """The policy id: it changes exactly when the policy text changes (RFC 8461 3.1: 1-32 alphanumerics)."""
    return hashlib.sha256(mta_sts_policy(config).encode()).hexdigest()[:20]


def tlsa_digest(certificate: bytes) -> str:
    """SHA-256 of the certificate's SubjectPublicKeyInfo: TLSA 3 1 1 (RFC 6698, RFC 7671)."""
    cert = x509.load_pem_x509_certificate(certificate)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def zone_of(name: str, config: Config) -> str:
    """The configured domain a name lies in (the longest), or the name's parent."""
    matches = [d for d in config.domains if name == d or name.endswith("." + d)]
    return max(matches, key=len) if matches else name.split(".", 1)[-1]


def _srv_value(listeners: Iterable[Listener], name: str, priority: int, host: str) -> str | None:
    for listener in listeners:
        if listener.name == name:
            return f"{priority} 1 {listener.port} {host}."
    return None


def records(
    config: Config, keys: tuple[SigningKey, ...] = (), certificate: bytes | None = None
) -> list[Record]:
    """Every record to publish: the host's first, then each domain's; TLSA when a certificate is given."""
    host = config.hostname
    # The name webd tells mail clients to use (autoconfig); the SRV records say the same.
    client_host = config.web.client_hostname if config.web else host
    host_zone = zone_of(host, config)
    out: list[Record] = []
    addresses = ((config.dns.ipv4, "A", "IPv4"), (config.dns.ipv6, "AAAA", "IPv6"))
    for address, rtype, family in addresses:
        if address:
            out.append(
                Record(host_zone, host, rtype, address, f"Other servers and your users reach {host} here.")
            )
        else:
            out.append(
                Record(
                    host_zone,
                    host,
                    rtype,
                    f"<public {family} address>",
                    f"Other servers and your users reach {host} here; the inventory sets no "
                    f"mailroom_public_{family.lower()}, so fill in the address (or leave it out if "
                    f"the host has no {family}).",
                    placeholder=True,
                )
            )
    out.append(
        Record(
            host_zone,
            host,
            "TXT",
            "v=spf1 a -all",
            "SPF for the host name itself: bounces (empty sender) are checked against the HELO name.",
        )
    )
    for address in (config.dns.ipv4, config.dns.ipv6):
        if address:
            out.append(
                Record(
                    host_zone,
                    ipaddress.ip_address(address).reverse_pointer,
                    "PTR",
                    f"{host}.",
                    "Reverse DNS: set by whoever owns the address (your hosting provider); many "
                    "servers refuse mail from an address whose name does not lead back to it.",
                    elsewhere=True,
                )
            )
    if certificate is not None:
        out.append(
            Record(
                host_zone,
                f"_25._tcp.{host}",
                "TLSA",
                f"3 1 1 {tlsa_digest(certificate)}",
                "DANE (RFC 7672): senders with DNSSEC insist on this key; only with a DNSSEC-signed "
                "zone, and publish the next key's record before the key changes.",
            )
        )

    directory = Directory(config)
    policy_id = mta_sts_id(config)
    mode = mta_sts_mode(config)
    served = (
        "webd serves it"
        if config.web
        else "webd serves it once the web section is on; until then senders find no policy, which is harmless"
    )
    listeners = {
        "smtp": config.smtp_listeners,
        "pop3": config.pop3_listeners,
        "imap": getattr(config, "imap_listeners", ()),
    }
    for domain in config.domains:
        report_to = config.dns.dmarc_report_to or f"postmaster@{domain}"
        unreachable = report_to.rsplit("@", 1)[1] in config.domains and not directory.resolve(report_to)
        note = f" ({report_to} reaches nobody yet: add a user or an alias)" if unreachable else ""
        out.append(
            Record(domain, domain, "MX", f"10 {host}.", f"Other servers deliver mail for {domain} to {host}.")
        )
        out.append(
            Record(domain, domain, "TXT", "v=spf1 mx -all", f"SPF: only {domain}'s MX hosts send its mail.")
        )
        for key in keys:
            if key.domain == domain:
                out.append(
                    Record(
                        domain,
                        key.record_name,
                        "TXT",
                        key.txt_record(),
                        f"DKIM: the public {'RSA' if key.algorithm == 'rsa-sha256' else 'Ed25519'} key "
                        f"that checks the signatures this host puts on {domain}'s mail "
                        f"(selector {key.selector}).",
                    )
                )
        out.append(
            Record(
                domain,
                f"_dmarc.{domain}",
                "TXT",
                f"v=DMARC1; p={config.dns.dmarc_policy}; rua=mailto:{report_to}",
                f"DMARC: mail claiming to be from {domain} that fails SPF and DKIM gets "
                f"p={config.dns.dmarc_policy}; daily reports go to {report_to}{note}.",
            )
        )
        report_domain = report_to.rsplit("@", 1)[1]
        if report_domain != domain:
            out.append(
                Record(
                    zone_of(report_domain, config),
                    f"{domain}._report._dmarc.{report_domain}",
                    "TXT",
                    "v=DMARC1",
                    f"{report_domain} agrees to receive {domain}'s DMARC reports (RFC 7489 7.1).",
                )
            )
        out.append(
            Record(
                domain,
                f"_mta-sts.{domain}",
                "TXT",
                f"v=STSv1; id={policy_id}",
                f"MTA-STS (RFC 8461): senders fetch the policy (mode {mode}) and refetch it when this "
                "id changes.",
            )
        )
        out.append(
            Record(
                domain,
                f"mta-sts.{domain}",
                "CNAME",
                f"{host}.",
                f"Where senders fetch the policy: https://mta-sts.{domain}/.well-known/mta-sts.txt, "
                f"with a certificate valid for that name ({served}).",
            )
        )
        out.append(
            Record(
                domain,
                f"_smtp._tls.{domain}",
                "TXT",
                f"v=TLSRPTv1; rua=mailto:{report_to}",
                f"TLS-RPT (RFC 8460): senders report failed TLS to {domain} to {report_to}.",
            )
        )
        for service, protocol, listener, priority in SRV_SERVICES:
            value = _srv_value(listeners[protocol], listener, priority, client_host)
            label = service.split(".")[0][1:]
            out.append(
                Record(
                    domain,
                    f"{service}.{domain}",
                    "SRV",
                    value or "0 0 0 .",
                    f"Mail clients find {label} at {client_host} (RFC 6186)."
                    if value
                    else f"Mail clients learn there is no {label} here (RFC 6186: target '.').",
                )
            )
        for name, client in (("autoconfig", "Thunderbird"), ("autodiscover", "Outlook")):
            out.append(
                Record(
                    domain,
                    f"{name}.{domain}",
                    "CNAME",
                    f"{host}.",
                    f"{client} looks up {name}.{domain} when a user sets up an account.",
                )
            )
    return out


def render_table(found: list[Record], policy: str) -> str:
    lines: list[str] = []
    zone = None
    for record in found:
        if record.zone != zone:
            zone = record.zone
            lines += ["", f"== zone {zone}"]
        flag = " (at your hosting provider)" if record.elsewhere else ""
        lines.append(f"{record.type:<6} {record.name}{flag}")
        lines.append(f"       {record.value}")
        lines.append(f"       -- {record.why}")
    lines += ["", "MTA-STS policy to serve at https://mta-sts.<domain>/.well-known/mta-sts.txt:"]
    lines += ["    " + line for line in policy.splitlines()]
    return "\n".join(lines[1:]) + "\n"


def render_zone(found: list[Record]) -> str:
    """Zone-file snippets, one per zone, with absolute names; placeholders commented out."""
    lines: list[str] = []
    zones = list(dict.fromkeys(r.zone for r in found))
    for zone in zones:
        # Absolute names and a TTL on each line: no $ORIGIN or $TTL to change the rest of a zone file.
        lines.append(f"; ---- zone {zone}")
        for record in found:
            if record.zone != zone:
                continue
            lines.append(f"; {record.why}")
            entry = f"{record.name}. {TTL} IN {record.type} {record.rdata()}"
            if record.placeholder or record.elsewhere:
                entry = "; " + entry
            lines.append(entry)
        lines.append("")
    return "\n".join(lines)


def split_zones(text: str) -> dict[str, str]:
    """The snippet of each zone in render_zone's output (for tests and scripts)."""
    zones: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("; ---- zone "):
            current = line.removeprefix("; ---- zone ")
            zones[current] = ""
        elif current is not None:
            zones[current] += line + "\n"
    return zones


def render_json(found: list[Record], policy: str) -> str:
    return json.dumps(
        {"ttl": TTL, "records": [asdict(r) for r in found], "mta_sts_policy": policy},
        indent=2,
    )


def certificate_of(config: Config) -> bytes:
    if config.tls_certificate is None:
        raise ConfigError("tls.certificate", "is not configured, so there is no TLSA record to make")
    try:
        data = config.tls_certificate.read_bytes()
        tlsa_digest(data)
    except OSError as exc:
        raise ConfigError(
            "tls.certificate", f"{config.tls_certificate} cannot be read: {exc.strerror}"
        ) from None
    except ValueError as exc:
        raise ConfigError(
            "tls.certificate", f"{config.tls_certificate} is not a PEM certificate ({exc})"
        ) from None
    return data
