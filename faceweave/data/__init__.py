"""Bundled public-domain / CC-BY media (see ATTRIBUTION.md beside the files) used by the demo and tests."""

from __future__ import annotations

from pathlib import Path

MEDIA_DIR = Path(__file__).parent / "media"


def media_path(name: str) -> Path:
    """Path of a bundled media file, e.g. ``media_path("astronaut.png")``."""
    path = MEDIA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"bundled media {name!r} not found in {MEDIA_DIR}")
    return path
