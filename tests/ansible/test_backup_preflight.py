"""A broken mailroom_backup_* variable stops playbooks/site.yml in preflight, naming the variable.

Same method as test_inventory_validation: derive an inventory from inventory.example, break one
thing, run the playbook in check mode; it must fail before any role task beyond the checks.
"""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import pytest

from tests.ansible.test_inventory_validation import (
    PREFLIGHT_TASK,
    REPO,
    SECRET,
    TASK_LINE,
    _env,
    _example,
    _group_vars,
    _role_tasks_beyond_preflight,
    _run,
    _tool,
)

CASES = {
    "repository is a relative path": (
        {"mailroom_backup_repository": "backups/borg"},
        ["mailroom_backup_repository: 'backups/borg' is not a borg repository"],
    ),
    "repository is a URL borg does not speak": (
        {"mailroom_backup_repository": "https://backup.example.com/repo"},
        ["mailroom_backup_repository", "SSH"],
    ),
    "retention keeps nothing": (
        {
            "mailroom_backup_keep_daily": 0,
            "mailroom_backup_keep_weekly": 0,
            "mailroom_backup_keep_monthly": 0,
        },
        ["mailroom_backup_keep_daily (0)", "not all 0"],
    ),
    "retention is not a number": (
        {"mailroom_backup_keep_weekly": "four"},
        ["mailroom_backup_keep_weekly"],
    ),
    "backup time is not a time of day": (
        {"mailroom_backup_time": "25:00"},
        ["mailroom_backup_time ('25:00')", "HH:MM"],
    ),
    "verify weekday is not a weekday": (
        {"mailroom_backup_verify_weekday": "Someday"},
        ["mailroom_backup_verify_weekday", "Someday"],
    ),
    "data check frequency is not a frequency": (
        {"mailroom_backup_data_check_frequency": "often"},
        ["mailroom_backup_data_check_frequency: 'often' is not a frequency"],
    ),
    "enabled is not a boolean": (
        {"mailroom_backup_enabled": "sometimes"},
        ["mailroom_backup_enabled"],
    ),
    "credentials directory is relative": (
        {"mailroom_backup_credentials_dir": "creds"},
        ["mailroom_backup_credentials_dir: 'creds' must be an absolute path"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_broken_backup_variable_fails_in_preflight(case: str, tmp_path: Path) -> None:
    settings, messages = CASES[case]
    inventory = _example()
    _group_vars(inventory).update(settings)

    result = _run(inventory, tmp_path)
    output = result.stdout + result.stderr

    assert result.returncode != 0, output
    for message in messages:
        assert message in output, f"{message!r} not in output:\n{output}"
    assert _role_tasks_beyond_preflight(output) == [], output
    assert not re.search(r"TASK \[backup : (?!Preflight|Validating)", output), output
    assert SECRET not in output


GOOD = {
    "local repository elsewhere": {"mailroom_backup_repository": "/srv/borg/mail"},
    "ssh repository, url form": {
        "mailroom_backup_repository": "ssh://borg@backup.example.com:2222/./mailroom"
    },
    "ssh repository, scp form": {
        "mailroom_backup_repository": "borg@backup.example.com:mailroom",
        "mailroom_backup_keep_monthly": 12,
        "mailroom_backup_time": "23:59",
        "mailroom_backup_verify_weekday": "Wed",
        "mailroom_backup_data_check_frequency": "2 weeks",
    },
    "turned off": {"mailroom_backup_enabled": False},
}


@pytest.mark.parametrize("case", list(GOOD))
def test_good_backup_settings_pass_preflight(case: str, tmp_path: Path) -> None:
    inventory = copy.deepcopy(_example())
    _group_vars(inventory).update(GOOD[case])
    result = _run(inventory, tmp_path, "--tags", "preflight")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    ran = {
        m["name"]
        for m in TASK_LINE.finditer(output)
        if m["role"] == "backup" and PREFLIGHT_TASK.match(m["name"])
    }
    assert any("mailroom_backup_repository" in name for name in ran), output


def test_backup_and_restore_playbooks_parse() -> None:
    for playbook in ("backup.yml", "restore.yml"):
        result = subprocess.run(
            [_tool("ansible-playbook"), "--syntax-check", str(REPO / "playbooks" / playbook)],
            cwd=REPO,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_restore_refuses_a_malformed_archive_name(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text((REPO / "inventory.example").read_text())
    result = subprocess.run(
        [
            _tool("ansible-playbook"),
            "-i",
            str(inventory),
            str(REPO / "playbooks" / "restore.yml"),
            "--check",
            "-e",
            "mailroom_restore_archive='x; rm -rf /'",
        ],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "mailroom_restore_archive: 'x; rm -rf /' is not 'latest' or an archive name" in output
    assert "Stop the mailroom supervisor group" not in output
