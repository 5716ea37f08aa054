"""Usage mistakes, run as a subprocess: exit 2, the command's usage line and Click's one-line reason, never "a bug"."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "faceweave.cli", *args], capture_output=True, text=True, timeout=120)


def assert_usage_error(proc: subprocess.CompletedProcess[str], usage: str, *reason: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert lines and lines[0].startswith(f"Usage: {usage}"), proc.stderr
    last = lines[-1]
    assert last.startswith("error [usage_error] "), proc.stderr
    for words in reason:  # case-insensitive: Typer versions spell an argument IMAGE or 'image'
        assert words.lower() in last.lower(), proc.stderr
    lowered = proc.stderr.lower()
    assert "internal" not in lowered and "bug" not in lowered and "Traceback" not in proc.stderr, proc.stderr


# Each case: argv, the usage line's command, words of the reason. The -s/-t/-o values need not exist: Click rejects
# the command line before any file is opened.
CASES = {
    "missing_option": (["swap", "-s", "me.jpg", "-t", "photo.png"], "faceweave swap [OPTIONS]",
                       ["Missing option", "--output"]),
    "unknown_option": (["swap", "-s", "a.jpg", "-t", "b.png", "-o", "c.png", "--bogus"], "faceweave swap [OPTIONS]",
                       ["No such option", "--bogus"]),
    "option_typo": (["swap", "-s", "a.jpg", "-t", "b.png", "--outptu", "c.png"], "faceweave swap [OPTIONS]",
                    ["No such option", "--outptu", "--output"]),
    "unknown_command": (["swp"], "faceweave [OPTIONS] COMMAND", ["No such command 'swp'", "Did you mean 'swap'?"]),
    "bad_choice": (["swap", "-s", "a.jpg", "-t", "b.png", "-o", "c.png", "--selector", "bogus"],
                   "faceweave swap [OPTIONS]", ["--selector", "bogus", "'many'"]),
    "bad_number": (["swap", "-s", "a.jpg", "-t", "b.png", "-o", "c.png", "--batch-size", "abc"],
                   "faceweave swap [OPTIONS]", ["--batch-size", "integer"]),
    "bad_float": (["swap", "-s", "a.jpg", "-t", "b.png", "-o", "c.png", "--shape-transfer", "half"],
                  "faceweave swap [OPTIONS]", ["--shape-transfer"]),
    "missing_argument": (["analyze"], "faceweave analyze [OPTIONS]", ["Missing argument", "image"]),
    "extra_argument": (["swap", "-s", "a.jpg", "-t", "b.png", "-o", "c.png", "stray"], "faceweave swap [OPTIONS]",
                       ["unexpected extra argument", "stray"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_usage_error(case: str) -> None:
    argv, usage, reason = CASES[case]
    assert_usage_error(run(*argv), usage, *reason)


def test_usage_error_in_a_sub_group() -> None:
    assert_usage_error(run("models", "lst"), "faceweave models [OPTIONS] COMMAND", "No such command 'lst'")


def test_no_arguments_shows_help_and_exits_2() -> None:
    proc = run()
    assert proc.returncode == 2, proc.stderr
    assert "swap" in proc.stdout + proc.stderr
    assert "internal_error" not in proc.stderr and "bug" not in proc.stderr.lower()


def test_help_exits_0() -> None:
    proc = run("swap", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--output" in proc.stdout
