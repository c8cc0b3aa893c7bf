"""The restore drill's IMAP side, run on the controller against an instance's port 993.

    imap_state.py prepare HOST    flags, a folder and an APPEND, as a mail client makes them
    imap_state.py snapshot HOST   print what a client sees: per folder its UIDVALIDITY, and per
                                  message its UID, flags and Message-ID/Subject (JSON)

alice's password comes on stdin. The instance's certificate is self-signed.
"""

from __future__ import annotations

import imaplib
import json
import re
import ssl
import sys

USER = "alice@example.test"


def connect(host: str, password: str) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = imaplib.IMAP4_SSL(host, 993, ssl_context=context, timeout=30)
    client.login(USER, password)
    return client


def ok(result: tuple[str, list]) -> list:
    typ, data = result
    assert typ == "OK", (typ, data)
    return data


def prepare(client: imaplib.IMAP4_SSL) -> None:
    ok(client.create("Projects.2026"))
    ok(client.select("INBOX"))
    uids = ok(client.uid("SEARCH", "ALL"))[0].split()
    assert len(uids) == 3, uids
    ok(client.uid("STORE", uids[0].decode(), "+FLAGS", "(\\Seen \\Flagged)"))
    ok(client.uid("STORE", uids[1].decode(), "+FLAGS", "(\\Answered $Important)"))
    ok(client.append("Projects.2026", "(\\Seen)", None, b"Subject: kept\r\n\r\nbody\r\n"))


def snapshot(client: imaplib.IMAP4_SSL) -> dict:
    folders = {}
    for line in ok(client.list('""', "*")):
        attributes, name = re.match(rb'\(([^)]*)\) "\." (.+)$', line).groups()
        if b"\\Noselect" in attributes:
            continue
        name = name.decode().strip('"')
        ok(client.select(name, readonly=True))
        uidvalidity = int(client.untagged_responses["UIDVALIDITY"][-1])
        messages = []
        data = ok(client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)])"))
        for item in data:
            if not isinstance(item, tuple):
                continue
            head, headers = item
            uid = int(re.search(rb"UID (\d+)", head).group(1))
            flags = sorted(re.search(rb"FLAGS \(([^)]*)\)", head).group(1).decode().split())
            messages.append([uid, flags, headers.decode(errors="replace").strip()])
        folders[name] = {"uidvalidity": uidvalidity, "messages": sorted(messages)}
    return folders


def main() -> None:
    mode, host = sys.argv[1], sys.argv[2]
    client = connect(host, sys.stdin.read().strip())
    if mode == "prepare":
        prepare(client)
    else:
        print(json.dumps(snapshot(client), sort_keys=True))
    client.logout()


if __name__ == "__main__":
    main()
