"""IMAP parser properties: round trips, the malformed corpus, random input (no I/O).

Round trip (parse → serialise → parse gives the same value) as imap-codec tests it; the corpus
in imap_corpus/ holds inputs that must each come back as a ParseError and never as an exception.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailroom.imap.protocol import CommandParser, ContinuationNeeded, ParseError, SequenceSet
from mailroom.imap.protocol import commands as c
from mailroom.imap.protocol import fetch as f
from mailroom.imap.protocol import search as s
from mailroom.imap.protocol.lexer import ATOM_CHARS, TAG_CHARS

CORPUS = Path(__file__).parent / "imap_corpus"
# MAILROOM_FUZZ_SCALE=100 for a long run; the default keeps the unit tests fast.
SCALE = int(os.environ.get("MAILROOM_FUZZ_SCALE", "1"))
FAST = settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies ---------------------------------------------------------------------------------
tags = st.text(alphabet=sorted(chr(x) for x in TAG_CHARS), min_size=1, max_size=8)
atoms = st.text(alphabet=sorted(chr(x) for x in ATOM_CHARS), min_size=1, max_size=10)
keywords = atoms.filter(lambda a: not a.startswith("\\"))
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=20)
mailboxes = texts.filter(lambda n: n.upper() != "INBOX") | st.just("INBOX")
flags = st.one_of(
    st.sampled_from(["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"]),
    atoms.map(lambda a: "\\" + a),
    keywords,
)
flag_tuples = st.lists(flags, max_size=4).map(tuple)
numbers = st.integers(1, 4294967295)
modseqs = st.integers(0, 2**63 - 1)
seq_numbers = st.none() | numbers
sequence_sets = st.just(SequenceSet(saved=True)) | st.lists(
    st.tuples(seq_numbers, seq_numbers), min_size=1, max_size=4
).map(lambda r: SequenceSet(tuple(r)))
ranges = sequence_sets.filter(lambda x: not x.saved)
dates = st.dates(dt.date(1900, 1, 1), dt.date(2200, 12, 31))
date_times = st.builds(
    lambda d, t, minutes: dt.datetime.combine(d, t, dt.timezone(dt.timedelta(minutes=minutes))),
    dates,
    st.times().map(lambda t: t.replace(microsecond=0)),
    st.integers(-1439, 1439),
)
raw_strings = st.binary(max_size=20).filter(lambda b: b"\0" not in b)
field_names = st.text(
    alphabet=sorted(chr(x) for x in range(0x21, 0x7F) if x != 0x3A), min_size=1, max_size=10
)

leaf_keys = st.one_of(
    st.sampled_from(sorted(s.FLAG_KEYS)).map(s.Key),
    st.builds(lambda n, v: s.Key(n, (v,)), st.sampled_from(sorted(s.STRING_KEYS)), raw_strings),
    st.builds(lambda n, v: s.Key(n, (v,)), st.sampled_from(sorted(s.KEYWORD_KEYS)), keywords),
    st.builds(lambda n, v: s.Key(n, (v,)), st.sampled_from(sorted(s.DATE_KEYS)), dates),
    st.builds(lambda n, v: s.Key(n, (v,)), st.sampled_from(sorted(s.NUMBER_KEYS)), st.integers(0, 2**32 - 1)),
    st.builds(lambda n, v: s.Key(n, (v,)), st.sampled_from(sorted(s.INTERVAL_KEYS)), numbers),
    st.builds(s.Header, raw_strings, raw_strings),
    st.builds(s.Sequence, sequence_sets, st.booleans()),
    st.builds(s.ModSeq, modseqs),
    st.builds(s.ModSeq, modseqs, st.just(b"/flags/\\seen"), st.sampled_from(s.ENTRY_TYPES)),
)
search_keys = st.recursive(
    leaf_keys,
    lambda inner: st.one_of(
        st.builds(s.Not, inner),
        st.builds(s.Or, inner, inner),
        st.lists(inner, min_size=1, max_size=3).map(lambda k: s.And(tuple(k))),
    ),
    max_leaves=8,
)
programs = st.lists(search_keys, min_size=1, max_size=4).map(tuple)

sections = st.builds(
    lambda kind, peek, part, text, fields, partial: f.Section(
        kind,
        peek and kind != "BINARY.SIZE",
        part,
        None if kind != "BODY" or (text == "MIME" and not part) else text,
        fields if kind == "BODY" and text and text.startswith("HEADER.FIELDS") and part is not None else (),
        None if kind == "BINARY.SIZE" else partial,
    ),
    st.sampled_from(["BODY", "BINARY", "BINARY.SIZE"]),
    st.booleans(),
    st.lists(st.integers(1, 99), max_size=3).map(tuple),
    st.none() | st.sampled_from(f.SECTION_TEXTS),
    st.lists(field_names, min_size=1, max_size=3).map(tuple),
    st.none() | st.tuples(st.integers(0, 10**6), st.integers(1, 10**6)),
).filter(lambda x: not (x.text and x.text.startswith("HEADER.FIELDS") and not x.fields))
fetch_attrs = st.sampled_from(sorted(f.SIMPLE)).map(f.Attr) | sections


def _list(tag, ref, pats, sel, ret, status):
    if status is not None and ret == ():
        ret = None
    return c.List(tag, ref, pats, sel, ret, status)


append_messages = st.builds(
    c.AppendMessage,
    st.none() | flag_tuples,
    st.none() | date_times,
    st.binary(max_size=40),
    st.booleans(),
).filter(lambda a: a.binary or b"\0" not in a.message)
status_items = st.lists(st.sampled_from(sorted(c.STATUS_ITEMS)), min_size=1, max_size=3).map(tuple)
commands = st.one_of(
    st.builds(lambda t, k: k(t), tags, st.sampled_from(sorted(c._NO_ARGS.values(), key=str))),
    st.builds(c.Login, tags, texts, texts),
    st.builds(c.Authenticate, tags, atoms.map(str.upper), st.none() | st.binary(max_size=30)),
    st.builds(c.Compress, tags, atoms.map(str.upper)),
    st.builds(c.Enable, tags, st.lists(atoms.map(str.upper), min_size=1, max_size=3).map(tuple)),
    st.builds(
        c.Id,
        tags,
        st.none() | st.lists(st.tuples(texts, st.none() | texts), max_size=3).map(tuple),
    ),
    st.builds(
        lambda cls, t, m, condstore, qresync: cls(t, m, condstore, qresync),
        st.sampled_from([c.Select, c.Examine]),
        tags,
        mailboxes,
        st.booleans(),
        st.none()
        | st.builds(
            c.QResync,
            numbers,
            modseqs,
            st.none() | ranges,
            st.none() | st.tuples(ranges, ranges),
        ),
    ),
    st.builds(
        lambda cls, t, m: cls(t, m),
        st.sampled_from([c.Create, c.Delete, c.Subscribe, c.Unsubscribe, c.GetQuotaRoot]),
        tags,
        mailboxes,
    ),
    st.builds(c.GetQuota, tags, texts),
    st.builds(c.Rename, tags, mailboxes, mailboxes),
    st.builds(
        _list,
        tags,
        mailboxes | st.just(""),
        st.lists(mailboxes | st.sampled_from(["*", "%", "Arch*"]), min_size=1, max_size=3).map(tuple),
        st.none() | st.lists(st.sampled_from(sorted(c.LIST_SELECT_OPTIONS)), max_size=2).map(tuple),
        st.none() | st.lists(st.sampled_from(sorted(c.LIST_RETURN_OPTIONS)), max_size=2).map(tuple),
        st.none() | status_items,
    ),
    st.builds(c.Lsub, tags, mailboxes, mailboxes),
    st.builds(c.Status, tags, mailboxes, status_items),
    st.builds(
        lambda t, m, first, more: c.Append(
            t, m, first.flags, first.internal_date, first.message, first.binary, tuple(more)
        ),
        tags,
        mailboxes,
        append_messages,
        st.lists(append_messages, max_size=2),
    ),
    st.builds(
        c.Create,
        tags,
        mailboxes,
        st.none() | st.lists(atoms.map(lambda a: "\\" + a), min_size=1, max_size=2).map(tuple),
    ),
    st.builds(
        c.Search,
        tags,
        st.booleans(),
        st.none() | st.sampled_from(["UTF-8", "US-ASCII", "ISO-8859-1"]),
        st.none() | st.lists(st.sampled_from(sorted(c.SEARCH_RETURN_OPTIONS)), max_size=3).map(tuple),
        programs,
    ),
    st.builds(
        lambda t, u, seq, macro, attrs, cs, v: c.Fetch(t, u, seq, macro, () if macro else attrs, cs, v),
        tags,
        st.booleans(),
        sequence_sets,
        st.none() | st.sampled_from(sorted(f.MACROS)),
        st.lists(fetch_attrs, min_size=1, max_size=4).map(tuple),
        st.none() | modseqs,
        st.booleans(),
    ),
    st.builds(
        c.Store,
        tags,
        st.booleans(),
        sequence_sets,
        st.sampled_from(["", "+", "-"]),
        st.booleans(),
        flag_tuples,
        st.none() | modseqs,
    ),
    st.builds(
        lambda cls, t, u, seq, m: cls(t, u, seq, m),
        st.sampled_from([c.Copy, c.Move]),
        tags,
        st.booleans(),
        sequence_sets,
        mailboxes,
    ),
    st.builds(c.UidExpunge, tags, sequence_sets),
    st.builds(
        c.Sort,
        tags,
        st.booleans(),
        st.lists(st.tuples(st.booleans(), st.sampled_from(sorted(c.SORT_KEYS))), min_size=1, max_size=3).map(
            tuple
        ),
        st.sampled_from(["UTF-8", "US-ASCII"]),
        programs,
    ),
    st.builds(
        c.Thread,
        tags,
        st.booleans(),
        st.sampled_from(["REFERENCES", "ORDEREDSUBJECT"]),
        st.just("UTF-8"),
        programs,
    ),
)


def parse_all(data: bytes, **kwargs) -> list:
    p = CommandParser(**kwargs)
    events = p.feed(data)
    while p.paused:
        events += p.resume()
    return [e for e in events if not isinstance(e, ContinuationNeeded)]


def no_internal_error(event: object) -> None:
    """The parser turns its own bugs into BAD rather than crashing; the tests must see them."""
    assert not (isinstance(event, ParseError) and event.message.startswith("unparsable")), event


BIG = {"line_limit": 1 << 16, "literal_limit": 1 << 16, "max_depth": 64}


# -- round trips --------------------------------------------------------------------------------
@FAST
@given(commands)
def test_every_command_round_trips(cmd: c.Command) -> None:
    """RFC 3501 9: what the writer produces is valid syntax that parses to the same command."""
    wire = cmd.to_bytes()
    parsed = parse_all(wire, **BIG)
    assert parsed == [cmd], wire
    assert parse_all(parsed[0].to_bytes(), **BIG) == parsed


@settings(max_examples=60 * SCALE, deadline=None)
@given(st.lists(commands, min_size=1, max_size=4), st.data())
def test_framing_does_not_depend_on_how_the_input_is_split(cmds: list, data: st.DataObject) -> None:
    """RFC 3501 2.2: TCP delivers a byte stream; commands may be split anywhere."""
    wire = b"".join(cmd.to_bytes() for cmd in cmds)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    p = CommandParser(**BIG)
    events: list = []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        events += p.feed(wire[a:b])
        while p.paused:
            events += p.resume()
    assert [e for e in events if not isinstance(e, ContinuationNeeded)] == cmds


def test_round_trip_of_the_unit_examples() -> None:
    for line in (
        b"a UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From To)]<0.100>) (CHANGEDSINCE 5 VANISHED)\r\n",
        b'a LIST (SUBSCRIBED) "" ("INBOX" %) RETURN (STATUS (MESSAGES))\r\n',
        b"a SEARCH OR (FROM x SINCE 1-Feb-2020) NOT UID 1:5,7 HEADER {3}\r\nA:B x\r\n",
    ):
        [cmd] = parse_all(line)
        assert parse_all(cmd.to_bytes()) == [cmd]


# -- malformed input ----------------------------------------------------------------------------
CORPUS_FILES = sorted(CORPUS.glob("*.imap"))


def test_corpus_is_there() -> None:
    assert len(CORPUS_FILES) >= 60


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.stem)
def test_malformed_corpus_yields_parse_errors(path: Path) -> None:
    """RFC 3501 7.1.3 (BAD): every case is refused, whole or one octet at a time, alike."""
    data = path.read_bytes()
    whole = parse_all(data)
    p = CommandParser()
    piecewise = [e for i in range(len(data)) for e in p.feed(data[i : i + 1])]
    assert whole == [e for e in piecewise if not isinstance(e, ContinuationNeeded)]
    assert any(isinstance(e, ParseError) for e in whole)
    assert all(isinstance(e, ParseError) for e in whole), whole
    for e in whole:
        no_internal_error(e)
        if isinstance(e, ParseError):
            response = e.to_response()
            assert response.endswith(b"\r\n") and response.count(b"\r\n") == 1


# -- random input -------------------------------------------------------------------------------
SEEDS = [p.read_bytes()[:300] for p in CORPUS_FILES] + [
    b"a LOGIN {5}\r\nalice {2+}\r\npw\r\n",
    b"a SEARCH OR (FROM x SINCE 1-Feb-2020) NOT UID 1:5,7\r\n",
    b"a FETCH 1:* (BODY.PEEK[1.HEADER.FIELDS (From)]<0.10>)\r\n",
    b'a APPEND INBOX (\\Seen) " 1-Jan-2024 00:00:00 +0000" ~{3+}\r\na\0b\r\n',
]


def _check_stream(chunks: list[bytes], line_limit: int, literal_limit: int) -> None:
    p = CommandParser(line_limit=line_limit, literal_limit=literal_limit, max_depth=8)
    for chunk in chunks:
        events = p.feed(chunk)
        assert p.buffered <= line_limit + literal_limit
        while p.paused:
            events += p.resume()
            assert p.buffered <= line_limit + literal_limit
        for event in events:
            no_internal_error(event)
            if isinstance(event, c.Command):
                assert parse_all(event.to_bytes(), **BIG) == [event]


@settings(max_examples=200 * SCALE, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=6), st.integers(16, 512), st.integers(0, 512))
def test_random_bytes_never_raise_and_memory_stays_bounded(chunks, line_limit, literal_limit) -> None:
    _check_stream(chunks, line_limit, literal_limit)


@settings(max_examples=300 * SCALE, deadline=None)
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=0, max_size=3)), min_size=1, max_size=4),
    st.integers(0, 400),
)
def test_mutated_commands_never_raise(seed: bytes, edits, split) -> None:
    """Flipped, inserted and deleted octets in real commands: errors or commands, never crashes."""
    data = bytearray(seed)
    for where, insert in edits:
        pos = min(where, len(data))
        data[pos : pos + 1] = insert
    data = bytes(data) + b"\r\n"
    _check_stream([data[:split], data[split:]], 256, 256)
