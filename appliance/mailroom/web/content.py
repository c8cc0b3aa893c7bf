"""What webd serves, as pure functions of the running configuration.

The servers and ports mail clients are told about come from the same mailroom.yml the daemons
listen by, so a changed port changes what clients are told. IMAP defaults to 993/143 while the
configuration has no imap section.
"""

from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from ..config import Config, is_valid_address, split_address

# Listener name → (protocol, socket type); an implicit-TLS name is the plain one plus "s".
_KINDS = {
    "imaps": ("imap", "SSL"),
    "imap": ("imap", "STARTTLS"),
    "pop3s": ("pop3", "SSL"),
    "pop3": ("pop3", "STARTTLS"),
    "submissions": ("smtp", "SSL"),
    "submission": ("smtp", "STARTTLS"),
}
DEFAULT_IMAP = (("imaps", 993), ("imap", 143))


@dataclass(frozen=True)
class Server:
    protocol: str  # imap | pop3 | smtp
    port: int
    socket_type: str  # SSL (implicit TLS) | STARTTLS


def servers(config: Config) -> list[Server]:
    """Client-facing services, preferred first: IMAP, POP3, then submission; implicit TLS first."""
    imap = getattr(config, "imap_listeners", ())
    pairs = [(li.name, li.port) for li in imap] or list(DEFAULT_IMAP)
    pairs += [(li.name, li.port) for li in config.pop3_listeners]
    pairs += [(li.name, li.port) for li in config.smtp_listeners if li.name != "mx"]
    found: list[Server] = []
    for name, port in pairs:
        protocol, socket_type = _KINDS[name]
        server = Server(protocol, port, socket_type)
        if server not in found:
            found.append(server)
    order = {"imap": 0, "pop3": 1, "smtp": 2}
    return sorted(found, key=lambda s: (order[s.protocol], s.socket_type != "SSL"))


def client_hostname(config: Config) -> str:
    return config.web.client_hostname if config.web and config.web.client_hostname else config.hostname


def mail_domain(config: Config, email: str | None, host: str | None) -> str:
    """The domain a request is about: of the address asked for, else of the Host, else the first."""
    if email and "@" in email:
        domain = split_address(email)[1]
        if domain in config.domains:
            return domain
    if host:
        host = host.lower().split(":", 1)[0]
        for domain in config.domains:
            if host == domain or host.endswith("." + domain):
                return domain
    return config.domains[0]


def autoconfig_xml(config: Config, domain: str) -> bytes:
    """Thunderbird's autoconfig (clientConfig 1.1) for one of our domains."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=domain)
    ET.SubElement(provider, "domain").text = domain
    ET.SubElement(provider, "displayName").text = f"Mail for {domain}"
    ET.SubElement(provider, "displayShortName").text = domain
    for server in servers(config):
        element = ET.SubElement(
            provider,
            "outgoingServer" if server.protocol == "smtp" else "incomingServer",
            type=server.protocol,
        )
        ET.SubElement(element, "hostname").text = client_hostname(config)
        ET.SubElement(element, "port").text = str(server.port)
        ET.SubElement(element, "socketType").text = server.socket_type
        ET.SubElement(element, "authentication").text = "password-cleartext"
        ET.SubElement(element, "username").text = "%EMAILADDRESS%"
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def autodiscover_xml(config: Config, email: str) -> bytes:
    """Outlook's POX Autodiscover answer (the 2006a response schema) for one address."""
    ns = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
    root = ET.Element(
        "Autodiscover", xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
    )
    response = ET.SubElement(root, "Response", xmlns=ns)
    account = ET.SubElement(response, "Account")
    ET.SubElement(account, "AccountType").text = "email"
    ET.SubElement(account, "Action").text = "settings"
    chosen: dict[str, Server] = {}
    for server in servers(config):  # implicit TLS first: one IMAP (else POP3) and one SMTP
        chosen.setdefault(server.protocol, server)
    for server in chosen.values():
        if server.protocol == "pop3" and "imap" in chosen:
            continue
        protocol = ET.SubElement(account, "Protocol")
        ET.SubElement(protocol, "Type").text = server.protocol.upper()
        ET.SubElement(protocol, "Server").text = client_hostname(config)
        ET.SubElement(protocol, "Port").text = str(server.port)
        ET.SubElement(protocol, "LoginName").text = email
        ET.SubElement(protocol, "SPA").text = "off"
        if server.socket_type == "SSL":
            ET.SubElement(protocol, "SSL").text = "on"
        else:
            ET.SubElement(protocol, "Encryption").text = "TLS"
        ET.SubElement(protocol, "AuthRequired").text = "on"
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def mobileconfig(config: Config, email: str) -> bytes:
    """An Apple configuration profile (unsigned) with one mail account for the address."""
    email = email.lower()
    if not is_valid_address(email) or split_address(email)[1] not in config.domains:
        raise ValueError("not an address of this server")
    found = servers(config)
    incoming = next((s for s in found if s.protocol == "imap"), None) or next(
        (s for s in found if s.protocol == "pop3"), None
    )
    outgoing = next((s for s in found if s.protocol == "smtp"), None)
    if incoming is None or outgoing is None:
        raise ValueError("no incoming or outgoing mail service configured")
    # Stable identifiers: reinstalling the profile replaces the account instead of adding one.
    seed = uuid.uuid5(uuid.NAMESPACE_DNS, f"{email}.{config.hostname}")
    host = client_hostname(config)
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{'.'.join(reversed(host.split('.')))}.mailroom.mail.{seed}",
        "PayloadUUID": str(uuid.uuid5(seed, "account")).upper(),
        "PayloadDisplayName": email,
        "EmailAccountDescription": email,
        "EmailAccountType": "EmailTypeIMAP" if incoming.protocol == "imap" else "EmailTypePOP",
        "EmailAddress": email,
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerHostName": host,
        "IncomingMailServerPortNumber": incoming.port,
        "IncomingMailServerUseSSL": True,
        "IncomingMailServerUsername": email,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerHostName": host,
        "OutgoingMailServerPortNumber": outgoing.port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerUsername": email,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{'.'.join(reversed(host.split('.')))}.mailroom.{seed}",
        "PayloadUUID": str(uuid.uuid5(seed, "profile")).upper(),
        "PayloadDisplayName": f"Mail ({email})",
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile)


def mta_sts_policy(config: Config) -> bytes:
    """The RFC 8461 policy file: version, mode, one mx line per pattern, max_age; CRLF lines."""
    assert config.web is not None
    policy = config.web.mta_sts
    lines = ["version: STSv1", f"mode: {policy.mode}"]
    lines += [f"mx: {mx}" for mx in (policy.mx or (config.hostname,))]
    lines.append(f"max_age: {policy.max_age}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
