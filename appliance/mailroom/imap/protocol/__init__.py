"""IMAP without I/O: the incremental command parser and the response writer.

`CommandParser.feed(bytes)` gives commands (`commands.py`), `ParseError`s and framing events;
`responses` turns results into the exact octets to send.
"""

from .commands import Command
from .errors import ParseError
from .parser import CommandParser, ContinuationNeeded, IdleDone, SaslResponse
from .sequence import SequenceSet

__all__ = [
    "Command",
    "CommandParser",
    "ContinuationNeeded",
    "IdleDone",
    "ParseError",
    "SaslResponse",
    "SequenceSet",
]
