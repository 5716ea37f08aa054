"""Realism figures of the built-in swap on the issue-21 test set (faceweave/eval/cases.py).

    PYTHONPATH=$PWD python benchmarks/quality_set.py --split tune --json tune.json [--out-dir DIR] [--set k=v ...]
    PYTHONPATH=$PWD python benchmarks/quality_set.py --groups          # detection recall on grids + face-less frames
    PYTHONPATH=$PWD python benchmarks/quality_set.py --video           # colour flicker on carphone
    PYTHONPATH=$PWD python benchmarks/quality_set.py --split tune --source-scale 0.4   # small sources, magnified
    PYTHONPATH=$PWD python benchmarks/quality_set.py --split tune --split heldout --mirror   # the photos mirrored

Every case runs with the default settings (plus ``--set`` overrides) on the CPU, as a new user would, and is judged
by faceweave.eval (identity by dlib, realism metrics of faceweave/eval/realism.py).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from faceweave.eval.cases import OCCLUDERS, VARIANTS, build_cases, bunny_frames, group_grid
from faceweave.eval.metrics import evaluate
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.image import swap_image
from faceweave.settings import SwapSettings


def _settings(overrides: list[str]) -> SwapSettings:
    values: dict[str, Any] = {"device": "cpu"}
    for item in overrides:
        key, _, raw = item.partition("=")
        values[key] = json.loads(raw) if raw[:1] in "0123456789-[{tfn" and raw not in ("none",) else raw
    return SwapSettings.build(**values)


def run_split(split: str, settings: SwapSettings, out_dir: Path | None = None,
              variants: tuple[str, ...] | None = None, source_scale: float = 1.0,
              mirror: bool = False, oracle: bool = False) -> list[dict[str, Any]]:
    """Swap and judge every case of ``split``; one row per case. ``source_scale`` < 1 shrinks every source image
    (area) first, so that its face is magnified onto the target (as a small source photo is); identity is then
    judged against the shrunk source. ``oracle``: on cases with a known occluder, also judge the output with the
    target put back under that mask (:func:`keep_known_occluder`); with the estimate off, the identity a perfect
    occlusion mask would give."""
    engine = SwapEngine(settings)
    rows = []
    prepared: dict[str, Any] = {}
    for case in build_cases(split, variants or VARIANTS, mirror):
        if source_scale != 1.0:
            import cv2

            case = replace(case, source=cv2.resize(case.source, None, fx=source_scale, fy=source_scale,
                                                   interpolation=cv2.INTER_AREA))
        if case.source_name not in prepared:
            prepared[case.source_name] = engine.prepare_sources([case.source])
        t0 = time.perf_counter()
        out, n = swap_image(prepared[case.source_name], case.target, engine)
        ms = (time.perf_counter() - t0) * 1000
        q = evaluate(case.source, case.target, out, engine, case.occluder)
        row = {"case": case.name, "variant": case.variant, "faces": n, "ms": round(ms), **q.to_dict()}
        if oracle and case.occluder is not None:
            qo = evaluate(case.source, case.target, keep_known_occluder(out, case.target, case.occluder), engine,
                          case.occluder)
            row["oracle_identity_to_source"] = round(qo.identity_to_source, 4)
            row["oracle_identity_to_target"] = round(qo.identity_to_target, 4)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
        if out_dir is not None:
            from faceweave.media.image import write_image

            stem = case.name.replace("/", "_").replace(":", "_").replace(">", "")
            out_dir.mkdir(parents=True, exist_ok=True)
            write_image(out_dir / f"{stem}.png", out)
            write_image(out_dir / f"{stem}_target.png", case.target)
            if case.occluder is not None:
                write_image(out_dir / f"{stem}_occluder.png", np.repeat(case.occluder[..., None] * 255, 3, 2)
                            .astype(np.uint8))
    return rows


def keep_known_occluder(output: np.ndarray, target: np.ndarray, occluder: np.ndarray) -> np.ndarray:
    """``output`` with the target's pixels under the known ``occluder`` mask (grown 2 px and feathered 0.7 px, as the
    built-in estimate grows and feathers what it keeps): what a perfect occlusion mask would give."""
    import cv2

    grown = cv2.dilate(occluder.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(np.float32)
    m = cv2.GaussianBlur(grown, (0, 0), 0.7)[..., None]
    return np.asarray((output * (1 - m) + target * m).round().clip(0, 255), np.uint8)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue-21 goals' figures over a split."""

    def finite(key: str, sel: list[dict[str, Any]] | None = None) -> list[float]:
        return [float(r[key]) for r in (sel or rows) if r.get(key) is not None and not math.isnan(float(r[key]))]

    occ = [r for r in rows if r["variant"] in OCCLUDERS]
    bald = [r for r in rows if r["variant"] == "bald"]
    colour = finite("colour_de")
    oracle = [r for r in occ if r.get("oracle_identity_to_source") is not None]  # rows judged with --oracle
    oracle_moved = sum(r["oracle_identity_to_source"] < r["oracle_identity_to_target"] for r in oracle)
    return {
        "cases": len(rows),
        "identity_moved": f"{sum(bool(r['identity_moved']) for r in rows)}/{len(rows)}",
        "mean_identity_to_source": round(statistics.mean(finite("identity_to_source")), 4),
        "mean_identity_to_source_occluded": (round(statistics.mean(finite("identity_to_source", occ)), 4)
                                             if occ else None),
        "oracle_identity_to_source_occluded": (round(statistics.mean(finite("oracle_identity_to_source", oracle)), 4)
                                               if oracle else None),
        "oracle_identity_moved": f"{oracle_moved}/{len(oracle)}" if oracle else None,
        "occluder_mad_mean": round(statistics.mean(finite("occluder_mad", occ)), 2) if occ else None,
        "occluder_mad_max": round(max(finite("occluder_mad", occ)), 2) if occ else None,
        "occluder_mad_by_kind": {k: round(statistics.mean(finite("occluder_mad", [r for r in occ
                                                                                if r["variant"] == k])), 2)
                                 for k in OCCLUDERS if any(r["variant"] == k for r in occ)},
        "colour_de_median": round(statistics.median(colour), 2) if colour else None,
        "colour_de_max": round(max(colour), 2) if colour else None,
        "novel_colour_median": round(statistics.median(finite("novel_colour")), 4),
        "novel_colour_max": round(max(finite("novel_colour")), 4),
        "colour_de_step_median": round(statistics.median(finite("colour_de_step")), 2),
        "colour_de_step_target_median": round(statistics.median(finite("colour_de_step_target")), 2),
        "seam_max": round(max(finite("seam_ratio")), 3),
        "seam_mean": round(statistics.mean(finite("seam_ratio")), 3),
        "seam_top_max": round(max(finite("seam_top")), 3),
        "seam_top_bald": round(statistics.mean(finite("seam_top", bald)), 3) if bald else None,
        "seam_top_target_bald": round(statistics.mean(finite("seam_top_target", bald)), 3) if bald else None,
        "sharpness_vs_target_min": round(min(finite("sharpness_vs_target")), 3),
        "sharpness_vs_target_median": round(statistics.median(finite("sharpness_vs_target")), 3),
        "sharpness_vs_128_median": round(statistics.median(finite("sharpness_vs_128")), 3),
    }


def run_groups(settings: SwapSettings) -> dict[str, Any]:
    """Faces found on group grids (5×4 at 1280×1200) and on face-less frames."""
    engine = SwapEngine(settings)
    grids = {}
    for name, px in (("obama.jpg", 50), ("obama.jpg", 40), ("obama.jpg", 60), ("astronaut.png", 50),
                     ("grace_hopper.jpg", 45), ("grace_hopper.jpg", 60), ("astronaut.png", 40)):
        img, expected = group_grid(name, px)
        t0 = time.perf_counter()
        found = len(engine.detector.detect(engine.to_tensor(img))[0])
        grids[f"{name}@{px}px"] = {"found": found, "expected": expected, "s": round(time.perf_counter() - t0, 2)}
        print(name, px, grids[f"{name}@{px}px"], file=sys.stderr)
    false = [len(engine.detector.detect(engine.to_tensor(f))[0]) for f in bunny_frames(6, 20)]
    return {"grids": grids, "faceless_frames": len(false), "false_faces": sum(false)}


def run_video(settings: SwapSettings, work: Path) -> dict[str, Any]:
    """Swap astronaut onto the carphone clip through the public API and compare its face colour flicker."""
    import av

    from faceweave.api import swap
    from faceweave.data import media_path
    from faceweave.eval.realism import colour_flicker

    work.mkdir(parents=True, exist_ok=True)
    out = work / "carphone_swapped.mp4"
    result = swap(media_path("astronaut.png"), media_path("carphone_pristine.mp4"), out, settings)

    def frames(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as c:
            return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]

    f_in, f_out = frames(media_path("carphone_pristine.mp4")), frames(out)
    engine = SwapEngine(settings)
    lms, keep_in, keep_out = [], [], []
    for a, b in zip(f_in, f_out, strict=False):
        faces = engine.analyze(engine.to_tensor(a))[0]
        if not faces:
            continue
        face = max(faces, key=lambda f: f.area)
        assert face.landmarks is not None
        lms.append(face.landmarks[:, :2].numpy().astype(np.float64))
        keep_in.append(a)
        keep_out.append(b)
    return {"frames": len(f_in), "faces_swapped": result.faces_swapped,
            **{k: round(v, 4) for k, v in colour_flicker(keep_in, keep_out, lms).items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", action="append", choices=["tune", "heldout"], default=[])
    ap.add_argument("--groups", action="store_true")
    ap.add_argument("--video", action="store_true")
    ap.add_argument("--variants", help="comma-separated subset of the cases' variants")
    ap.add_argument("--set", action="append", default=[], help="a SwapSettings override, key=value")
    ap.add_argument("--source-scale", type=float, default=1.0,
                    help="shrink each source image by this factor first (its face is then magnified, e.g. 0.4)")
    ap.add_argument("--mirror", action="store_true",
                    help="build the splits from the photos mirrored left to right (a generalisation check)")
    ap.add_argument("--oracle", action="store_true",
                    help="also judge each occluded case with the target kept under its known occluder mask (with "
                         "occlusion=false: what a perfect occlusion mask would give)")
    ap.add_argument("--out-dir", type=Path)
    ap.add_argument("--json", type=Path, help="write the report here")
    args = ap.parse_args()
    settings = _settings(args.set)
    report: dict[str, Any] = {"settings": args.set}
    for split in args.split:
        label = f"{split}-mirror" if args.mirror else split
        rows = run_split(split, settings, args.out_dir / label if args.out_dir else None,
                         tuple(args.variants.split(",")) if args.variants else None, args.source_scale, args.mirror,
                         args.oracle)
        report[label] = {"summary": summarise(rows), "rows": rows}
        print(label, json.dumps(report[label]["summary"], indent=1))
    if args.groups:
        report["groups"] = run_groups(settings)
        print(json.dumps(report["groups"], indent=1))
    if args.video:
        report["video"] = run_video(settings, args.out_dir or Path("/tmp/fw-quality"))
        print(json.dumps(report["video"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
