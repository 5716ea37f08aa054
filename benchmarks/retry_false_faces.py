"""False faces from the rotation retry (issue 21) against real rotated faces: the scores both looks give them.

The built-in detector retries frames where the upright views find nothing on copies rotated by ±30°/±60°
(``RETRY_ANGLES``); a face found so carries ``Face.extra["from_retry"]``, and after the refinement look every face
carries ``extra["looks"] = (first look, second look, second look centred on the face)``. This probe runs the image
path's detector (``FaceDetector()`` as ``SwapEngine`` builds it on the CPU; ``--level-views off``: CUDA's tiles)
over

* every frame of the bundled Big Buck Bunny clip (no human face), and face-less crops of the shared photos (the
  background beside, above and below every face the upright detector finds);
* the shared portraits and every tenth carphone frame, as they are and scaled to a 64 px face, turned by 0, ±30,
  ±45, ±60, ±75, ±90, ±105 and ±120° on an expanded canvas (the whole photo stays in the frame): once as is
  ("natural") and once with the upright views blinded, so that the retry alone finds the face ("forced_retry");
  with ``--edge`` also cut through the face (40 % of it outside the frame);
* the group grids of ``quality_set.py --groups`` and the upright faces of the quality set's targets and of every
  carphone frame,

and prints JSON: every face on a face-less image, every real face found or missed with its looks, and a summary
(the best look of the retry's false faces against the real faces the retry finds). ``--retry-confirm 0
--weak-first 0`` measures the old rule (no extra bar for doubtful first looks); the defaults are the module's
``RETRY_CONFIRM_SCORE`` and ``WEAK_FIRST_SCORE``. About 1.5 min on the 2-core dev VM (``--edge``: 2 min).

    PYTHONPATH=$PWD python benchmarks/retry_false_faces.py --retry-confirm 0 --weak-first 0 --json before.json
    PYTHONPATH=$PWD python benchmarks/retry_false_faces.py --edge --json after.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from faceweave.analysis import detect as detect_module
from faceweave.analysis.detect import FaceDetector, image_to_frames
from faceweave.analysis.face import Face
from faceweave.data import media_path
from faceweave.eval.cases import group_grid

PORTRAITS = ("astronaut.png", "obama.jpg", "obama2.jpg", "grace_hopper.jpg")
ANGLES = (0.0, 30.0, -30.0, 45.0, -45.0, 60.0, -60.0, 75.0, -75.0, 90.0, -90.0, 105.0, -105.0, 120.0, -120.0)
# the group grids of benchmarks/quality_set.py --groups
GRIDS = (("obama.jpg", 50), ("obama.jpg", 40), ("obama.jpg", 60), ("astronaut.png", 50), ("grace_hopper.jpg", 45),
         ("grace_hopper.jpg", 60), ("astronaut.png", 40))
MIN_CROP = 96  # smallest side of a background crop


def _media(name: str, shared: Path | None) -> Path:
    return media_path(name) if shared is None else shared / name


def _rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _video_frames(path: Path, step: int = 1) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [np.ascontiguousarray(f.to_ndarray(format="rgb24")) for k, f in enumerate(c.decode(video=0))
                if k % step == 0]


def rotate_expanded(rgb: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """``rgb`` turned ``angle`` degrees counter-clockwise (cv2's sense) on a canvas that holds all of it (black
    corners). Returns the image and the ``(2, 3)`` map old pixel -> new pixel."""
    h, w = rgb.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(turn[0, 0]), abs(turn[0, 1])
    nw, nh = int(math.ceil(h * sin + w * cos)), int(math.ceil(h * cos + w * sin))
    turn[0, 2] += nw / 2 - w / 2
    turn[1, 2] += nh / 2 - h / 2
    return np.ascontiguousarray(cv2.warpAffine(rgb, turn, (nw, nh), flags=cv2.INTER_CUBIC)), turn


def background_crops(rgb: np.ndarray, faces: list[Face], margin: float = 0.6) -> list[tuple[str, np.ndarray]]:
    """Strips of ``rgb`` left of, right of, above and below all faces (boxes grown by ``margin`` of their side on
    every side, so no hair, chin or ear is left), those at least ``MIN_CROP`` px on both sides."""
    h, w = rgb.shape[:2]
    if not faces:
        return [("whole", rgb)]
    boxes = np.array([f.box.tolist() for f in faces])
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None]
    grown = boxes + np.hstack([-side, -side, side, side]) * margin
    x0, y0 = max(0, int(grown[:, 0].min())), max(0, int(grown[:, 1].min()))
    x1, y1 = min(w, int(math.ceil(grown[:, 2].max()))), min(h, int(math.ceil(grown[:, 3].max())))
    strips = {"left": rgb[:, :x0], "right": rgb[:, x1:], "top": rgb[:y0], "bottom": rgb[y1:]}
    return [(k, np.ascontiguousarray(v)) for k, v in strips.items() if min(v.shape[:2]) >= MIN_CROP]


def face_record(face: Face, hw: tuple[int, int]) -> dict[str, Any]:
    x0, y0, x1, y1 = face.box.tolist()
    first, second, centred = face.extra.get("looks", (face.score, None, None))
    return {"score": round(face.score, 4), "first": round(first, 4),
            "second": None if second is None else round(second, 4), "second_centred": centred,
            "best_look": round(max(first, second if second is not None else 0.0), 4),
            "best_centred_look": round(max(first, second if centred else 0.0), 4),
            "from_retry": bool(face.extra.get("from_retry", False)),
            "inside": x0 > 0 and y0 > 0 and x1 < hw[1] - 1 and y1 < hw[0] - 1,
            "box": [round(v, 1) for v in (x0, y0, x1, y1)], "roll_deg": round(math.degrees(face.roll), 1)}


def detect(detector: FaceDetector, rgb: np.ndarray) -> list[Face]:
    reset = getattr(detector, "reset_forced", None)
    if reset is not None:
        reset()
    return detector.detect(image_to_frames(rgb))[0]


def forced_retry(detector: FaceDetector) -> FaceDetector:
    """``detector`` made to see nothing in its upright views (its first candidate pass of each ``detect``), so
    that the rotation retry runs on every image: what the retry scores on faces the upright views would find."""
    original = detector._candidates
    calls = [0]

    def candidates(*args: Any, **kwargs: Any) -> list[Any]:
        calls[0] += 1
        out = original(*args, **kwargs)
        return [tuple(a[:0] for a in c) for c in out] if calls[0] == 1 else out

    detector._candidates = candidates  # type: ignore[method-assign]
    detector.reset_forced = lambda: calls.__setitem__(0, 0)  # type: ignore[attr-defined]
    return detector


def _find(detector: FaceDetector, rgb: np.ndarray, expected: np.ndarray, side: float, roll: float,
          angle: float) -> dict[str, Any]:
    """The face of ``detector`` on ``rgb`` nearest ``expected`` (within 0.3 ``side``), as a record."""
    faces = detect(detector, rgb)
    hits = [f for f in faces if np.linalg.norm(np.array(f.centre) - expected) < 0.3 * side]
    found: dict[str, Any] = {"found": bool(hits), "faces": len(faces)}
    if hits:
        found.update(face_record(hits[0], rgb.shape[:2]))
        found["roll_error_deg"] = round((math.degrees(hits[0].roll - roll) + angle + 180) % 360 - 180, 1)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--retry-confirm", type=float, default=None,
                    help="RETRY_CONFIRM_SCORE to run with (0: the old rule); default: the module's")
    ap.add_argument("--weak-first", type=float, default=None,
                    help="WEAK_FIRST_SCORE to run with (0: the old rule); default: the module's")
    ap.add_argument("--level-views", choices=["auto", "on", "off"], default="auto",
                    help="small-face pass as level views (the CPU's default) or tiles (CUDA's)")
    ap.add_argument("--shared", type=Path, help="folder of the media (default: the bundled copies, the same files "
                    "as the shared media)")
    ap.add_argument("--carphone-step", type=int, default=10, help="every n-th carphone frame is rotated")
    ap.add_argument("--bunny-step", type=int, default=1, help="every n-th Big Buck Bunny frame")
    ap.add_argument("--angles", type=float, nargs="+", default=list(ANGLES), help="rotations, degrees (cv2's sense)")
    ap.add_argument("--face-px", type=float, nargs="+", default=[0.0, 64.0],
                    help="face widths to scale the rotated photos to (0: as they are)")
    ap.add_argument("--edge", action="store_true", help="also the rotated photos cut through the face")
    ap.add_argument("--skip", action="append", default=[], choices=["bunny", "crops", "real", "grids", "cases"])
    ap.add_argument("--json", type=Path, help="also write the report here")
    args = ap.parse_args()
    if args.retry_confirm is not None:
        detect_module.RETRY_CONFIRM_SCORE = args.retry_confirm
    if args.weak_first is not None:
        detect_module.WEAK_FIRST_SCORE = args.weak_first
    level = {"auto": None, "on": True, "off": False}[args.level_views]
    detector = FaceDetector(level_views=level)
    report: dict[str, Any] = {"retry_confirm": detect_module.RETRY_CONFIRM_SCORE,
                              "weak_first": detect_module.WEAK_FIRST_SCORE,
                              "confirm": detect_module.CONFIRM_SCORE, "level_views": detector.level_views,
                              "retry_angles": list(detect_module.RETRY_ANGLES)}
    started = time.perf_counter()
    false_faces: list[dict[str, Any]] = []

    if "bunny" not in args.skip:
        frames = _video_frames(media_path("bigbuckbunny.mp4"), args.bunny_step)
        for k, rgb in enumerate(frames):
            for face in detect(detector, rgb):
                false_faces.append({"image": f"bigbuckbunny.mp4#{k * args.bunny_step}",
                                    **face_record(face, rgb.shape[:2])})
        report["bunny_frames"] = len(frames)

    if "crops" not in args.skip:
        crops = 0
        for name in PORTRAITS:
            rgb = _rgb(_media(name, args.shared))
            for where, crop in background_crops(rgb, detect(detector, rgb)):
                crops += 1
                for face in detect(detector, crop):
                    false_faces.append({"image": f"{name}:{where}{list(crop.shape[:2])}",
                                        **face_record(face, crop.shape[:2])})
        report["background_crops"] = crops
    report["false_faces"] = false_faces

    real: list[dict[str, Any]] = []
    if "real" not in args.skip:
        images = [(name, _rgb(_media(name, args.shared))) for name in PORTRAITS]
        carphone = _video_frames(_media("carphone_pristine.mp4", args.shared), args.carphone_step)
        images += [(f"carphone#{k * args.carphone_step}", rgb) for k, rgb in enumerate(carphone)]
        forced = forced_retry(FaceDetector(level_views=level))
        for name, full in images:
            upright_full = detect(detector, full)
            if not upright_full:
                real.append({"image": name, "error": "no upright face"})
                continue
            for face_px in args.face_px:
                if face_px:  # the whole photo scaled so that its largest face is face_px wide
                    scale = face_px / float(upright_full[0].box[2] - upright_full[0].box[0])
                    if scale >= 1:
                        continue
                    rgb = cv2.resize(full, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                    upright = detect(detector, rgb)
                    if not upright:
                        real.append({"image": name, "face_px": face_px, "error": "no upright face"})
                        continue
                else:
                    rgb, upright = full, upright_full
                main_face = upright[0]  # the largest
                side = max(float(main_face.box[2] - main_face.box[0]), float(main_face.box[3] - main_face.box[1]))
                for angle in args.angles:
                    turned, turn = rotate_expanded(rgb, angle)
                    expected = turn[:, :2] @ np.array(main_face.centre) + turn[:, 2]
                    row: dict[str, Any] = {"image": name, "face_px": face_px or round(side), "angle_ccw": angle}
                    for key, det in (("natural", detector), ("forced_retry", forced)):
                        row[key] = _find(det, turned, expected, side, main_face.roll, angle)
                    if args.edge:  # the turned photo cut through the face: 40 % of it outside, on the right
                        cut = np.ascontiguousarray(turned[:, : int(expected[0] + 0.1 * side)])
                        for key, det in (("edge_natural", detector), ("edge_forced_retry", forced)):
                            row[key] = _find(det, cut, expected, side, main_face.roll, angle)
                    real.append(row)
    report["real"] = real

    grids: dict[str, Any] = {}
    if "grids" not in args.skip:
        for name, px in GRIDS:
            grid, expected = group_grid(name, px)
            records = [face_record(f, grid.shape[:2]) for f in detect(detector, grid)]
            grids[f"{name}@{px}px"] = {
                "found": len(records), "expected": expected,
                "min_first": min((r["first"] for r in records), default=None),
                "min_second_centred": min((r["second"] for r in records if r["second_centred"]), default=None),
                "min_best_look": min((r["best_look"] for r in records), default=None),
                "looks": [(r["first"], r["second"], r["second_centred"]) for r in records]}
    report["grids"] = grids

    upright_real: list[dict[str, Any]] = []
    if "cases" not in args.skip:  # upright real faces: the quality set's targets and every carphone frame
        from faceweave.eval.cases import SPLITS, build_cases

        unique = {f"{c.target_name}:{c.variant}": c.target for split in SPLITS for c in build_cases(split)}
        targets = list(unique.items())
        targets += [(f"carphone#{k}", rgb) for k, rgb in
                    enumerate(_video_frames(_media("carphone_pristine.mp4", args.shared)))]
        for name, rgb in targets:
            faces = detect(detector, rgb)
            upright_real.append({"image": name, "faces": [face_record(f, rgb.shape[:2]) for f in faces]})
    report["upright_real"] = upright_real

    retry_real = [r[k] for r in real for k in ("natural", "forced_retry")
                  if k in r and r[k].get("from_retry") and r[k].get("inside")]
    natural = [r["natural"] for r in real if "natural" in r]
    retry_false = [f for f in false_faces if f["from_retry"] and f["inside"]]
    report["summary"] = {
        "false_faces": len(false_faces),
        "false_images": len({f["image"] for f in false_faces}),
        "false_from_retry": sum(f["from_retry"] for f in false_faces),
        "false_best_look_max_retry": max((f["best_look"] for f in retry_false), default=None),
        "false_best_centred_look_max_retry": max((f["best_centred_look"] for f in retry_false), default=None),
        "real_found": sum(r["found"] for r in natural), "real_total": len(natural),
        "real_found_by_retry": sum(r.get("from_retry", False) for r in natural),
        "real_missed": [(r["image"], r["face_px"], r["angle_ccw"]) for r in real
                        if "natural" in r and not r["natural"]["found"]],
        "forced_retry_found": sum(r["forced_retry"]["found"] for r in real if "forced_retry" in r),
        "real_from_retry_inside": len(retry_real),
        "real_best_look_min_retry": min((r["best_look"] for r in retry_real), default=None),
        "real_best_centred_look_min_retry": min((r["best_centred_look"] for r in retry_real), default=None),
        "grids_found": {k: f"{v['found']}/{v['expected']}" for k, v in grids.items()},
        "upright_real_without_face": [r["image"] for r in upright_real if not r["faces"]],
        "upright_real_min_first": min((f["first"] for r in upright_real for f in r["faces"][:1]), default=None),
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
