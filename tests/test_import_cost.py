"""What a cold ``faceweave swap`` imports before its first frame (issue 19 goal 4): every ``faceweave`` command loads
the CLI, which mounts the sub-commands of the live mode and the service; their heavy parts (the live session's media
stack, pydantic-settings) load only when those commands run, and signing (c2pa, cryptography) only when an output is
signed, after the frames. Each check runs in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _loaded_after(statement: str, modules: list[str]) -> list[str]:
    code = f"import sys\n{statement}\nprint(','.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_cli_does_not_load_the_live_session_or_the_service_settings() -> None:
    assert _loaded_after("import faceweave.cli", ["faceweave.live.session", "faceweave.live.sinks",
                                                  "faceweave.serve.settings", "pydantic_settings", "torch"]) == []


@pytest.mark.parametrize("name", ["LiveSession", "run_live", "LiveStats", "Mailbox"])
def test_live_package_names_still_resolve(name: str) -> None:
    import faceweave.live
    from faceweave.live import mailbox, session

    assert getattr(faceweave.live, name) is getattr(mailbox if name in ("LiveStats", "Mailbox") else session, name)


def test_video_pipeline_does_not_load_signing() -> None:
    assert _loaded_after("import faceweave.pipeline.video", ["c2pa", "cryptography", "faceweave.serve",
                                                             "faceweave.live"]) == []
