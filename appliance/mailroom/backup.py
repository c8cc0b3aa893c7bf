"""Backups of a Mailroom host: borg driven by borgmatic, with a manifest and a restore drill.

    mailroom backup run       snapshot, manifest, borgmatic create/prune/compact/check, status
    mailroom backup verify    the restore drill: extract the latest archive into a scratch
                              directory and compare it with the manifest inside it
    mailroom backup restore   check the repository, extract an archive, compare it with its
                              manifest, then put it in place (playbooks/restore.yml runs it with
                              the daemons stopped)
    mailroom backup status    the status file metricsd exposes

The snapshot. borg reads files one by one over minutes while IMAP/POP3 rename messages (every
flag change is a rename) and delivery adds them, so the wrapper first makes a snapshot of hard
links under ``<state_dir>/snapshot`` (the same file system as the store; no message is copied),
and borgmatic archives the snapshot (its ``working_directory``), with paths relative to ``/``.
Each Maildir folder is linked while holding a shared flock on its ``mailroom-lock``: everything
that renames in cur/ or moves mail out of new/ holds that lock exclusively (store/folder.py),
so a folder's names, state file and UIDVALIDITY file are a consistent picture. The state file
and the high-water mark, which the store overwrites in place, are copied instead of linked, so
that the snapshot cannot change after it was taken. Delivery never locks, and a message it adds
meanwhile is in this archive or the next one. tmp/ contents are not backed up (half-written
deliveries). Files elsewhere (queue, /etc/mailroom) are linked too, or copied when they are on
another file system. Maildir messages never change after delivery, which is why borg's files
cache keyed on mtime, size and inode (not ctime, which every link changes) is right for them.

The manifest. ``mailroom-backup/manifest.json`` in the snapshot (and so in the archive) lists
every directory, file (size, sha256, mode, owner) and symlink of the snapshot. A restore is
proven when what borg gives back equals it. sha256 sums are cached in the state directory by
(device, inode, size, mtime), so a daily backup hashes new mail only.

The status file ``<state_dir>/status.json`` (root writes, the mailroom group reads) holds the
outcome of the last run, check and restore drill; metricsd turns it into metrics at scrape time
(collector()).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import yaml

from .store.highwater import HIGHWATER_FILE
from .store.statefile import SLOTS as STATE_SLOTS
from .store.statefile import STATE_FILE

DEFAULT_SETTINGS = "/etc/mailroom/backup/backup.yml"
DEFAULT_STATE_DIR = Path("/var/lib/mailroom/backup")
STATUS_FILE = "status.json"
MANIFEST_DIR = "mailroom-backup"
MANIFEST_NAME = "manifest.json"
MANIFEST = f"{MANIFEST_DIR}/{MANIFEST_NAME}"
HASH_CACHE = "hash-cache.json"
LOCK_FILE = "lock"
FOLDER_LOCK = "mailroom-lock"  # store/folder.py LOCK_FILE
# A folder's files that the store overwrites in place (under the folder lock): a link would let
# the snapshot change after it was taken, so they are copied (under the lock, shared).
WRITTEN_IN_PLACE = frozenset({STATE_FILE, *STATE_SLOTS, HIGHWATER_FILE})
MAX_STATUS_BYTES = 64 * 1024
MAX_SETTINGS_BYTES = 64 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024 * 1024
MAX_OUTPUT_TAIL = 4000
EX_TEMPFAIL = 75

# borg must never ask: an unknown or moved repository is expected on a restore host.
BORG_ENV = {
    "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
    "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "no",
    "BORG_CHECK_I_KNOW_WHAT_I_AM_DOING": "NO",
    "BORG_DELETE_I_KNOW_WHAT_I_AM_DOING": "NO",
}


class BackupError(Exception):
    """A backup, check or restore step failed; the message says which and why."""


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """/etc/mailroom/backup/backup.yml, rendered by the backup role."""

    borgmatic: str
    borgmatic_config: Path
    state_dir: Path
    snapshot_dir: Path
    sources: tuple[str, ...]  # relative to root, e.g. var/lib/mailroom/mail
    exclude: tuple[str, ...] = ()  # relative to root
    maildir_root: str | None = None  # relative to root: hold folder locks below it
    root: Path = Path("/")
    verify_dir: Path | None = None
    path_env: str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def status_path(self) -> Path:
        return self.state_dir / STATUS_FILE


def _relative(key: str, value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise BackupError(f"{key}: {value!r} is not an absolute path")
    parts = PurePosixPath(value).parts[1:]
    if not parts or any(p in ("..", ".") for p in parts):
        raise BackupError(f"{key}: {value!r} is not a usable path (not /, no . or ..)")
    return "/".join(parts)


def load_settings(path: str | Path) -> Settings:
    """Read the settings file; every error names its key."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_SETTINGS_BYTES + 1)
    except OSError as exc:
        raise BackupError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_SETTINGS_BYTES:
        raise BackupError(f"{path}: larger than {MAX_SETTINGS_BYTES} bytes")
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise BackupError(f"{path}: not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise BackupError(f"{path}: must be a mapping")
    known = {
        "borgmatic",
        "borgmatic_config",
        "state_dir",
        "sources",
        "exclude",
        "maildir_root",
        "root",
        "verify_dir",
    }
    unknown = sorted(set(data) - known)
    if unknown:
        raise BackupError(f"{path}: {unknown[0]}: unknown key")
    for key in ("borgmatic", "borgmatic_config", "state_dir", "sources"):
        if key not in data:
            raise BackupError(f"{path}: {key}: is required")
    root = Path(data.get("root", "/"))
    if not root.is_absolute():
        raise BackupError(f"{path}: root: must be an absolute path")
    sources = data["sources"]
    if not isinstance(sources, list) or not sources:
        raise BackupError(f"{path}: sources: must be a non-empty list of absolute paths")
    rel_sources = tuple(_relative(f"sources[{i}]", s) for i, s in enumerate(sources))
    exclude = data.get("exclude") or []
    if not isinstance(exclude, list):
        raise BackupError(f"{path}: exclude: must be a list of absolute paths")
    rel_exclude = tuple(_relative(f"exclude[{i}]", s) for i, s in enumerate(exclude))
    maildir = data.get("maildir_root")
    state_dir = Path(data["state_dir"])
    if not state_dir.is_absolute():
        raise BackupError(f"{path}: state_dir: must be an absolute path")
    verify_dir = data.get("verify_dir")
    return Settings(
        borgmatic=str(data["borgmatic"]),
        borgmatic_config=Path(data["borgmatic_config"]),
        state_dir=state_dir,
        snapshot_dir=state_dir / "snapshot",
        sources=rel_sources,
        exclude=rel_exclude,
        maildir_root=_relative("maildir_root", maildir) if maildir else None,
        root=root,
        verify_dir=Path(verify_dir) if verify_dir else None,
    )


# ----------------------------------------------------------------------------- status file


def read_status(path: Path) -> dict:
    """The status file, {} when absent; raises ValueError when unreadable or too big."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_STATUS_BYTES + 1)
    except FileNotFoundError:
        return {}
    if len(raw) > MAX_STATUS_BYTES:
        raise ValueError(f"{path}: larger than {MAX_STATUS_BYTES} bytes")
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def _write_json(path: Path, data: object, mode: int = 0o640, group_of: Path | None = None) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, mode)
    if group_of is not None:
        # Same group as the state directory (mailroom): metricsd reads the status as that user.
        with contextlib.suppress(OSError):
            os.chown(tmp, -1, os.stat(group_of).st_gid)
    os.replace(tmp, path)


def update_status(settings: Settings, section: str, values: dict) -> dict:
    """Merge values into one section of the status file (the caller holds the lock)."""
    try:
        status = read_status(settings.status_path)
    except ValueError:
        status = {}
    status["version"] = 1
    merged = dict(status.get(section) or {})
    merged.update(values)
    status[section] = merged
    _write_json(settings.status_path, status, group_of=settings.state_dir)
    return status


@contextlib.contextmanager
def _exclusive(settings: Settings, wait: float) -> Iterator[None]:
    """One backup command at a time on a host (a run and a verify must not overlap)."""
    fd = os.open(settings.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError from None
                time.sleep(1)
        yield
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- snapshot


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _owner(st: os.stat_result) -> str:
    import grp
    import pwd

    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"


class _Snapshot:
    """Builds the snapshot tree and its manifest."""

    def __init__(self, settings: Settings, cache: dict[str, list]) -> None:
        self.settings = settings
        self.old_cache = cache
        self.cache: dict[str, list] = {}
        self.dirs: dict[str, dict] = {}
        self.files: dict[str, dict] = {}
        self.symlinks: dict[str, str] = {}
        self.excluded = {PurePosixPath(e) for e in settings.exclude}

    def _is_excluded(self, rel: str) -> bool:
        path = PurePosixPath(rel)
        return any(path == e or e in path.parents for e in self.excluded)

    def _dir(self, rel: str, st: os.stat_result) -> None:
        target = self.settings.snapshot_dir / rel
        target.mkdir(parents=True, exist_ok=True)
        os.chmod(target, stat.S_IMODE(st.st_mode))
        os.chown(target, st.st_uid, st.st_gid)
        self.dirs[rel] = {"mode": stat.S_IMODE(st.st_mode), "owner": _owner(st)}

    def _file(self, rel: str, live: Path, st: os.stat_result, copy: bool = False) -> None:
        target = self.settings.snapshot_dir / rel
        try:
            if not copy:
                try:
                    os.link(live, target)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                        raise
                    copy = True  # another file system, or links refused: a copy instead
            if copy:
                shutil.copy2(live, target)
                os.chown(target, st.st_uid, st.st_gid)
        except FileNotFoundError:
            return  # renamed or removed since we listed its directory
        st = os.stat(target)  # the linked inode: what borg reads
        key = f"{st.st_dev}:{st.st_ino}"
        cached = self.old_cache.get(key)
        if cached and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
            digest = cached[2]
        else:
            digest = _hash_file(target)
        self.cache[key] = [st.st_size, st.st_mtime_ns, digest]
        self.files[rel] = {
            "size": st.st_size,
            "sha256": digest,
            "mode": stat.S_IMODE(st.st_mode),
            "owner": _owner(st),
        }

    def add_tree(self, rel: str) -> None:
        live = self.settings.root / rel
        try:
            st = os.lstat(live)
        except FileNotFoundError:
            return  # e.g. no queue yet: nothing to back up there
        if stat.S_ISDIR(st.st_mode):
            self._walk(rel, live)
        elif stat.S_ISREG(st.st_mode):
            (self.settings.snapshot_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            self._file(rel, live, st)

    def _in_maildirs(self, rel: str) -> bool:
        root = self.settings.maildir_root
        return root is not None and (rel == root or rel.startswith(root + "/"))

    def _walk(self, rel: str, live: Path) -> None:
        if self._is_excluded(rel):
            return
        try:
            st = os.lstat(live)
        except FileNotFoundError:
            return
        self._dir(rel, st)
        lock_fd = None
        maildir = self._in_maildirs(rel) and (live / "cur").is_dir()
        if maildir:
            # A Maildir folder: hold its lock shared while linking its files (see module doc).
            # No lock file yet: nothing has renamed in this folder so far (we never create one:
            # it must belong to the daemons' user).
            with contextlib.suppress(FileNotFoundError):
                lock_fd = os.open(live / FOLDER_LOCK, os.O_RDONLY | os.O_CLOEXEC)
                fcntl.flock(lock_fd, fcntl.LOCK_SH)
        subdirs = []
        try:
            with os.scandir(live) as entries:
                listing = sorted(entries, key=lambda e: e.name)
            for entry in listing:
                child = f"{rel}/{entry.name}"
                if self._is_excluded(child):
                    continue
                try:
                    est = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISDIR(est.st_mode):
                    if maildir and entry.name in ("cur", "new", "tmp"):
                        self._dir(child, est)
                        if entry.name != "tmp":  # half-written deliveries stay behind
                            self._flat(child, Path(entry.path))
                    else:
                        subdirs.append((child, Path(entry.path)))
                elif stat.S_ISREG(est.st_mode):
                    copy = maildir and entry.name in WRITTEN_IN_PLACE
                    self._file(child, Path(entry.path), est, copy)
                elif stat.S_ISLNK(est.st_mode):
                    target = os.readlink(entry.path)
                    os.symlink(target, self.settings.snapshot_dir / child)
                    self.symlinks[child] = target
                # sockets, fifos, devices: nothing of ours; not backed up
        finally:
            if lock_fd is not None:
                os.close(lock_fd)
        for child, path in subdirs:
            self._walk(child, path)

    def _flat(self, rel: str, live: Path) -> None:
        """The files of cur/ or new/ (no subdirectories there)."""
        with os.scandir(live) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    est = entry.stat(follow_symlinks=False)
                    if stat.S_ISREG(est.st_mode):
                        self._file(f"{rel}/{entry.name}", Path(entry.path), est)

    def manifest(self, created: float) -> dict:
        return {
            "version": 1,
            "created": created,
            "sources": list(self.settings.sources),
            "exclude": list(self.settings.exclude),
            "dirs": self.dirs,
            "files": self.files,
            "symlinks": self.symlinks,
        }


def _remove_tree(path: Path) -> None:
    if path.exists() or path.is_symlink():
        shutil.rmtree(path)


def _empty_snapshot(settings: Settings) -> None:
    """Remove the links, keep the directory: borgmatic needs its working_directory to exist."""
    _remove_tree(settings.snapshot_dir)
    settings.snapshot_dir.mkdir(mode=0o700)


def make_snapshot(settings: Settings) -> dict:
    """Link the sources into the snapshot directory and write the manifest there; returns it."""
    _empty_snapshot(settings)
    cache_path = settings.state_dir / HASH_CACHE
    try:
        cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    snap = _Snapshot(settings, cache)
    for rel in settings.sources:
        snap.add_tree(rel)
    manifest = snap.manifest(time.time())
    (settings.snapshot_dir / MANIFEST_DIR).mkdir(mode=0o700)
    _write_json(settings.snapshot_dir / MANIFEST, manifest, mode=0o600)
    _write_json(cache_path, snap.cache, mode=0o600)
    return manifest


# ----------------------------------------------------------------------------- comparing


def load_manifest(path: Path) -> dict:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BackupError(
            f"the archive has no manifest ({MANIFEST}): not made by `mailroom backup run`"
        ) from None
    if size > MAX_MANIFEST_BYTES:
        raise BackupError(f"{path}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        manifest = json.loads(path.read_bytes())
    except ValueError as exc:
        raise BackupError(f"{path}: the manifest is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("version") != 1:
        raise BackupError(f"{path}: not a version 1 manifest")
    for key in ("dirs", "files", "symlinks", "sources"):
        if not isinstance(manifest.get(key), dict | list):
            raise BackupError(f"{path}: manifest key {key} is missing")
    return manifest


def compare(tree: Path, manifest: dict, check_owner: bool = True) -> list[str]:
    """Differences between a restored tree and the manifest (empty: identical)."""
    problems: list[str] = []
    seen_files: set[str] = set()
    seen_dirs: set[str] = set()
    seen_links: set[str] = set()
    for rel in manifest["sources"]:
        top = tree / rel
        if not top.exists():
            if any(p == rel or p.startswith(rel + "/") for p in (*manifest["files"], *manifest["dirs"])):
                problems.append(f"{rel}: missing from the restore")
            continue
        walk = os.walk(top) if top.is_dir() else [(str(top.parent), [], [top.name])]
        for dirpath, dirnames, filenames in walk:
            base = Path(dirpath).relative_to(tree).as_posix()
            if top.is_dir():
                seen_dirs.add(base)
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                rel_path = f"{base}/{name}"
                if path.is_symlink():
                    seen_links.add(rel_path)
                elif path.is_file():
                    seen_files.add(rel_path)
    expected_files = manifest["files"]
    for rel in sorted(set(expected_files) - seen_files):
        problems.append(f"{rel}: missing from the restore")
    for rel in sorted(seen_files - set(expected_files)):
        problems.append(f"{rel}: in the restore but not in the manifest")
    for rel in sorted(seen_files & set(expected_files)):
        want = expected_files[rel]
        path = tree / rel
        st = path.stat()
        if st.st_size != want["size"]:
            problems.append(f"{rel}: size {st.st_size}, manifest says {want['size']}")
            continue
        if _hash_file(path) != want["sha256"]:
            problems.append(f"{rel}: sha256 differs from the manifest")
        if stat.S_IMODE(st.st_mode) != want["mode"]:
            problems.append(f"{rel}: mode {stat.S_IMODE(st.st_mode):o}, manifest says {want['mode']:o}")
        if check_owner and _owner(st) != want["owner"]:
            problems.append(f"{rel}: owner {_owner(st)}, manifest says {want['owner']}")
    for rel in sorted(set(manifest["dirs"]) - seen_dirs):
        problems.append(f"{rel}/: directory missing from the restore")
    for rel, target in sorted(manifest["symlinks"].items()):
        path = tree / rel
        if not path.is_symlink() or os.readlink(path) != target:
            problems.append(f"{rel}: symlink to {target} missing from the restore")
    for rel in sorted(seen_links - set(manifest["symlinks"])):
        problems.append(f"{rel}: symlink in the restore but not in the manifest")
    return problems


# ----------------------------------------------------------------------------- borgmatic


@dataclass
class Borgmatic:
    settings: Settings
    config: Path

    def run(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": self.settings.path_env,
            "LANG": "C.UTF-8",
            "HOME": os.environ.get("HOME", "/root"),
            **{k: v for k, v in os.environ.items() if k.startswith(("BORG_", "XDG_"))},
            **BORG_ENV,
            **self.settings.extra_env,
        }
        return subprocess.run(
            [self.settings.borgmatic, "--config", str(self.config), "--no-color", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )

    def must(self, what: str, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.run(*args)
        if result.returncode != 0:
            raise BackupError(f"{what} failed (borgmatic exit {result.returncode}): {_tail(result)}")
        return result


def _tail(result: subprocess.CompletedProcess[str]) -> str:
    text = (result.stderr or "") + (result.stdout or "")
    lines = [line for line in text.splitlines() if line.strip() and "torsion.org" not in line]
    return "\n".join(lines)[-MAX_OUTPUT_TAIL:]


def _create_stats(stdout: str) -> dict:
    try:
        data = json.loads(stdout)
        archive = data[0]["archive"] if isinstance(data, list) else data["archive"]
        stats = archive["stats"]
        return {
            "archive": archive["name"],
            "original_size": int(stats["original_size"]),
            "compressed_size": int(stats["compressed_size"]),
            "deduplicated_size": int(stats["deduplicated_size"]),
            "files": int(stats["nfiles"]),
        }
    except (ValueError, KeyError, IndexError, TypeError):
        return {}


def latest_archive(borgmatic: Borgmatic) -> str:
    # Every archive, whoever made it: by default borgmatic lists only those whose names match
    # this host's archive_name_format ({hostname}-...), and a new host restoring the old one's
    # repository would find none.
    result = borgmatic.must("listing the archives", "repo-list", "--match-archives", "*", "--json")
    try:
        data = json.loads(result.stdout)
        archives = (data[0] if isinstance(data, list) else data)["archives"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise BackupError("listing the archives: borgmatic printed no archive list") from None
    if not archives:
        raise BackupError("the repository has no archives yet")
    return str(archives[-1]["name"])


def _extract(borgmatic: Borgmatic, archive: str, destination: Path) -> None:
    _remove_tree(destination)
    destination.mkdir(mode=0o700, parents=True)
    borgmatic.must(
        f"extracting archive {archive}", "extract", "--archive", archive, "--destination", str(destination)
    )


# ----------------------------------------------------------------------------- commands


def run_backup(settings: Settings) -> dict:
    """snapshot → borgmatic create, prune, compact, check. Writes the status; raises on failure."""
    borgmatic = Borgmatic(settings, settings.borgmatic_config)
    started = time.time()
    update_status(settings, "backup", {"last_attempt": started, "running": True})
    result: dict = {}
    try:
        manifest = make_snapshot(settings)
        created = borgmatic.must("borgmatic create", "create", "--json")
        result = _create_stats(created.stdout)
        result["manifest_files"] = len(manifest["files"])
        borgmatic.must("borgmatic prune", "prune")
        borgmatic.must("borgmatic compact", "compact")
    except BackupError as exc:
        update_status(
            settings,
            "backup",
            {
                "ok": False,
                "running": False,
                "error": str(exc)[-500:],
                "duration_seconds": time.time() - started,
            },
        )
        # A failed create is often a damaged repository: the check says so in its own metric.
        with contextlib.suppress(BackupError):
            run_check(settings, borgmatic)
        raise
    finally:
        _empty_snapshot(settings)
    finished = time.time()
    update_status(
        settings,
        "backup",
        {
            "ok": True,
            "running": False,
            "error": None,
            "last_success": finished,
            "duration_seconds": finished - started,
            **result,
        },
    )
    run_check(settings, borgmatic)
    return result


def run_check(settings: Settings, borgmatic: Borgmatic | None = None, force: bool = False) -> None:
    """Repository and archive checks every time; data as often as the borgmatic config says."""
    borgmatic = borgmatic or Borgmatic(settings, settings.borgmatic_config)
    now = time.time()
    args = ["check", "--force"] if force else ["check"]
    try:
        borgmatic.must("the repository check", *args)
    except BackupError as exc:
        update_status(settings, "check", {"last": now, "ok": False, "error": str(exc)[-500:]})
        raise
    update_status(settings, "check", {"last": now, "ok": True, "error": None})


def verify(settings: Settings, archive: str = "latest") -> dict:
    """The restore drill: extract into scratch, compare with the manifest, record the result."""
    borgmatic = Borgmatic(settings, settings.borgmatic_config)
    scratch = settings.verify_dir or settings.state_dir / "verify"
    started = time.time()
    update_status(settings, "verify", {"last_attempt": started})
    try:
        name = latest_archive(borgmatic) if archive == "latest" else archive
        _extract(borgmatic, name, scratch)
        manifest = load_manifest(scratch / MANIFEST)
        problems = compare(scratch, manifest)
        if problems:
            raise BackupError(
                f"archive {name} differs from its manifest in {len(problems)} places: "
                + "; ".join(problems[:20])
            )
    except BackupError as exc:
        update_status(
            settings,
            "verify",
            {"ok": False, "error": str(exc)[-500:], "duration_seconds": time.time() - started},
        )
        raise
    finally:
        _remove_tree(scratch)
    finished = time.time()
    result = {
        "ok": True,
        "error": None,
        "last_success": finished,
        "archive": name,
        "files": len(manifest["files"]),
        "bytes": sum(f["size"] for f in manifest["files"].values()),
        "duration_seconds": finished - started,
    }
    update_status(settings, "verify", result)
    return result


def _restore_config(settings: Settings, repository: str | None, passphrase_file: str | None) -> Path:
    """The borgmatic config, pointed at another repository and passphrase when asked."""
    if repository is None and passphrase_file is None:
        return settings.borgmatic_config
    data = yaml.safe_load(settings.borgmatic_config.read_text())
    if repository is not None:
        data["repositories"] = [{"path": repository, "label": "restore"}]
    if passphrase_file is not None:
        data.pop("encryption_passphrase", None)
        data["encryption_passcommand"] = f"cat {passphrase_file}"
    path = settings.state_dir / "restore-borgmatic.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(data, handle)
    return path


def restore(
    settings: Settings,
    archive: str = "latest",
    repository: str | None = None,
    passphrase_file: str | None = None,
) -> dict:
    """Check the repository, extract the archive, prove it against its manifest, put it in place.

    Each source tree is swapped in whole; the tree it replaces is kept beside it as
    ``.<name>.pre-restore-<time>``. Paths the settings exclude (the host's own backup
    credentials in /etc/mailroom/backup) are carried over from the tree being replaced.
    The daemons must be stopped (playbooks/restore.yml does that).
    """
    config = _restore_config(settings, repository, passphrase_file)
    borgmatic = Borgmatic(settings, config)
    try:
        borgmatic.must("the repository check before restoring", "check", "--force", "--only", "repository")
        name = latest_archive(borgmatic) if archive == "latest" else archive
        staging = settings.state_dir / "restore"
        _extract(borgmatic, name, staging)
        manifest = load_manifest(staging / MANIFEST)
        problems = compare(staging, manifest, check_owner=False)
        if problems:
            raise BackupError(
                f"archive {name} differs from its manifest in {len(problems)} places, nothing was replaced: "
                + "; ".join(problems[:20])
            )
        stamp = time.strftime("%Y%m%dT%H%M%S")
        replaced = []
        for rel in manifest["sources"]:
            restored = staging / rel
            if not restored.exists():
                continue
            live = settings.root / rel
            old = live.with_name(f".{live.name}.pre-restore-{stamp}")
            if live.exists():
                os.rename(live, old)
            live.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(restored), str(live))
            for excluded in settings.exclude:
                if excluded.startswith(rel + "/"):
                    keep = old / excluded[len(rel) + 1 :]
                    if keep.exists():
                        target = live / excluded[len(rel) + 1 :]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        _remove_tree(target)
                        shutil.move(str(keep), str(target))
            replaced.append({"path": str(live), "previous": str(old) if old.exists() else None})
    finally:
        if config != settings.borgmatic_config:
            config.unlink(missing_ok=True)
        _remove_tree(settings.state_dir / "restore")
    return {"archive": name, "files": len(manifest["files"]), "replaced": replaced}


# ----------------------------------------------------------------------------- metrics


def collector(state_dir: Path = DEFAULT_STATE_DIR):
    """A prometheus_client collector reading the status file at scrape time (metricsd).

    Nothing is exposed when the state directory does not exist (backups not set up); when it
    exists but nothing ran yet, the timestamps are 0, so the "too old" alerts fire.
    """
    from prometheus_client.core import GaugeMetricFamily

    def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc)
        family.add_metric([], 0.0 if value is None else float(value))
        return family

    class _Collector:
        def collect(self):
            if not state_dir.is_dir():
                return
            try:
                status = read_status(state_dir / STATUS_FILE)
                valid = 1.0
            except (OSError, ValueError):
                status, valid = {}, 0.0
            backup = status.get("backup") or {}
            check = status.get("check") or {}
            drill = status.get("verify") or {}

            def ok(section: dict) -> float:
                return 1.0 if section.get("ok") is True else 0.0

            yield gauge("mailroom_backup_status_valid", "1 if the backup status file could be read", valid)
            yield gauge(
                "mailroom_backup_last_success_timestamp_seconds",
                "End of the last successful backup (0: never)",
                backup.get("last_success"),
            )
            yield gauge(
                "mailroom_backup_last_attempt_timestamp_seconds",
                "Start of the last backup run",
                backup.get("last_attempt"),
            )
            yield gauge("mailroom_backup_last_run_success", "1 if the last backup run succeeded", ok(backup))
            yield gauge(
                "mailroom_backup_last_duration_seconds",
                "Duration of the last backup run (snapshot, create, prune, compact)",
                backup.get("duration_seconds"),
            )
            yield gauge(
                "mailroom_backup_last_archive_size_bytes",
                "Original size of the files in the last archive",
                backup.get("original_size"),
            )
            yield gauge(
                "mailroom_backup_last_archive_deduplicated_bytes",
                "Bytes the last archive added to the repository",
                backup.get("deduplicated_size"),
            )
            yield gauge(
                "mailroom_backup_last_archive_files", "Files in the last archive", backup.get("files")
            )
            yield gauge(
                "mailroom_backup_check_success", "1 if the last repository/archive check passed", ok(check)
            )
            yield gauge(
                "mailroom_backup_last_check_timestamp_seconds",
                "Time of the last repository check",
                check.get("last"),
            )
            yield gauge(
                "mailroom_backup_last_verified_restore_timestamp_seconds",
                "End of the last restore drill that matched its manifest (0: never)",
                drill.get("last_success"),
            )
            yield gauge(
                "mailroom_backup_last_verify_success", "1 if the last restore drill matched", ok(drill)
            )

    return _Collector()


# ----------------------------------------------------------------------------- CLI


def _settings_or_exit(path: str) -> Settings | None:
    try:
        return load_settings(path)
    except BackupError as exc:
        print(f"mailroom backup: {exc}", file=sys.stderr)
        return None


def _locked_command(args, action) -> int:
    settings = _settings_or_exit(args.settings)
    if settings is None:
        return 1
    settings.state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    settings.snapshot_dir.mkdir(mode=0o700, exist_ok=True)
    try:
        with _exclusive(settings, args.wait):
            result = action(settings)
    except TimeoutError:
        print(f"mailroom backup: another backup command still runs after {args.wait:g} s", file=sys.stderr)
        return EX_TEMPFAIL
    except BackupError as exc:
        print(f"mailroom backup {args.action}: FAILED: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def cli_run(args) -> int:
    return _locked_command(args, run_backup)


def cli_verify(args) -> int:
    return _locked_command(args, lambda s: verify(s, args.archive))


def cli_check(args) -> int:
    def action(settings: Settings) -> dict:
        run_check(settings, force=True)
        return {"check": "OK"}

    return _locked_command(args, action)


def cli_restore(args) -> int:
    return _locked_command(args, lambda s: restore(s, args.archive, args.repository, args.passphrase_file))


def cli_status(args) -> int:
    settings = _settings_or_exit(args.settings)
    if settings is None:
        return 1
    try:
        status = read_status(settings.status_path)
    except ValueError as exc:
        print(f"mailroom backup: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2, sort_keys=True))
    return 0


def add_parser(commands) -> None:
    """`mailroom backup ...` (registered by cli.py)."""
    backup = commands.add_parser("backup", help="backups with borg/borgmatic and the restore drill")
    actions = backup.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(parser):
        parser.add_argument("--settings", default=DEFAULT_SETTINGS, help="the backup settings file")
        parser.add_argument(
            "--wait", type=float, default=3600, help="seconds to wait for another backup command"
        )

    run = actions.add_parser("run", help="back up now: snapshot, create, prune, compact, check")
    common(run)
    run.set_defaults(func=cli_run)
    ver = actions.add_parser("verify", help="restore drill: extract an archive into scratch and compare")
    common(ver)
    ver.add_argument("--archive", default="latest")
    ver.set_defaults(func=cli_verify)
    chk = actions.add_parser("check", help="check the repository, its archives and their data now")
    common(chk)
    chk.set_defaults(func=cli_check)
    res = actions.add_parser("restore", help="replace the backed-up trees by an archive (daemons stopped)")
    common(res)
    res.add_argument("--archive", default="latest")
    res.add_argument("--repository", help="another repository (e.g. a copy), instead of the configured one")
    res.add_argument("--passphrase-file", help="file with that repository's passphrase")
    res.set_defaults(func=cli_restore)
    sta = actions.add_parser("status", help="print the status file (what metricsd exposes)")
    sta.add_argument("--settings", default=DEFAULT_SETTINGS)
    sta.set_defaults(func=cli_status)
