"""IMAP message structure: ENVELOPE, BODY/BODYSTRUCTURE and BODY[section] over the CRLF form.

Expected values are written out by hand from RFC 3501 7.4.2 / 6.4.5 for the messages in
imap_messages/ (LF line ends, as Maildir stores them). Every output is also read back with the
protocol lexer's Reader and with imapclient's response parser, and checked against the grammar
of body / envelope; hypothesis feeds random and MIME-shaped bytes to all of it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from imapclient.response_parser import parse_fetch_response

from mailroom.imap import message as m
from mailroom.imap.protocol.fetch import Section, read_attr
from mailroom.imap.protocol.lexer import Reader

CORPUS = Path(__file__).parent / "imap_messages"
SCALE = int(os.environ.get("MAILROOM_FUZZ_SCALE", "1"))
FAST = settings(max_examples=200 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def crlf(name: str) -> bytes:
    return load(name).replace(b"\n", b"\r\n")


# -- reading values back -------------------------------------------------------------------------
def read_value(r: Reader):
    """One IMAP value as the lexer reads it: list, string (quoted/literal), number or NIL."""
    c = r.peek()
    if c == b"(":
        r.enter()
        r.pos += 1
        items = []
        while not r.take(b")"):
            if items and not r.take(b" ") and r.peek() != b"(":
                raise r.fail("expected a space between items")
            items.append(read_value(r))
        r.leave()
        return items
    if c == b'"' or c == b"{":
        return r.string()
    if r.take(b"NIL"):
        return None
    return r.number(limit=2**63)


def parse(data: bytes):
    r = Reader(data, max_depth=400)
    out = read_value(r)
    assert r.pos == len(data), data[r.pos :][:80]
    return out


def check_envelope(env) -> None:
    assert isinstance(env, list) and len(env) == 10
    for i in (0, 1, 8, 9):
        assert env[i] is None or isinstance(env[i], bytes)
    for i in range(2, 8):
        if env[i] is not None:
            assert env[i], "an empty address list is NIL"
            for addr in env[i]:
                assert len(addr) == 4 and all(x is None or isinstance(x, bytes) for x in addr)


def check_body(body, ext: bool) -> int:
    """Validates body per RFC 3501 9 (body-type-*, body-ext-*); returns the number of parts."""
    assert isinstance(body, list) and body
    if isinstance(body[0], list):
        n = 0
        i = 0
        while isinstance(body[i], list):
            n += check_body(body[i], ext)
            i += 1
        assert isinstance(body[i], bytes)  # subtype
        rest = body[i + 1 :]
        if ext:
            assert len(rest) == 4
            check_params(rest[0])
            check_disposition(rest[1])
        else:
            assert rest == []
        return n
    ctype, sub, params, cid, desc, enc, size = body[:7]
    assert isinstance(ctype, bytes) and isinstance(sub, bytes)
    check_params(params)
    assert cid is None or isinstance(cid, bytes)
    assert desc is None or isinstance(desc, bytes)
    assert isinstance(enc, bytes) and isinstance(size, int)
    rest = body[7:]
    if ctype.lower() == b"text":
        assert isinstance(rest[0], int)
        rest = rest[1:]
    elif (ctype.lower(), sub.lower()) in ((b"message", b"rfc822"), (b"message", b"global")):
        check_envelope(rest[0])
        check_body(rest[1], ext)
        assert isinstance(rest[2], int)
        rest = rest[3:]
    if ext:
        assert len(rest) == 4
        check_disposition(rest[1])
    else:
        assert rest == []
    return 1


def without_extensions(body):
    """BODYSTRUCTURE less its extension data: what BODY must be."""
    if isinstance(body[0], list):
        i = 0
        while isinstance(body[i], list):
            i += 1
        return [without_extensions(b) for b in body[:i]] + [body[i]]
    n = 8 if body[0].lower() == b"text" else 7
    if [x.lower() for x in body[:2]] in ([b"message", b"rfc822"], [b"message", b"global"]):
        return [*body[:7], body[7], without_extensions(body[8]), body[9]]
    return body[:n]


def check_params(params) -> None:
    if params is not None:
        assert len(params) % 2 == 0 and params and all(isinstance(p, bytes) for p in params)


def check_disposition(dsp) -> None:
    if dsp is not None:
        assert len(dsp) == 2 and isinstance(dsp[0], bytes)
        check_params(dsp[1])


def imapclient_parse(item: bytes, data: bytes):
    """Feeds `* 1 FETCH (item data)` to imapclient the way imaplib hands it over."""
    line = b"1 (" + item + b" " + data + b")"
    pieces: list = []
    pos = 0
    for lit in re.finditer(rb"\{(\d+)\}\r\n", line):
        if lit.start() < pos:
            continue
        n = int(lit.group(1))
        pieces.append((line[pos : lit.end() - 2], line[lit.end() : lit.end() + n]))
        pos = lit.end() + n
    pieces.append(line[pos:])
    return parse_fetch_response(pieces)[1][item]


# -- basics --------------------------------------------------------------------------------------
def test_to_crlf_converts_lone_lf_only():
    assert m.to_crlf(b"a\nb\r\nc\rd\n") == b"a\r\nb\r\nc\rd\r\n"
    assert m.to_crlf(b"a\r\n") == b"a\r\n"
    assert m.to_crlf(b"") == b""


def test_sizes_and_offsets_are_over_crlf():
    data = load("plain.eml")
    msg = m.ParsedMessage(data)
    assert msg.size == len(data) + data.count(b"\n") == 360
    assert msg.section(Section()) == crlf("plain.eml")
    assert msg.header_bytes + msg.text_bytes == crlf("plain.eml")
    assert msg.header_bytes.endswith(b"US-ASCII\r\n\r\n")
    assert msg.text_bytes == b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n"


def test_partial():
    assert m.partial(b"0123456789", 2, 3) == b"234"
    assert m.partial(b"0123456789", 8, 10) == b"89"
    assert m.partial(b"0123456789", 20, 5) == b""
    msg = m.ParsedMessage(load("plain.eml"))
    assert msg.section(Section(text="TEXT", partial=(6, 3))) == b"Joe"


# -- exact ENVELOPE / BODYSTRUCTURE ------------------------------------------------------------------
def test_plain_rfc3501_example():
    msg = m.ParsedMessage(load("plain.eml"))
    fred = b'(("Fred Foobar" NIL "foobar" "Blurdybloop.example"))'
    assert msg.envelope() == (
        b'("Mon, 7 Feb 1994 21:52:25 -0800 (PST)" "afternoon meeting" '
        + fred + b" " + fred + b" " + fred
        + b' ((NIL NIL "mooch" "owatagu.siam.edu.example")) NIL NIL NIL '
        b'"<B27397-0100000@Blurdybloop.example>")'
    )  # fmt: skip
    assert msg.body_structure(False) == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7bit" 55 1)'
    assert msg.body_structure(True) == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7bit" 55 1 NIL NIL NIL NIL)'
    )


def test_alternative_with_groups_comments_and_encoded_subject():
    msg = m.ParsedMessage(load("alternative.eml"))
    jane = b'(("Doe, Jane" NIL "jane" "example.com"))'
    assert msg.envelope() == (
        b'("Tue, 1 Apr 2025 10:00:00 +0000" "=?UTF-8?B?SGVsbG8g8J+Riw==?= there" '
        + jane + b" " + jane + b" " + jane
        + b' (("Bob" NIL "bob" "example.net")("Carol C." NIL "carol" "example.net"))'
        b' ((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL'
        b' "<orig@example.net>" "<alt-1@example.com>")'
    )  # fmt: skip
    # text/plain: "Hi Bob,\r\ncaf=C3=A9" is 18 octets with 1 line end (the CRLF before the
    # delimiter belongs to the delimiter; lines are counted as Dovecot counts them); preamble
    # and epilogue are in no part.
    assert msg.body_structure(True) == (
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 18 1 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 14 0 NIL NIL NIL NIL)'
        b' "alternative" ("boundary" "b1") NIL NIL NIL)'
    )
    assert msg.body_structure(False) == (
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 18 1)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 14 0) "alternative")'
    )
    assert msg.header("Subject") == ["Hello \U0001f44b there"]
    assert msg.raw_header("subject") == [b"=?UTF-8?B?SGVsbG8g8J+Riw==?= there"]
    assert msg.header("X-Missing") == []


def test_mixed_attachment_with_rfc2231_filename():
    msg = m.ParsedMessage(load("mixed.eml"))
    assert msg.body_structure(True) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 15 1 NIL NIL NIL NIL)'
        b'("application" "pdf" ("name" "r.pdf") "<att1@example.org>" "The report" "base64" 34'
        b' NIL ("attachment" ("filename*" "UTF-8\'\'r%C3%A9sum%C3%A9.pdf")) ("en" "de") NIL)'
        b' "mixed" ("boundary" "----=_Part_0_1") NIL NIL NIL)'
    )
    # a group in To, then an address after it
    assert b'((NIL NIL "Team" NIL)(NIL NIL "bob" "example.net")("Carol" NIL "carol" "example.net")' in (
        msg.envelope()
    )
    assert msg.envelope().endswith(
        b'(NIL NIL NIL NIL)(NIL NIL "dave" "example.net")) NIL NIL NIL "<mixed-1@example.org>")'
    )
    assert msg.section(Section(part=(2,))) == b"JVBERi0xLjQKJcfsj6IK\r\ndHJhaWxlcgo="
    assert msg.binary((2,)) == b"%PDF-1.4\n%\xc7\xec\x8f\xa2\ntrailer\n"
    assert msg.section(Section(kind="BINARY", part=(2,))) == b"%PDF-1.4\n%\xc7\xec\x8f\xa2\ntrailer\n"
    assert msg.section(Section(part=(1,))) == b"See attached.\r\n"


def test_nested_message_rfc822():
    msg = m.ParsedMessage(load("nested.eml"))
    carol = b'(("Carol" NIL "carol" "example.net"))'
    inner_env = (
        b'(NIL "hello" ' + carol + b" " + carol + b" " + carol
        + b' ((NIL NIL "bob" "example.net")) NIL NIL NIL "<inner@example.net>")'
    )  # fmt: skip
    assert msg.body_structure(False) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 9 0)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 276 ' + inner_env
        + b' (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 2 0)'
        b'("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 9 0) "alternative") 16) "mixed")'
    )  # fmt: skip
    bs = parse(msg.body_structure(True))
    assert check_body(bs, True) == 2
    assert check_body(bs[1][8], True) == 2  # the encapsulated multipart/alternative
    assert bs[1][8][3:] == [[b"boundary", b"inner"], None, None, None]


def test_sections_of_nested_message():
    msg = m.ParsedMessage(load("nested.eml"))
    inner = msg.section(Section(part=(2,)))
    assert inner.startswith(b"From: Carol <carol@example.net>\r\n")
    assert inner.endswith(b"<b>hi</b>\r\n--inner--\r\n")
    assert len(inner) == 276
    assert msg.section(Section(part=(2,), text="MIME")) == b"Content-Type: message/rfc822\r\n\r\n"
    header = msg.section(Section(part=(2,), text="HEADER"))
    assert header.startswith(b"From: Carol") and header.endswith(b"boundary=inner\r\n\r\n")
    assert header + msg.section(Section(part=(2,), text="TEXT")) == inner
    assert msg.section(Section(part=(2,), text="HEADER.FIELDS", fields=("SUBJECT", "to"))) == (
        b"To: bob@example.net\r\nSubject: hello\r\n\r\n"
    )
    assert msg.section(Section(part=(2, 1))) == b"hi"
    assert msg.section(Section(part=(2, 2))) == b"<b>hi</b>"
    assert msg.section(Section(part=(2, 2), text="MIME")) == b"Content-Type: text/html\r\n\r\n"
    assert msg.section(Section(part=(1,))) == b"see below"
    # parts that do not exist, and HEADER/TEXT of a part that is not message/rfc822
    for part in ((3,), (2, 3), (1, 2), (2, 1, 2)):
        assert msg.section(Section(part=part)) == b""
    assert msg.section(Section(part=(1,), text="HEADER")) == b""
    # like Dovecot, part 1 of a single part is that part again
    assert msg.section(Section(part=(2, 1, 1, 1))) == b"hi"


def test_single_part_numbering():
    msg = m.ParsedMessage(load("plain.eml"))
    assert msg.section(Section(part=(1,))) == msg.text_bytes
    assert msg.section(Section(part=(1,), text="MIME")) == msg.header_bytes
    assert msg.section(Section(part=(2,))) == b""
    # a message whose body is message/rfc822: 1 is the encapsulated message, 1.1 its body
    fwd = m.ParsedMessage(b"Content-Type: message/rfc822\n\nSubject: in\n\nbody\n")
    assert fwd.section(Section(part=(1,))) == b"Subject: in\r\n\r\nbody\r\n"
    assert fwd.section(Section(part=(1,), text="HEADER")) == b"Subject: in\r\n\r\n"
    assert fwd.section(Section(part=(1, 1))) == b"body\r\n"
    assert fwd.body_structure(False) == (
        b'("message" "rfc822" NIL NIL NIL "7bit" 21 (NIL "in" NIL NIL NIL NIL NIL NIL NIL NIL)'
        b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1) 3)'
    )


def test_header_fields_and_not():
    msg = m.ParsedMessage(b"A: 1\nSubject: x\n y\nB: 2\nsubject: again\nnot a field\n\nbody\n")
    assert msg.section(Section(text="HEADER.FIELDS", fields=("Subject",))) == (
        b"Subject: x\r\n y\r\nsubject: again\r\n\r\n"
    )
    assert msg.section(Section(text="HEADER.FIELDS.NOT", fields=("SUBJECT", "a"))) == (
        b"B: 2\r\nnot a field\r\n\r\n"
    )
    assert msg.section(Section(text="HEADER.FIELDS", fields=("nothere",))) == b"\r\n"
    assert msg.header("subject") == ["x y", "again"]


def test_missing_headers_give_nil():
    msg = m.ParsedMessage(b"\nno header at all\n")
    assert msg.envelope() == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert msg.header_bytes == b"\r\n"
    assert msg.body_structure(False) == b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 18 1)'


def test_sender_and_reply_to_default_to_from_but_not_when_present():
    msg = m.ParsedMessage(b"From: a@x\nSender: s@x\nReply-To: r@x, <q@y>\n\n")
    env = parse(msg.envelope())
    assert env[2] == [[None, None, b"a", b"x"]]
    assert env[3] == [[None, None, b"s", b"x"]]
    assert env[4] == [[None, None, b"r", b"x"], [None, None, b"q", b"y"]]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            b"Joe Q. Public <john.q.public@example.com>",
            [[b"Joe Q. Public", None, b"john.q.public", b"example.com"]],
        ),
        (
            b'"Giant; \\"Big\\" Box" <sysservices@example.net>',
            [[b'Giant; "Big" Box', None, b"sysservices", b"example.net"]],
        ),
        (b"<@a.example,@b.example:joe@c.example>", [[None, b"@a.example,@b.example", b"joe", b"c.example"]]),
        (b'"joe smith"@example.org', [[None, None, b'"joe smith"', b"example.org"]]),
        (b"root", [[None, None, b"root", b"MISSING_DOMAIN"]]),
        (b"<>", [[None, None, b"MISSING_MAILBOX", b"MISSING_DOMAIN"]]),
        (
            b"=?ISO-8859-1?Q?Andr=E9?= Pirard <PIRARD@vm1.ulg.ac.be>",
            [[b"=?ISO-8859-1?Q?Andr=E9?= Pirard", None, b"PIRARD", b"vm1.ulg.ac.be"]],
        ),
        (
            b"A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;",
            [
                [None, None, b"A Group", None],
                [b"Ed Jones", None, b"c", b"a.test"],
                [None, None, b"joe", b"where.test"],
                [b"John", None, b"jdoe", b"one.test"],
                [None, None, None, None],
            ],
        ),
        (
            b"Open Group: a@b",
            [[None, None, b"Open Group", None], [None, None, b"a", b"b"], [None, None, None, None]],
        ),
        (
            b"Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
            [[b"Pete", None, b"pete", b"silly.test"]],
        ),
        (b",,, ,", None),
    ],
)
def test_address_parsing(header, expected):
    env = parse(m.envelope(b"To: " + header + b"\n\n"))
    assert env[5] == expected


def test_non_ascii_and_nul_headers_go_as_literals():
    msg = m.ParsedMessage(b"Subject: caf\xc3\xa9\x00!\nFrom: J\xc3\xb6rg <j@x>\n\n")
    env = msg.envelope()
    # NUL is not allowed in a string: U+FFFD stands for it (as in Dovecot)
    assert b"{9}\r\ncaf\xc3\xa9\xef\xbf\xbd!" in env
    assert b"{5}\r\nJ\xc3\xb6rg" in env
    assert parse(env)[1] == b"caf\xc3\xa9\xef\xbf\xbd!"
    assert msg.header("from") == ["J\xf6rg <j@x>"]
    assert imapclient_parse(b"ENVELOPE", env).subject == b"caf\xc3\xa9\xef\xbf\xbd!"
    # in BODY data NUL is sent as 0x80, the same length; BINARY keeps it
    assert msg.header_bytes == b"Subject: caf\xc3\xa9\x80!\r\nFrom: J\xc3\xb6rg <j@x>\r\n\r\n"
    assert msg.section(Section(text="HEADER")) == msg.header_bytes
    assert msg.size == len(msg.section(Section()))
    assert msg.section(Section(kind="BINARY")) == msg.data and b"\0" in msg.data


def test_long_header_values_go_as_literals():
    subject = b"x" * 5000
    env = m.envelope(b"Subject: " + subject + b"\n\n")
    assert b"{5000}\r\n" + subject in env
    assert parse(env)[1] == subject


def test_rfc2231_continuations_are_joined():
    data = (
        b"Content-Type: application/octet-stream;\n"
        b" title*0*=us-ascii'en'This%20is%20even%20more%20;\n"
        b" title*1*=%2A%2A%2Afun%2A%2A%2A%20;\n"
        b' title*2="isn\'t it!"; plain*0="a b"; plain*1=c; Name=raw=value\n\nx'
    )
    bs = parse(m.body_structure(data, False))
    # plain parameters first, then the joined ones (Dovecot's order)
    assert bs[2] == [
        b"Name",
        b"raw=value",
        b"title*",
        b"us-ascii'en'This%20is%20even%20more%20%2A%2A%2Afun%2A%2A%2A%20isn%27t%20it!",
        b"plain",
        b"a bc",
    ]


def test_multipart_digest_defaults_to_message_rfc822():
    data = b"Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\nhi\n--d--\n"
    bs = parse(m.body_structure(data, False))
    assert bs[0][:2] == [b"message", b"rfc822"] and bs[0][7][1] == b"one"


def test_content_type_with_comments_and_bad_values():
    bs = parse(m.body_structure(b"Content-Type: text/html (comment); charset=(c) utf-8\n\nx", False))
    assert bs[:3] == [b"text", b"html", [b"charset", b"utf-8"]]
    # an invalid Content-Type is text/plain; charset=us-ascii (RFC 2045 5.2)
    bs = parse(m.body_structure(b"Content-Type: garbage\n\nx", False))
    assert bs[:3] == [b"text", b"plain", [b"charset", b"us-ascii"]]


# -- malformed structure ---------------------------------------------------------------------------
def test_missing_end_boundary_and_no_boundary():
    data = b"Content-Type: multipart/mixed; boundary=z\n\n--z\n\npart one\n--z\n\npart two\n"
    msg = m.ParsedMessage(data)
    assert msg.section(Section(part=(2,))) == b"part two\r\n"
    assert msg.section(Section(part=(1,))) == b"part one"
    # a multipart without boundary is an opaque single part (as Dovecot does)
    bs = parse(m.body_structure(b"Content-Type: multipart/mixed\n\n--z\nhello\n", False))
    assert bs[:2] == [b"multipart", b"mixed"] and bs[6] == 12
    # no part at all: one empty text/plain part
    data = b"Content-Type: multipart/mixed; boundary=z\n\nno delimiter here\n"
    assert (
        m.body_structure(data, True)
        == b"(" + m.EMPTY_BODYSTRUCTURE + b' "mixed" ("boundary" "z") NIL NIL NIL)'
    )


def test_boundary_must_match_whole_line():
    data = (
        b"Content-Type: multipart/mixed; boundary=ab\n\n--ab\n\none\n--abc\nstill one\n--ab--  \nepilogue\n"
    )
    msg = m.ParsedMessage(data)
    assert msg.section(Section(part=(1,))) == b"one\r\n--abc\r\nstill one"
    assert msg.section(Section(part=(2,))) == b""


def test_outer_boundary_ends_inner_part():
    data = (
        b"Content-Type: multipart/mixed; boundary=o\n\n--o\n"
        b"Content-Type: multipart/alternative; boundary=i\n\n--i\n\ninner one\n"
        b"--o\n\nouter two\n--o--\n"
    )
    msg = m.ParsedMessage(data)
    assert msg.section(Section(part=(1, 1))) == b"inner one"
    assert msg.section(Section(part=(2,))) == b"outer two"


@pytest.mark.parametrize("kind", ["multipart", "message"])
def test_deep_nesting_is_capped(kind):
    if kind == "multipart":
        data = b"".join(
            b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(100)
        )
    else:
        data = b"Content-Type: message/rfc822\n\n" * 100
    data += b"\nleaf\n"
    msg = m.ParsedMessage(data)
    bs = msg.body_structure(True)
    depth, v = 0, parse(bs)
    while isinstance(v[0], list) or v[:2] == [b"message", b"rfc822"]:
        v = v[0] if isinstance(v[0], list) else v[8]
        depth += 1
    assert depth == m.MAX_DEPTH
    check_body(parse(bs), True)
    opaque = [b"multipart", b"mixed"] if kind == "multipart" else [b"application", b"octet-stream"]
    assert v[:2] == opaque
    # the deepest part is the opaque one, holding the rest of the message (a single part in a
    # multipart is its own part 1 again, as in Dovecot, so its numbers may go on)
    deepest = max(k for k in range(1, 40) if msg.section(Section(part=(1,) * k)))
    assert deepest >= m.MAX_DEPTH
    assert msg.section(Section(part=(1,) * deepest)).endswith(b"\r\nleaf\r\n")


def test_no_blank_line_between_header_and_body():
    msg = m.ParsedMessage(b"Subject: s\nthis line is no header\nFrom: a@b")
    assert msg.text_bytes == b""
    assert parse(msg.envelope())[2] == [[None, None, b"a", b"b"]]
    assert msg.section(Section(text="HEADER.FIELDS", fields=("from",))) == b"From: a@b\r\n\r\n"


def test_too_many_parts_are_capped():
    data = b"Content-Type: multipart/mixed; boundary=p\n\n" + b"--p\n\nx\n" * (m.MAX_PARTS + 50)
    bs = parse(m.body_structure(data, False))
    assert check_body(bs, False) <= m.MAX_PARTS


def test_huge_structured_headers_are_cut():
    many = b"From: " + b"a@b, " * 100_000 + b"\nContent-Type: text/plain" + b"; a=b" * 100_000 + b"\n\nx"
    msg = m.ParsedMessage(many)
    senders = parse(msg.envelope())[2]
    assert 0 < len(senders) <= m.MAX_ADDRESSES
    params = parse(msg.body_structure(False))[2]
    assert 0 < len(params) // 2 <= 201  # at most 200 parsed, and the default charset
    # comments nested a million deep are parsed without recursion
    deep = m.ParsedMessage(
        b"To: " + b"(" * 1_000_000 + b"\nContent-Type: text/plain (" + b"(" * 1_000_000 + b"\n\n"
    )
    assert parse(deep.envelope())[5] is None
    assert parse(deep.body_structure(False))[:2] == [b"text", b"plain"]


def test_binary_unknown_encoding():
    msg = m.ParsedMessage(b"Content-Transfer-Encoding: x-uuencode\n\nbegin\n")
    assert msg.binary((1,)) is None
    msg = m.ParsedMessage(b"Content-Transfer-Encoding: quoted-printable\n\na=3Db=\n c\n")
    assert msg.binary((1,)) == b"a=b c\r\n"


# -- the whole corpus: readable by the lexer and by imapclient -------------------------------------
@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.eml")))
def test_corpus_parses_with_imapclient(name):
    msg = m.ParsedMessage(load(name))
    env = imapclient_parse(b"ENVELOPE", msg.envelope())
    assert env.message_id == (parse(msg.envelope())[9])
    assert parse(msg.body_structure(False)) == without_extensions(parse(msg.body_structure(True)))
    for item, ext in ((b"BODYSTRUCTURE", True), (b"BODY", False)):
        data = msg.body_structure(ext)
        check_body(parse(data), ext)
        parsed = imapclient_parse(item, data)
        assert parsed.is_multipart == data.startswith(b"((")
    assert_sizes_match_sections(msg, parse(msg.body_structure(True)))


def assert_sizes_match_sections(msg: m.ParsedMessage, body, prefix: tuple[int, ...] = ()) -> None:
    """Each part's size and lines in BODYSTRUCTURE are those of its BODY[part]."""
    if isinstance(body[0], list):
        i = 0
        while isinstance(body[i], list):
            assert_sizes_match_sections(msg, body[i], (*prefix, i + 1))
            i += 1
        return
    number = prefix or (1,)
    data = msg.section(Section(part=number))
    assert body[6] == len(data)
    is_message = [x.lower() for x in body[:2]] in ([b"message", b"rfc822"], [b"message", b"global"])
    if body[0].lower() == b"text":
        assert body[7] == data.count(b"\n")
    elif is_message:
        inner = body[8]
        if isinstance(inner[0], list):
            assert_sizes_match_sections(msg, inner, number)
        else:
            assert_sizes_match_sections(msg, inner, (*number, 1))


# -- properties -------------------------------------------------------------------------------------
FRAGMENTS = [
    b"Content-Type: multipart/mixed; boundary=b\n",
    b'Content-Type: multipart/alternative; boundary="c"\n',
    b"Content-Type: multipart/digest; boundary=b\n",
    b"Content-Type: message/rfc822\n",
    b"Content-Type: text/plain; charset*0*=utf-8''x; charset*1=y\n",
    b"Content-Transfer-Encoding: base64\n",
    b'Content-Disposition: attachment; filename="a\\"b"\n',
    b"Content-Language: en, (c) de\n",
    b'From: A <a@b>, (c) "q\\" @x" <@r:x@y>, g: a, b;\n',
    b"To: undisclosed:;\n",
    b"Subject: =?utf-8?q?x?=\xff\x00\n",
    b" folded\n",
    b"--b\n",
    b"--b--\n",
    b"--c\n",
    b"--c--\n",
    b"\n",
    b"\r\n",
    b"body text\n",
    b"(",
    b'"',
    b"<",
    b":",
    b";",
]
mime_shaped = st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=12), max_size=40).map(b"".join)


def check_everything(data: bytes) -> None:
    msg = m.ParsedMessage(data)
    wire = msg.data.replace(b"\0", b"\x80")  # as BODY[] sends it
    assert b"\n" not in wire.replace(b"\r\n", b"")
    assert msg.size == len(wire) == len(msg.section(Section()))
    assert msg.header_bytes + msg.text_bytes == wire
    check_envelope(parse(msg.envelope()))
    for ext in (True, False):
        body = parse(msg.body_structure(ext))
        check_body(body, ext)
    assert parse(msg.body_structure(False)) == without_extensions(parse(msg.body_structure(True)))
    assert_sizes_match_sections(msg, parse(msg.body_structure(True)))
    imapclient_parse(b"BODYSTRUCTURE", msg.body_structure(True))
    imapclient_parse(b"ENVELOPE", msg.envelope())
    for part in ((), (1,), (2,), (1, 1), (2, 1), (1, 2, 3)):
        for text in (None, "HEADER", "TEXT", "MIME"):
            if text == "MIME" and not part:
                continue
            out = msg.section(Section(part=part, text=text))
            assert isinstance(out, bytes) and (not out or out in wire) and b"\0" not in out
        fields = msg.section(Section(part=part, text="HEADER.FIELDS", fields=("from", "x")))
        assert fields.endswith(b"\r\n") or fields == b""
        msg.binary(part)
    for name in ("subject", "from", "content-type"):
        assert all(isinstance(v, str) for v in msg.header(name))


@FAST
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data):
    check_everything(data)


@FAST
@given(mime_shaped)
def test_mime_shaped_bytes_never_raise(data):
    check_everything(data)


@FAST
@given(st.binary(max_size=200))
def test_to_crlf_is_idempotent(data):
    once = m.to_crlf(data)
    assert m.to_crlf(once) == once
    assert once.replace(b"\r\n", b"\n") == data.replace(b"\r\n", b"\n")


# -- against a real Dovecot ---------------------------------------------------------------------------
DOVECOT = Path("/usr/lib/dovecot/imap")
needs_dovecot = pytest.mark.skipif(
    not DOVECOT.exists() or os.geteuid() != 0,
    reason="needs Debian's dovecot-imapd (test.sh installs it) and root: Dovecot runs as nobody",
)
ITEMS = ("BODYSTRUCTURE", "BODY", "ENVELOPE", "RFC822.SIZE")
SECTIONS = (
    "1", "2", "3", "1.MIME", "2.MIME", "1.1", "2.1", "2.2", "1.2", "2.2.1", "2.1.2", "2.HEADER", "2.TEXT",
    "HEADER", "TEXT", "HEADER.FIELDS (From Subject)", "2.HEADER.FIELDS.NOT (to)",
)  # fmt: skip


def dovecot_fetch(messages: list[bytes]) -> dict[tuple[int, bytes], object]:
    """FETCH of every item in ITEMS and every BODY.PEEK[section] from Dovecot's own imap binary
    (preauthenticated on stdin/stdout) over a Maildir holding `messages`, values as read_value."""
    import pwd
    import shutil
    import subprocess
    import tempfile

    nobody = pwd.getpwnam("nobody")
    home = Path(tempfile.mkdtemp(prefix="mailroom-dovecot-"))
    try:
        conf = home / "dovecot.conf"
        conf.write_text(
            f"mail_location = maildir:{home}/Maildir\nlog_path = /dev/stderr\nssl = no\n"
            f"mail_uid = {nobody.pw_uid}\nmail_gid = {nobody.pw_gid}\n"
            f"first_valid_uid = {nobody.pw_uid}\nfirst_valid_gid = {nobody.pw_gid}\n"
        )
        for sub in ("cur", "new", "tmp"):
            (home / "Maildir" / sub).mkdir(parents=True)
        for i, data in enumerate(messages, 1):
            (home / "Maildir" / "cur" / f"{i:06d}.mailroom:2,").write_bytes(data)
        for path in [home, *home.rglob("*")]:
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        home.chmod(0o755)
        cmds = b"s SELECT INBOX\r\n"
        for k, item in enumerate([*ITEMS, *(f"BODY.PEEK[{s}]" for s in SECTIONS)]):
            cmds += b"f%d FETCH 1:* (%s)\r\n" % (k, item.encode())
        cmds += b"z LOGOUT\r\n"
        env = {"USER": "nobody", "HOME": str(home), "PATH": "/usr/bin:/bin"}
        run = subprocess.run(
            [str(DOVECOT), "-c", str(conf)], input=cmds, capture_output=True, env=env, timeout=60, check=False
        )
        out = run.stdout
        assert b"z OK" in out, (out[-500:], run.stderr[-2000:])
    finally:
        shutil.rmtree(home, ignore_errors=True)
    found: dict[tuple[int, bytes], object] = {}
    for fetch in re.finditer(rb"\* (\d+) FETCH \(", out):
        r = Reader(out, max_depth=400)
        r.pos = fetch.end()
        while True:
            start = r.pos
            while out[r.pos : r.pos + 1] != b" ":
                r.pos = out.index(b"]", r.pos) + 1 if out[r.pos : r.pos + 1] == b"[" else r.pos + 1
            name = out[start : r.pos].upper()
            r.pos += 1
            found[(int(fetch.group(1)), name)] = read_value(r)
            if r.take(b")"):
                break
            r.sp()
    return found


def mailroom_fetch(messages: list[bytes]) -> dict[tuple[int, bytes], object]:
    found: dict[tuple[int, bytes], object] = {}
    for i, data in enumerate(messages, 1):
        msg = m.ParsedMessage(data)
        found[(i, b"BODYSTRUCTURE")] = parse(msg.body_structure(True))
        found[(i, b"BODY")] = parse(msg.body_structure(False))
        found[(i, b"ENVELOPE")] = parse(msg.envelope())
        found[(i, b"RFC822.SIZE")] = msg.size
        for text in SECTIONS:
            r = Reader(f"BODY.PEEK[{text}]\r\n".encode())
            sec = read_attr(r)
            found[(i, f"BODY[{text}]".upper().encode())] = msg.section(sec)
    return found


def lower_basic(body):
    """Dovecot writes the BODY of a text/plain; charset=us-ascii part in lower case, whatever
    case the message uses (its BODYSTRUCTURE keeps the case as sent, as ours do)."""
    if isinstance(body[0], list):
        return [lower_basic(b) if isinstance(b, list) else b for b in body]
    head = [body[0], body[1], *(body[2] or [])]
    if [x.lower() for x in head] == [b"text", b"plain", b"charset", b"us-ascii"]:
        return [b"text", b"plain", [b"charset", b"us-ascii"], *body[3:]]
    return body


def tree_message(rng, i: int) -> bytes:
    """A random, well-formed nested MIME message (multiparts, message/rfc822, text, base64)."""

    def leaf_text():
        return rng.choice(
            [b"", b"x", b"hello\n", b"a\nb\n", b"line\n\n", b"\n", b"caf\xc3\xa9\n", b"--bdX\n", b"end"]
        )

    def entity(depth, count):
        roll = rng.random()
        hdr = b""
        if rng.random() < 0.3:
            hdr += b'Content-Disposition: attachment; filename="f%d.txt"\n' % count[0]
        if rng.random() < 0.2:
            hdr += b"Content-ID: <id%d@x>\n" % count[0]
        if depth < 4 and roll < 0.35:
            count[0] += 1
            boundary = b"bd%d" % count[0]
            sub = rng.choice([b"mixed", b"alternative", b"related"])
            hdr += b"Content-Type: multipart/" + sub + b'; boundary="' + boundary + b'"\n'
            body = rng.choice([b"", b"preamble\n"])
            for _ in range(rng.randint(0, 3)):
                body += b"--" + boundary + rng.choice([b"\n", b"  \n"]) + entity(depth + 1, count) + b"\n"
            if rng.random() < 0.8:  # else no close delimiter
                body += b"--" + boundary + b"--\n" + rng.choice([b"", b"epilogue\n"])
            return hdr + b"\n" + body
        if depth < 4 and roll < 0.5:
            hdr += b"Content-Type: message/rfc822\n"
            inner = b"MIME-Version: 1.0\nSubject: inner %d\nFrom: x@y\n" % count[0]
            return hdr + b"\n" + inner + entity(depth + 1, count)
        if roll < 0.6:
            return hdr + b"\n" + leaf_text()
        hdr += rng.choice(
            [
                b"Content-Type: text/plain; charset=utf-8\n",
                b"Content-Type: text/html\n",
                b"Content-Type: image/png; name=a.png\nContent-Transfer-Encoding: base64\n",
            ]
        )
        return hdr + b"\n" + leaf_text()

    data = b"MIME-Version: 1.0\nSubject: t%d\n" % i + entity(0, [0])
    return data.replace(b"\n", b"\r\n") if rng.random() < 0.3 else data


@needs_dovecot
def test_same_as_dovecot():
    import random

    rng = random.Random(11)
    names = sorted(p.name for p in CORPUS.glob("*.eml"))
    messages = [load(n) for n in names] + [tree_message(rng, i) for i in range(150)]
    names += [f"generated {i}" for i in range(150)]
    theirs, ours = dovecot_fetch(messages), mailroom_fetch(messages)
    differences = []
    for key, value_ in ours.items():
        expected = theirs.get(key, "<missing>")
        got = lower_basic(value_) if key[1] == b"BODY" else value_
        if got != expected:
            differences.append(
                f"{names[key[0] - 1]} {key[1].decode()}:\n  dovecot {expected!r}\n  ours    {got!r}"
            )
    assert not differences, "\n".join(differences[:10])
