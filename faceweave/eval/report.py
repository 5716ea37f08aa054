"""``faceweave eval``: judge pairs of (source, target, output) files, images or videos, and draw a contact sheet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from faceweave.errors import InvalidOption
from faceweave.pipeline.engine import SwapEngine
from faceweave.settings import SwapSettings


def _video_frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def evaluate_video(source: Path, target: Path, output: Path, engine: SwapEngine) -> dict[str, Any]:
    """Colour flicker of a swapped video against its input (frames where the input shows a face), and the quality
    of its middle frame."""
    from faceweave.eval.metrics import evaluate
    from faceweave.eval.realism import colour_flicker
    from faceweave.media.image import read_image

    f_in, f_out = _video_frames(target), _video_frames(output)
    lms, keep_in, keep_out = [], [], []
    for a, b in zip(f_in, f_out, strict=False):
        faces = engine.analyze(engine.to_tensor(a))[0]
        if faces:
            face = max(faces, key=lambda f: f.area)
            assert face.landmarks is not None
            lms.append(face.landmarks[:, :2].numpy().astype(np.float64))
            keep_in.append(a)
            keep_out.append(b)
    if not keep_in:
        raise InvalidOption(f"no face found in {target.name}", hint="eval needs a visible face in the input video")
    mid = len(keep_in) // 2
    quality = evaluate(read_image(source).rgb, keep_in[mid], keep_out[mid], engine).to_dict()
    flicker = colour_flicker(keep_in, keep_out, lms)
    return {"frames": len(f_in), "frames_with_face": len(keep_in), "middle_frame": quality,
            **{k: round(v, 4) for k, v in flicker.items()}}


def evaluate_pairs(sources: list[Path], targets: list[Path], outputs: list[Path], occluders: list[Path],
                   befores: list[Path], sheet: Path | None) -> list[dict[str, Any]]:
    """One report per pair (the lists align; ``occluders``/``befores`` may be empty or one per pair)."""
    from faceweave.eval.metrics import evaluate_files
    from faceweave.media.image import read_image, sniff_media_kind, write_image

    if not len(sources) == len(targets) == len(outputs):
        raise InvalidOption("give one --source, --target and --output per pair",
                            hint=f"got {len(sources)}, {len(targets)} and {len(outputs)}")
    for extra, name in ((occluders, "--occluder"), (befores, "--before")):
        if extra and len(extra) != len(sources):
            raise InvalidOption(f"{name} must be given once per pair or not at all")
    engine = SwapEngine(SwapSettings(enhancer=None))
    reports, rows = [], []
    for k, (s, t, o) in enumerate(zip(sources, targets, outputs, strict=True)):
        entry: dict[str, Any] = {"source": str(s), "target": str(t), "output": str(o)}
        if sniff_media_kind(t) == "video":
            entry.update(evaluate_video(s, t, o, engine))
        else:
            occ = occluders[k] if occluders else None
            entry.update(evaluate_files(s, t, o, occ, engine).to_dict())
            if sheet is not None:
                row = [read_image(s).rgb, read_image(t).rgb]
                if befores:
                    row.append(read_image(befores[k]).rgb)
                rows.append([*row, read_image(o).rgb])
        reports.append(entry)
    if sheet is not None and rows:
        from faceweave.demo import side_by_side

        write_image(sheet, side_by_side(rows, height=240))
    return reports
