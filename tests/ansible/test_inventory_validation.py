"""A broken inventory stops playbooks/site.yml in preflight, naming the variable.

Each case derives an inventory from inventory.example, breaks one thing and runs the playbook in
check mode (so nothing on this machine could change even if validation let it through). The run
must fail, say which variable is wrong and how, and no task of the roles other than their
preflight checks may have started.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO / "playbooks" / "site.yml"
INVENTORY = REPO / "inventory.example"
ROLES = ("base", "tls", "mailroom", "backup")
SECRET = "Never-Print-Me-9f3a"

# "TASK [role : name]": the role tasks allowed before validation has passed are the checks
# themselves (preflight asserts and argument spec validation), which change nothing.
TASK_LINE = re.compile(r"^TASK \[(?P<role>[a-z_]+) : (?P<name>.*?)\] \**$", re.MULTILINE)
PREFLIGHT_TASK = re.compile(r"^(Preflight \| |Validating arguments against arg spec )")


def _tool(name: str) -> str:
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        # One JSON line per result: messages are not re-wrapped, so they can be searched.
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_LOCAL_TEMP=str(Path(os.environ.get("TMPDIR", "/tmp")) / "mailroom-ansible-tests"),
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _example() -> dict:
    """inventory.example, with a known password so a test can check that it is never printed."""
    inventory = yaml.safe_load(INVENTORY.read_text())
    for user in _group_vars(inventory)["mailroom_users"]:
        user["password"] = SECRET
    return inventory


def _group_vars(inventory: dict) -> dict:
    return inventory["all"]["children"]["mailservers"]["vars"]


def _run(inventory: dict, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))
    return subprocess.run(
        [_tool("ansible-playbook"), "-i", str(path), str(PLAYBOOK), "--check", *extra],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _role_tasks_beyond_preflight(output: str) -> list[str]:
    return [
        f"{m['role']} : {m['name']}"
        for m in TASK_LINE.finditer(output)
        if m["role"] in ROLES and not PREFLIGHT_TASK.match(m["name"])
    ]


def _without(key: str):
    def change(group_vars: dict) -> None:
        del group_vars[key]

    return change


def _setting(key: str, value):
    def change(group_vars: dict) -> None:
        group_vars[key] = value

    return change


def _user(**entry):
    return _setting("mailroom_users", [entry])


CASES = {
    "missing domain": (
        _without("mailroom_domains"),
        ["mailroom_domains", "missing required arguments"],
    ),
    "domains given as a string": (
        _setting("mailroom_domains", "example.test"),
        ["mailroom_domains must be a YAML list"],
    ),
    "empty domain list": (
        _setting("mailroom_domains", []),
        ["mailroom_domains is empty"],
    ),
    "malformed domain": (
        _setting("mailroom_domains", ["exa mple.test"]),
        ["mailroom_domains: 'exa mple.test' is not a valid mail domain"],
    ),
    "malformed hostname": (
        _setting("mailroom_hostname", "mail_host"),
        ["mailroom_hostname: 'mail_host' is not a fully qualified"],
    ),
    "malformed user address": (
        _user(address="alice.example.test", password=SECRET),
        ["mailroom_users[0].address: 'alice.example.test' is not a lower-case address"],
    ),
    "address outside the mail domains": (
        _user(address="alice@example.org", password=SECRET),
        ["mailroom_users[0].address: 'alice@example.org'", "domain is one of mailroom_domains"],
    ),
    "unknown tls mode": (
        _setting("mailroom_tls_mode", "letsencrypt"),
        ["mailroom_tls_mode", "letsencrypt", "selfsigned, provided, acme"],
    ),
    "missing password": (
        _user(address="alice@example.test"),
        ["mailroom_users[0] (alice@example.test) needs exactly one of 'password'"],
    ),
    "password and hash both given": (
        _user(address="alice@example.test", password=SECRET, password_hash="$argon2id$v=19$x"),
        ["mailroom_users[0] (alice@example.test) needs exactly one of 'password'"],
    ),
    "provided tls without files": (
        _setting("mailroom_tls_mode", "provided"),
        ["mailroom_tls_mode is 'provided'", "mailroom_tls_certificate_src"],
    ),
    "malformed quota": (
        _user(address="alice@example.test", password=SECRET, quota="lots"),
        ["mailroom_users[0] (alice@example.test):", "quota must be a size"],
    ),
    "alias outside the mail domains": (
        _setting("mailroom_aliases", [{"address": "sales@example.org", "to": "alice@example.test"}]),
        ["mailroom_aliases[0]: address 'sales@example.org'"],
    ),
    "alias without targets": (
        _setting("mailroom_aliases", [{"address": "sales@example.test", "to": []}]),
        ["mailroom_aliases[0]: address 'sales@example.test'", "'to' one"],
    ),
    "alias with a malformed target": (
        _setting("mailroom_aliases", [{"address": "@example.test", "to": ["not an address"]}]),
        ["mailroom_aliases[0]: address '@example.test'"],
    ),
    "submission port clashes with the MX port": (
        _setting("mailroom_submission_port", 25),
        ["mailroom_submission_port (25)", "must be", "distinct TCP ports"],
    ),
    "pop3s port clashes with the submissions port": (
        _setting("mailroom_pop3s_port", 465),
        ["mailroom_pop3s_port (465)", "must be distinct TCP ports"],
    ),
    "unknown smtp limit": (
        _setting("mailroom_smtp_limits", {"max_errorz": 5}),
        ["mailroom_smtp_limits may set max_errors"],
    ),
    "imap workers out of range": (
        _setting("mailroom_imap_workers", 0),
        ["mailroom_imap_workers: '0' must be a whole number from 1 to 64"],
    ),
    "metrics allow is not a network": (
        _setting("mailroom_metrics_allow", ["everyone"]),
        ["mailroom_metrics_allow must list the networks"],
    ),
    "smarthost on port 25": (
        _setting("mailroom_smarthost", {"host": "smtp.provider.test", "port": 25}),
        ["mailroom_smarthost", "587, 465"],
    ),
    "smarthost username without a password": (
        _setting("mailroom_smarthost", {"host": "smtp.provider.test", "username": "me"}),
        ["mailroom_smarthost must be {}", "username and password together"],
    ),
    "srs domain outside the mail domains": (
        _setting("mailroom_srs_domain", "example.org"),
        ["mailroom_srs_domain ('example.org') must be one of mailroom_domains"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_broken_inventory_fails_in_preflight(case: str, tmp_path: Path) -> None:
    change, messages = CASES[case]
    inventory = _example()
    change(_group_vars(inventory))

    result = _run(inventory, tmp_path)
    output = result.stdout + result.stderr

    assert result.returncode != 0, output
    for message in messages:
        assert message in output, f"{message!r} not in output:\n{output}"
    assert _role_tasks_beyond_preflight(output) == [], output
    assert SECRET not in output


def _provided_tls(group_vars: dict, tmp_path: Path) -> None:
    (tmp_path / "mail.crt").write_text("certificate\n")
    (tmp_path / "mail.key").write_text("key\n")
    group_vars.update(
        mailroom_tls_mode="provided",
        mailroom_tls_certificate_src=str(tmp_path / "mail.crt"),
        mailroom_tls_private_key_src=str(tmp_path / "mail.key"),
    )


def _hash_and_second_domain(group_vars: dict, tmp_path: Path) -> None:
    group_vars["mailroom_domains"] = ["example.test", "example.org"]
    group_vars["mailroom_users"].append(
        {
            "address": "bob.smith+lists@example.org",
            "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA",
        }
    )


def _aliases_quota_and_ports(group_vars: dict, tmp_path: Path) -> None:
    group_vars["mailroom_users"][0].update(quota="2G", state="active")
    group_vars["mailroom_aliases"] = [
        {"address": "sales@example.test", "to": ["alice@example.test", "partner@example.net"]},
        {"address": "@example.test", "to": "alice@example.test"},
    ]
    group_vars["mailroom_submissions_port"] = 0
    group_vars["mailroom_pop3_port"] = 0
    group_vars["mailroom_metrics_allow"] = ["192.0.2.10/32", "2001:db8::/64"]
    group_vars["mailroom_smtp_limits"] = {"max_recipients": 50}


GOOD = {
    "as shipped": lambda group_vars, tmp_path: None,
    "aliases, quota, ports and limits": _aliases_quota_and_ports,
    "provided certificate": _provided_tls,
    "password hash and a second domain": _hash_and_second_domain,
}


@pytest.mark.parametrize("case", list(GOOD))
def test_good_inventory_passes_preflight(case: str, tmp_path: Path) -> None:
    inventory = copy.deepcopy(_example())
    GOOD[case](_group_vars(inventory), tmp_path)
    result = _run(inventory, tmp_path, "--tags", "preflight")
    output = result.stdout + result.stderr

    assert result.returncode == 0, output
    ran = [m["role"] for m in TASK_LINE.finditer(output) if PREFLIGHT_TASK.match(m["name"])]
    assert set(ran) == set(ROLES), output
    assert _role_tasks_beyond_preflight(output) == [], output
    assert re.search(r"localhost\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", output), output


def test_example_inventory_is_parsed_as_yaml() -> None:
    result = subprocess.run(
        [_tool("ansible-inventory"), "-i", str(INVENTORY), "--list", "-vvv"],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "with yaml plugin" in result.stdout + result.stderr
    listing = yaml.safe_load(result.stdout[result.stdout.index("{") :])
    assert listing["mailservers"]["hosts"] == ["localhost"]
    assert listing["_meta"]["hostvars"]["localhost"]["mailroom_domains"] == ["example.test"]


def test_playbook_syntax() -> None:
    result = subprocess.run(
        [_tool("ansible-playbook"), "--syntax-check", str(PLAYBOOK)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
