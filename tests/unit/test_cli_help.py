"""The command line as a whole: every command and subcommand answers --help, and says what it does."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mailroom.cli import build_parser
from tests.conftest import config_data


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], str]]:
    """Every (command path, help text) below parser, depth first."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                found.append(((*path, name), helps.get(name) or ""))
                found += commands(sub, (*path, name))
    return found


ALL = commands(build_parser())
LEAVES = [
    path for path, _ in ALL if not any(other[: len(path)] == path and other != path for other, _ in ALL)
]


def test_the_walk_finds_the_commands() -> None:
    paths = {path for path, _ in ALL}
    for expected in [
        ("check",),
        ("monitoring", "scrape-config"),
        ("queue", "list"),
        ("backup", "status"),
        ("dns",),
    ]:
        assert expected in paths


def test_the_installed_command_answers_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mailroom.cli", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout.startswith("usage: mailroom"), result.stderr


@pytest.mark.parametrize("path", [path for path, _ in ALL], ids=" ".join)
def test_every_command_answers_help(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*path, "--help"])
    assert info.value.code == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"usage: mailroom {' '.join(path)}") and err == ""
    assert "show this help message and exit" in out


@pytest.mark.parametrize("path", [path for path, _ in ALL], ids=" ".join)
def test_every_command_says_what_it_does(path: tuple[str, ...]) -> None:
    text = dict(ALL)[path]
    assert text and text[0].islower() and not text.endswith("."), f"mailroom {' '.join(path)}: {text!r}"


@pytest.mark.parametrize(
    "path",
    [
        ("accounts", "list"),
        ("queue", "list"),
        ("queue", "retry"),
        ("dns",),
        ("check",),
        ("monitoring", "scrape-config"),
    ],
    ids=" ".join,
)
def test_list_like_outputs_have_json(path: tuple[str, ...]) -> None:
    assert path in LEAVES
    parser = build_parser()
    args = parser.parse_args([*path, *(["x"] if path == ("queue", "show") else []), "--json"])
    assert args.json is True


def test_usage_errors_exit_2_and_say_why() -> None:
    for argv, says in ((["nonsense"], "invalid choice"), (["queue"], "required"), ([], "required")):
        result = subprocess.run(
            [sys.executable, "-m", "mailroom.cli", *argv], capture_output=True, text=True, check=False
        )
        assert result.returncode == 2
        assert says in result.stderr and result.stderr.startswith("usage: mailroom")


def test_a_missing_configuration_is_named(tmp_path) -> None:
    missing = tmp_path / "absent.yml"
    for argv in (["accounts", "list"], ["queue", "list"], ["dns"], ["monitoring", "scrape-config"]):
        result = subprocess.run(
            [sys.executable, "-m", "mailroom.cli", *argv, "--config", str(missing)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 1, argv
        assert str(missing) in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("command", "key"),
    [("pop3d", "pop3"), ("imapd", "imap"), ("metricsd", "metrics"), ("webd", "web")],
)
def test_a_daemon_without_its_section_refuses_to_start(tmp_path: Path, command: str, key: str) -> None:
    data = config_data(tmp_path / "mail", 2525, None)
    data.pop("metrics", None)
    config = tmp_path / "mailroom.yml"
    config.write_text(yaml.safe_dump(data))
    done = subprocess.run(
        [sys.executable, "-m", "mailroom.cli", command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert f"mailroom {command}: {config}: {key}: is not configured" in done.stderr
