"""``faceweave demo``: swap the bundled public-domain faces, write a side-by-side sheet and a quality report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from rich.console import Console

from faceweave.data import media_path
from faceweave.settings import SwapSettings

#: (source, target) pairs of three different people (public-domain photos, see data/media/ATTRIBUTION.md).
DEMO_PAIRS = [("grace_hopper.jpg", "astronaut.png"), ("astronaut.png", "obama.jpg"), ("obama.jpg", "grace_hopper.jpg")]


def _tile(rgb: np.ndarray, height: int = 320) -> np.ndarray:
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (round(w * height / h), height), interpolation=cv2.INTER_AREA)


def side_by_side(rows: list[list[np.ndarray]], height: int = 320, gap: int = 8) -> np.ndarray:
    """One sheet: each row ``[source, target, result]`` scaled to ``height``, on a white background."""
    tiled = [[_tile(im, height) for im in row] for row in rows]
    width = max(sum(t.shape[1] for t in row) + gap * (len(row) + 1) for row in tiled)
    sheet = np.full((len(tiled) * (height + gap) + gap, width, 3), 255, np.uint8)
    y = gap
    for row in tiled:
        x = gap
        for t in row:
            sheet[y : y + height, x : x + t.shape[1]] = t
            x += t.shape[1] + gap
        y += height + gap
    return sheet


def run_demo(
    out_dir: Path, *, device: str = "auto", video: bool = True, console: Console | None = None
) -> dict[str, Any]:
    """Run the demo into ``out_dir``; return the report that the CLI prints."""
    from faceweave.eval.metrics import evaluate
    from faceweave.media.image import read_image
    from faceweave.pipeline.engine import SwapEngine
    from faceweave.pipeline.image import swap_image
    from faceweave.provenance.c2pa import Ingredient
    from faceweave.provenance.mark import Marking, write_marked_image

    console = console or Console(stderr=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = SwapSettings.build(device=device)
    engine = SwapEngine(settings)
    rows: list[list[Any]] = []
    images: list[dict[str, Any]] = []
    report: dict[str, Any] = {"out_dir": str(out_dir), "images": images, "device": str(engine.device)}
    for src_name, tgt_name in DEMO_PAIRS:
        src = read_image(media_path(src_name)).rgb
        tgt = read_image(media_path(tgt_name))
        t0 = time.perf_counter()
        prepared = engine.prepare_sources([src])
        result, _ = swap_image(prepared, tgt.rgb, engine)
        ms = (time.perf_counter() - t0) * 1000
        name = f"{Path(src_name).stem}_into_{Path(tgt_name).stem}.png"
        ingredients = [Ingredient.of_file("source", media_path(src_name)), Ingredient.of_file("target",
                                                                                        media_path(tgt_name))]
        write_marked_image(out_dir / name, result, Marking.from_settings(settings), like=tgt, ingredients=ingredients)
        quality = evaluate(src, tgt.rgb, result, engine)
        rows.append([src, tgt.rgb, result])
        images.append({"source": src_name, "target": tgt_name, "output": name, "ms": round(ms, 1),
                                 **quality.to_dict()})
        console.print(f"{src_name} → {tgt_name}: identity to source {quality.identity_to_source:.3f}, "
                      f"to target {quality.identity_to_target:.3f}, NME {quality.landmark_nme:.3f}, "
                      f"seam {quality.seam_ratio:.2f} ({ms:.0f} ms)")
    # the sheet shows the swapped results: it is an output like them (its ingredients are the bundled inputs)
    all_inputs = sorted({name for pair in DEMO_PAIRS for name in pair})
    write_marked_image(out_dir / "sheet.png", side_by_side(rows), Marking.from_settings(settings),
                       ingredients=[Ingredient.of_file("input", media_path(n)) for n in all_inputs])
    console.print(f"side-by-side sheet (source | target | result): {out_dir / 'sheet.png'}")
    if video:
        report["video"] = _demo_video(out_dir, device, console)
    return report


def _demo_video(out_dir: Path, device: str, console: Console) -> dict[str, Any]:
    from faceweave.api import swap

    settings = SwapSettings.build(device=device)
    result = swap([media_path("astronaut.png")], media_path("carphone_pristine.mp4"), out_dir / "carphone_swapped.mp4",
                  settings)
    console.print(f"video: {result.output} ({result.frames} frames, {result.seconds:.1f} s)")
    return {"output": result.output.name, "frames": result.frames, "seconds": round(result.seconds, 2),
            "faces_swapped": result.faces_swapped}
