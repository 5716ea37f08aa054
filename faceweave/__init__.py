"""faceweave: fast, trustworthy face swap for images and video.

>>> import faceweave
>>> faceweave.swap_image("me.jpg", "photo.png", "out.png", faceweave.SwapSettings(selector="many"))  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["SwapResult", "SwapSettings", "swap", "swap_image", "swap_video"]


def __getattr__(name: str) -> Any:
    # Lazy: `import faceweave` stays cheap (no torch import) until the API is used.
    if name in ("swap", "swap_image", "swap_video"):
        from faceweave import api

        return api.swap
    if name == "SwapResult":
        from faceweave.result import SwapResult

        return SwapResult
    if name == "SwapSettings":
        from faceweave.settings import SwapSettings

        return SwapSettings
    raise AttributeError(f"module 'faceweave' has no attribute {name!r}")
