"""faceweave: fast, trustworthy face swap for images and video."""

from __future__ import annotations

__version__ = "0.1.0"
