"""Sequence sets: `1:5,7,10:*` (RFC 3501 9, sequence-set) and `$` (RFC 5182, SEARCHRES)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

MAX_NUMBER = 4294967295  # RFC 3501 9, number: unsigned 32-bit
STAR = None  # the "*" of a sequence set: the largest number in use


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """Ranges as written, `(first, last)` with None for `*`; `saved` is the `$` of SEARCHRES."""

    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False

    def __post_init__(self) -> None:
        if self.saved == bool(self.ranges):
            raise ValueError("a sequence set is either '$' or a non-empty list of ranges")
        for pair in self.ranges:
            for n in pair:
                if n is not None and not 1 <= n <= MAX_NUMBER:
                    raise ValueError(f"sequence number out of range: {n}")

    @classmethod
    def parse(cls, text: str) -> SequenceSet:
        if text == "$":
            return cls(saved=True)
        ranges = []
        for item in text.split(","):
            first, sep, last = item.partition(":")
            a = _number(first)
            ranges.append((a, _number(last) if sep else a))
        return cls(tuple(ranges))

    def to_str(self) -> str:
        if self.saved:
            return "$"
        return ",".join(_str(a) if a == b else f"{_str(a)}:{_str(b)}" for a, b in self.ranges)

    def resolve(self, largest: int) -> Iterator[int]:
        """The numbers of the set, in order of appearance, `*` standing for `largest`.

        A range is the same in either order (RFC 3501 9: "2:4" and "4:2" are equivalent);
        duplicates are not removed. With an empty mailbox (largest 0) `*` yields nothing.
        """
        if self.saved:
            raise ValueError("'$' is resolved by the session from its saved search result")
        for a, b in self.ranges:
            lo = largest if a is None else a
            hi = largest if b is None else b
            lo, hi = min(lo, hi), max(lo, hi)
            yield from range(max(lo, 1), min(hi, largest) + 1)

    def contains(self, n: int, largest: int) -> bool:
        for a, b in self.ranges:
            lo = largest if a is None else a
            hi = largest if b is None else b
            if min(lo, hi) <= n <= max(lo, hi):
                return True
        return False


def _number(text: str) -> int | None:
    if text == "*":
        return None
    if not text.isascii() or not text.isdigit() or text[0] == "0" or len(text) > 10:
        raise ValueError(f"bad sequence number {text!r}")
    n = int(text)
    if n > MAX_NUMBER:
        raise ValueError(f"sequence number out of range: {text}")
    return n


def _str(n: int | None) -> str:
    return "*" if n is None else str(n)
