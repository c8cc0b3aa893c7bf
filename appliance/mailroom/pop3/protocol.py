"""POP3 without I/O: parsing command lines, formatting responses, messages on the wire.

RFC 1939 (POP3), RFC 2449 (CAPA, response codes), RFC 2595 (STLS), RFC 3206 (the SYS and
AUTH response codes), RFC 5034 (AUTH, SASL PLAIN as in RFC 4616).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

# RFC 2449 4: a command line is at most 255 octets including the CRLF.
MAX_COMMAND_LINE = 255
# AUTH lines and SASL responses: RFC 5034 4 lets them exceed 255 octets (long passwords in base64).
MAX_AUTH_LINE = 2048
CRLF = b"\r\n"

# Commands by state. APOP is not offered: it needs the plaintext password on the server.
AUTHORIZATION_COMMANDS = frozenset({"USER", "PASS", "AUTH", "CAPA", "STLS", "QUIT"})
TRANSACTION_COMMANDS = frozenset(
    {"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT", "TOP", "UIDL", "CAPA"}
)
KNOWN_COMMANDS = AUTHORIZATION_COMMANDS | TRANSACTION_COMMANDS

# RFC 2449 8 and RFC 3206 response codes.
IN_USE = "IN-USE"
LOGIN_DELAY = "LOGIN-DELAY"
SYS_TEMP = "SYS/TEMP"
SYS_PERM = "SYS/PERM"
AUTH = "AUTH"


class CommandError(ValueError):
    """A command line that cannot be parsed; the text is the -ERR reply."""


@dataclass(frozen=True, slots=True)
class Command:
    keyword: str  # upper case
    argument: str  # everything after the first space, as sent (PASS keeps its spaces)

    @property
    def args(self) -> list[str]:
        return self.argument.split()


def parse_command(line: bytes, limit: int = MAX_COMMAND_LINE) -> Command:
    """Parse one command line (with or without its line end)."""
    if len(line) > limit:
        raise CommandError("Line too long")
    line = line.removesuffix(b"\n").removesuffix(b"\r")
    if b"\r" in line or b"\n" in line or b"\0" in line:
        raise CommandError("Invalid characters in command")
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("Command is not valid UTF-8") from None
    keyword, _, argument = text.partition(" ")
    # RFC 2449 3: keywords are three or four printable ASCII characters.
    if not 3 <= len(keyword) <= 4 or not keyword.isascii() or not keyword.isalpha():
        raise CommandError("Unknown command")
    return Command(keyword.upper(), argument)


def ok(text: str = "") -> bytes:
    return (f"+OK {text}" if text else "+OK").encode("utf-8") + CRLF


def err(text: str, code: str | None = None) -> bytes:
    return (f"-ERR [{code}] {text}" if code else f"-ERR {text}").encode("utf-8") + CRLF


def multiline(first: bytes, lines: list[str] | list[bytes]) -> bytes:
    """A +OK line followed by dot-stuffed lines and the terminating '.'."""
    body = [line.encode("utf-8") if isinstance(line, str) else line for line in lines]
    return first + b"".join(dot_stuff(line) + CRLF for line in body) + b"." + CRLF


def dot_stuff(line: bytes) -> bytes:
    return b"." + line if line.startswith(b".") else line


def _lines(message: bytes) -> list[bytes]:
    """The message's lines without line ends; LF or CRLF in the file, no empty last line."""
    lines = message.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line.removesuffix(b"\r") for line in lines]


def wire_size(message: bytes) -> int:
    """Octets of the message as sent: every line ended by CRLF (RFC 1939 11), before dot-stuffing.

    For a Maildir file with LF line ends that is its size plus its number of LFs.
    """
    if not message:
        return 0
    size = len(message) + message.count(b"\n") - message.count(b"\r\n")
    if not message.endswith(b"\n"):
        size += 2  # the last line gets its CRLF on the wire
    return size


def message_response(message: bytes, body_lines: int | None = None) -> bytes:
    """RETR (body_lines None) or TOP: +OK, the dot-stuffed message with CRLF, the final '.'."""
    lines = _lines(message)
    if body_lines is not None:
        try:
            blank = lines.index(b"")
        except ValueError:
            blank = len(lines)  # headers only: TOP returns all of them
        lines = lines[: blank + 1 + body_lines]
    head = ok(f"{wire_size(message)} octets") if body_lines is None else ok()
    return multiline(head, lines)


def uidl(uidvalidity: int, uid: int) -> str:
    """The unique-id of a message: stable across sessions while UIDVALIDITY stays (RFC 1939 7:
    1 to 70 characters in 0x21-0x7E)."""
    return f"{uidvalidity}.{uid}"


def parse_message_number(arg: str, count: int) -> int | None:
    """A message number 1..count, or None."""
    if not arg.isascii() or not arg.isdigit() or len(arg) > 10:
        return None
    number = int(arg)
    return number if 1 <= number <= count else None


def decode_plain(response: str) -> tuple[str, str] | None:
    """SASL PLAIN (RFC 4616): base64 of authzid NUL authcid NUL password → (authcid, password).

    An authorization identity other than the authentication identity is refused (None):
    nobody may log in as somebody else here.
    """
    try:
        raw = base64.b64decode(response.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    parts = raw.split(b"\0")
    if len(parts) != 3:
        return None
    try:
        authzid, authcid, password = (part.decode("utf-8") for part in parts)
    except UnicodeDecodeError:
        return None
    if not authcid or not password or (authzid and authzid.lower() != authcid.lower()):
        return None
    return authcid, password


def capabilities(*, authenticated: bool, stls: bool, login_allowed: bool) -> list[str]:
    """The CAPA list (RFC 2449 6). USER and SASL only where a login may happen (over TLS);
    STLS only where it is offered."""
    caps = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
    if not authenticated:
        if login_allowed:
            caps += ["USER", "SASL PLAIN"]
        if stls:
            caps.append("STLS")
    caps.append("IMPLEMENTATION Mailroom")
    return caps
