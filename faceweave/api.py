"""The Python API: the same operations as the CLI, with one frozen :class:`SwapSettings` per call.

>>> from faceweave import api
>>> result = api.swap("source.jpg", "target.png", "out.png")            # doctest: +SKIP
>>> result = api.swap(["a.jpg", "b.jpg"], "clip.mp4", "out.mp4", api.SwapSettings(selector="many"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

from faceweave.progress import ProgressCallback, no_progress
from faceweave.result import SwapResult
from faceweave.settings import SwapSettings

PathArg = str | PathLike[str]


def swap(
    sources: PathArg | Sequence[PathArg],
    target: PathArg,
    output: PathArg,
    settings: SwapSettings | None = None,
    *,
    progress: ProgressCallback = no_progress,
    work_dir: PathArg | None = None,
    reference: PathArg | None = None,
) -> SwapResult:
    """Swap the face(s) of ``sources`` into ``target`` (an image or a video), writing ``output`` atomically.

    The media kind is sniffed from the target's bytes. ``work_dir`` (videos) keeps finished segments so that a
    rerun after a crash resumes from the last completed one. ``reference`` is an image of the person to swap
    (``selector="reference"``; default: the sources themselves).
    """
    from faceweave.media.image import sniff_media_kind

    settings = settings or SwapSettings()
    srcs = [sources] if isinstance(sources, (str, PathLike)) else list(sources)
    if sniff_media_kind(Path(target)) == "video":
        from faceweave.pipeline.video import swap_video

        return swap_video(srcs, target, output, settings, progress=progress, work_dir=work_dir, reference=reference)
    from faceweave.pipeline.image import swap_image_file

    return swap_image_file(srcs, target, output, settings, progress=progress, reference=reference)


__all__ = ["SwapResult", "SwapSettings", "swap"]
