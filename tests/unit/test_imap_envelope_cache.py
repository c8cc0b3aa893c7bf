"""The ENVELOPE cache of FETCH (imap/fetching.py) answers what parsing answers, and never the
envelope of another message: not after a flag change, nor for the same UID in a folder deleted
and made again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mailroom.imap import fetching
from mailroom.imap.message import envelope
from mailroom.imap.protocol.fetch import Attr
from mailroom.store import Folder, Maildir, Mode
from mailroom.store import folder as folder_module

ENVELOPE = (Attr("ENVELOPE"),)


def fetched(folder: Folder, uid: int) -> bytes:
    info = folder.message(uid)
    content = fetching.read_content(folder, uid, fetching.needs_content(ENVELOPE))
    return fetching.render(1, info, ENVELOPE, content, with_uid=False, with_modseq=False)


def filled(path: Path, subjects: list[str]) -> Folder:
    box = Maildir(path)
    box.create()
    for subject in subjects:
        box.deliver(f"From: a@example.test\nSubject: {subject}\n\nbody\n".encode())
    folder = Folder(path)
    folder.sync()
    return folder


def test_a_cached_envelope_is_the_parsed_one_and_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = filled(tmp_path / "a", ["first", "second"])
    first = fetched(folder, 2)
    assert b'"second"' in first
    assert first == b"* 1 FETCH (ENVELOPE " + envelope(folder.read(2)) + b")\r\n"
    monkeypatch.setattr(fetching.ParsedMessage, "envelope", lambda self: pytest.fail("parsed again"))
    assert fetched(folder, 2) == first
    folder.store_flags([2], ["\\Seen"], Mode.ADD)  # renamed: U= and the base stay
    assert fetched(folder, 2) == first


def test_the_same_uid_in_a_folder_made_again_is_another_message(tmp_path: Path) -> None:
    path = tmp_path / "b"
    old = filled(path, ["old one"])
    assert b'"old one"' in fetched(old, 1)
    shutil.rmtree(path)
    folder_module._registry.__init__()
    new = filled(path, ["new one"])
    assert b'"new one"' in fetched(new, 1)


def test_the_cache_stays_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetching, "ENVELOPES_MAX", 4)
    monkeypatch.setattr(fetching, "_ENVELOPES", {})
    folder = filled(tmp_path / "c", [f"m{i}" for i in range(10)])
    for uid in range(1, 11):
        assert f'"m{uid - 1}"'.encode() in fetched(folder, uid)
    assert len(fetching._ENVELOPES) <= 4
