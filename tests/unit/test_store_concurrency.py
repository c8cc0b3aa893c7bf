"""Several processes on one folder: two IMAP-like writers while the smtpd delivers into new/."""

from __future__ import annotations

import multiprocessing
import os
import random
import re
from pathlib import Path

from mailroom.store import Folder, Maildir, Mode

DELIVERIES = 150
NAME = re.compile(r"^(?P<base>[^:]+),U=(?P<uid>\d+),M=\d+:2,[A-Za-z]*$")


def deliverer(path: str, results: multiprocessing.Queue, done: multiprocessing.Event) -> None:
    box = Maildir(Path(path))
    names = [box.deliver(f"Message-Id: <d{i}@test>\n\nbody\n".encode()) for i in range(DELIVERIES)]
    results.put(("delivered", names))
    done.set()


def writer(path: str, wid: int, results: multiprocessing.Queue, done: multiprocessing.Event) -> None:
    rng = random.Random(wid)
    folder = Folder(Path(path))
    appended: list[int] = []
    expunged: list[int] = []
    mine_alive: list[int] = []
    i = 0
    while not done.is_set() or i < 20:
        i += 1
        folder.sync()
        uids = [m.uid for m in folder.messages()]
        if uids:
            picks = rng.sample(uids, min(5, len(uids)))
            flags = rng.choice([["\\Seen"], ["\\Flagged"], ["$Work"]])
            folder.store_flags(picks, flags, rng.choice(list(Mode)))
        uid = folder.append(f"Message-Id: <w{wid}-{i}@test>\n\n".encode(), ["\\Seen"])
        appended.append(uid)
        mine_alive.append(uid)
        if i % 3 == 0:
            doomed = mine_alive[: len(mine_alive) // 2]
            del mine_alive[: len(doomed)]
            folder.store_flags(doomed, ["\\Deleted"], Mode.ADD)
            expunged += folder.expunge()
    results.put(("writer", appended, expunged))


def test_two_writers_and_a_delivery_never_lose_or_duplicate(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "alice")
    box.create()
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    done = ctx.Event()
    procs = [
        ctx.Process(target=deliverer, args=(str(box.path), results, done)),
        ctx.Process(target=writer, args=(str(box.path), 1, results, done)),
        ctx.Process(target=writer, args=(str(box.path), 2, results, done)),
    ]
    for proc in procs:
        proc.start()
    reports = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0

    delivered = next(r[1] for r in reports if r[0] == "delivered")
    writers = [r for r in reports if r[0] == "writer"]
    appended = [uid for r in writers for uid in r[1]]
    expunged = {uid for r in writers for uid in r[2]}

    final = Folder(box.path)
    final.sync()
    assert os.listdir(box.path / "new") == []
    assert os.listdir(box.path / "tmp") == []
    names = os.listdir(box.path / "cur")
    parsed = [NAME.match(name) for name in names]
    assert all(parsed), names
    uid_by_base = {m["base"]: int(m["uid"]) for m in parsed}
    assert len(uid_by_base) == len(names)  # one file per message
    assert len(set(uid_by_base.values())) == len(names)  # UIDs unique

    # every delivered message is there exactly once, with UIDs increasing in order of arrival
    delivered_uids = [uid_by_base[name] for name in delivered]
    assert delivered_uids == sorted(delivered_uids)
    # a UID is handed out once: appends of both writers and deliveries never collide
    assert len(set(appended)) == len(appended)
    assert not set(appended) & set(delivered_uids)
    assert expunged <= set(appended)
    assert {m.uid for m in final.messages()} == set(delivered_uids) | (set(appended) - expunged)
    assert final.uidnext > max(m.uid for m in final.messages())
    for info in final.messages():
        if info.uid in delivered_uids:
            assert "\\Deleted" not in info.flags
            assert final.read(info.uid).startswith(b"Message-Id: <d")


def mover(path: str, dest: str, results: multiprocessing.Queue, done: multiprocessing.Event) -> None:
    inbox, archive = Folder(Path(path)), Folder(Path(dest))
    moved = 0
    while True:
        finished = done.is_set()
        inbox.sync()
        moved += len(inbox.move([m.uid for m in inbox.messages()], archive))
        if finished:
            break
    results.put(("mover", moved))


def flagger(paths: list[str], results: multiprocessing.Queue, done: multiprocessing.Event) -> None:
    rng = random.Random(7)
    folders = [Folder(Path(p)) for p in paths]
    changes = 0
    while not done.is_set():
        folder = rng.choice(folders)
        folder.sync()
        uids = [m.uid for m in folder.messages()]
        if uids:
            changes += len(folder.store_flags(rng.sample(uids, min(3, len(uids))), ["\\Seen"], Mode.ADD))
    results.put(("flagger", changes))


def test_moving_out_of_inbox_during_delivery_keeps_every_message_once(tmp_path: Path) -> None:
    box = Maildir(tmp_path / "alice")
    box.create()
    archive = Maildir(tmp_path / "alice" / ".Archive")
    archive.create()
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    done = ctx.Event()
    procs = [
        ctx.Process(target=deliverer, args=(str(box.path), results, done)),
        ctx.Process(target=mover, args=(str(box.path), str(archive.path), results, done)),
        ctx.Process(target=flagger, args=([str(box.path), str(archive.path)], results, done)),
    ]
    for proc in procs:
        proc.start()
    reports = {r[0]: r for r in (results.get(timeout=120) for _ in procs)}
    for proc in procs:
        proc.join(timeout=30)
        assert proc.exitcode == 0

    inbox, archived = Folder(box.path), Folder(archive.path)
    inbox.sync()
    archived.sync()
    bodies = [folder.read(m.uid) for folder in (inbox, archived) for m in folder.messages()]
    assert sorted(bodies) == sorted(f"Message-Id: <d{i}@test>\n\nbody\n".encode() for i in range(DELIVERIES))
    assert reports["mover"][1] == len(archived.messages())
    for maildir in (box, archive):
        assert os.listdir(maildir.path / "tmp") == []
        assert os.listdir(maildir.path / "new") == []
    uids = [m.uid for m in archived.messages()]
    assert uids == list(range(1, len(uids) + 1))  # MOVE assigned them in order, none skipped
