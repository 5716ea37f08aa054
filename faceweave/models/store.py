"""Where plug-in model files live: one folder, chosen in one place.

Order: an explicit folder (``SwapSettings.model_dir`` / ``--model-dir``), else ``$FACEWEAVE_MODELS``, else the
user cache dir (``$XDG_CACHE_HOME/faceweave/models`` on Linux, ``~/Library/Caches/faceweave/models`` on macOS,
``%LOCALAPPDATA%\\faceweave\\Cache\\models`` on Windows — what ``platformdirs.user_cache_dir`` would give, without
the dependency). Nothing here creates the folder or touches the network: listing and resolving stay side-effect
free; only ``faceweave models fetch`` creates it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_VAR = "FACEWEAVE_MODELS"


def user_cache_dir(app: str = "faceweave") -> Path:
    """The per-user cache folder of ``app`` for this OS (not created)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / app / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / app
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    # XDG says a relative path is invalid and must be ignored.
    base_dir = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base_dir / app


def model_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The plug-in model folder: ``explicit`` if given, else ``$FACEWEAVE_MODELS``, else the user cache dir.

    ``~`` is expanded; the folder is not created (use :func:`ensure_model_dir` before writing).
    """
    if explicit is not None and str(explicit).strip():
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    return user_cache_dir() / "models"


def ensure_model_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """:func:`model_dir`, created if missing (only writers call this)."""
    path = model_dir(explicit)
    path.mkdir(parents=True, exist_ok=True)
    return path
