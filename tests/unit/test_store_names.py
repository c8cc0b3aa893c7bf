"""Modified UTF-7 folder names (RFC 3501 5.1.3) and the names that must never reach the disk."""

from __future__ import annotations

import pytest

from mailroom.store import InvalidFolderName
from mailroom.store.names import decode, directory_name, encode, from_directory, normalize


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("INBOX", "INBOX"),
        ("Tom & Jerry", "Tom &- Jerry"),
        ("&", "&-"),
        ("&&", "&-&-"),
        ("Entwürfe", "Entw&APw-rfe"),
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
        ("Gesendete Objekte", "Gesendete Objekte"),
        ("Ünïcödé", "&ANw-n&AO8-c&APY-d&AOk-"),
        ("📬 Post", "&2D3c7A- Post"),  # non-BMP: a UTF-16 surrogate pair
        ("a\U0001f600b", "a&2D3eAA-b"),
    ],
)
def test_encode_and_decode_round_trip(text: str, wire: str) -> None:
    assert encode(text) == wire
    assert decode(wire) == text


@pytest.mark.parametrize(
    "wire",
    [
        "&",  # unterminated
        "&AGE-",  # printable ASCII ('a') must not be encoded
        "&ANw",  # no '-'
        "&ANw-&AOQ-",  # two adjacent encoded runs: not the canonical form
        "&AN-",  # bits left over
        "&ANx-",  # non-zero padding bits
        "&2D0-",  # lone high surrogate
        "&A/w-",  # '/' instead of ','
        "Entwürfe",  # raw 8-bit
        "a\tb",
    ],
)
def test_decode_refuses_broken_or_non_canonical_names(wire: str) -> None:
    with pytest.raises(InvalidFolderName):
        decode(wire)


def test_encode_refuses_unpaired_surrogates() -> None:
    with pytest.raises(InvalidFolderName):
        encode("a\ud800b")


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        "../x",
        "a..b",
        ".hidden",
        "trailing.",
        "a/b",
        "/etc/passwd",
        "../../../../etc",
        "nul\x00byte",
        "new\nline",
        "del\x7f",
        "c1\x85",
        "wild*",
        "wild%",
        "x" * 255,
        "ü" * 100,  # fine in characters, too long in modified UTF-7
    ],
)
def test_names_that_could_escape_or_not_fit_are_refused(name: str) -> None:
    with pytest.raises(InvalidFolderName):
        normalize(name)


def test_inbox_is_case_insensitive_and_directories_are_encoded() -> None:
    assert normalize("inbox") == "INBOX"
    assert normalize("Inbox.Sub") == "INBOX.Sub"
    assert normalize("Lists.python") == "Lists.python"
    assert directory_name("Lists.Entwürfe") == ".Lists.Entw&APw-rfe"
    assert from_directory(".Lists.Entw&APw-rfe") == "Lists.Entwürfe"
    assert normalize("x" * 200) == "x" * 200
    for entry in (".", "..", "cur", ".INBOX", ".a..b", ".&AGE-", ".inbox.x"):
        assert from_directory(entry) is None
    with pytest.raises(InvalidFolderName):
        directory_name("INBOX")
