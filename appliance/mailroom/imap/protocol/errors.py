"""What the parser hands back instead of a command when the input is not one."""

from __future__ import annotations

from dataclasses import dataclass


class SyntaxProblem(ValueError):
    """Raised inside the parser for malformed input; never escapes `CommandParser.feed`."""

    def __init__(self, message: str, code: str | None = None, status: str = "BAD") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


@dataclass(frozen=True, slots=True)
class ParseError:
    """A command that could not be parsed.

    `tag` is the client's tag when one could be read: the answer is then a tagged `status`
    response, otherwise an untagged BAD (RFC 3501 7.1.3). `code` is a response code such as
    TOOBIG. `fatal` means the parser cannot find the next command boundary any more (a
    non-synchronizing literal above the limit): the caller sends BYE and closes.
    """

    tag: str | None
    message: str
    code: str | None = None
    status: str = "BAD"
    fatal: bool = False

    def to_response(self) -> bytes:
        code = f"[{self.code}] " if self.code else ""
        return f"{self.tag or '*'} {self.status} {code}{self.message}\r\n".encode("ascii", "replace")
