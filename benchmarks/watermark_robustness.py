"""Robustness, false positives, visual cost and speed of faceweave's invisible watermark.

    python benchmarks/watermark_robustness.py                       # table on the bundled media, CPU timing
    python benchmarks/watermark_robustness.py --device cuda --json wm.json

Pictures: the bundled stills (faceweave/data/media: the same files as ../shared/media) and every 10th frame of the
two bundled clips. Stills are marked as images are (the luma), clip frames as the video writer marks them (the
pattern in Cr, the V plane of their yuv420p frames; ``--video-plane luma``: in the luma, as before). Each is marked
with a job payload and put through each upload transformation (JPEG q70, WebP
q80, resize to 50 %, a 90 % crop, H.264 crf 28 — for clip frames the whole marked clip is re-encoded, then every
5th frame is checked on its own; and the two clips scaled to 1080p, 720p and 480p, marked, re-encoded, every frame
checked on its own). *Detected* means found with the right payload's sync (``found``); *payload* means the 64-bit
payload (48 bits + CRC-16) also decoded, and was the one written. False positives: the same pictures and
transformations without a mark. The last rows time one 1080p frame: the offset is computed once per video (size +
payload), then added to each frame (RGB array, luma plane, or a torch batch on ``--device``), and detection.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceweave.data import media_path  # noqa: E402
from faceweave.media.image import read_image  # noqa: E402
from faceweave.media.video.encode import frame_plane  # noqa: E402
from faceweave.provenance.watermark import (  # noqa: E402
    ChromaMarker,
    LumaMarker,
    WatermarkPayload,
    detect_watermark,
    embed_watermark,
    embed_watermark_luma,
    embed_watermark_torch,
    psnr,
    watermark_delta,
)
from tests.provenance._transforms import IMAGE_TRANSFORMS, h264  # noqa: E402

RESOLUTIONS = [(1080, 1920), (720, 1280), (480, 854)]
STILLS = ["astronaut.png", "grace_hopper.jpg", "obama.jpg", "obama2.jpg"]
CLIPS = ["bigbuckbunny.mp4", "carphone_pristine.mp4"]
PAYLOAD = WatermarkPayload.for_job("benchmark-job")


def _clip(name: str, limit: int = 60) -> list[np.ndarray]:
    with av.open(str(media_path(name))) as c:
        return [f.to_ndarray(format="rgb24") for _, f in zip(range(limit), c.decode(video=0), strict=False)]


def writer_marked(frames: list[np.ndarray], plane: str = "chroma") -> tuple[list[np.ndarray], list[np.ndarray]]:
    """RGB frames as the video writer marks them, and unmarked: each goes to yuv420p (as the encoder gets it), the
    writer's pattern is added to its V plane (``plane="luma"``: to its Y plane, what the writer did before), and it
    comes back as RGB, as a decoder shows it. Returns ``(marked, unmarked)``: the same round trip, with and without."""
    h, w = frames[0].shape[:2]
    yuv = [av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24").reformat(format="yuv420p")
           for f in frames]
    v = yuv[0].planes[2]
    marker = (LumaMarker(h, w, PAYLOAD) if plane == "luma" else ChromaMarker(h, w, PAYLOAD, (v.height, v.width)))
    index = 0 if plane == "luma" else 2
    plain = [f.to_ndarray(format="rgb24") for f in yuv]
    for f in yuv:
        marker.apply(frame_plane(f, index))
    return [f.to_ndarray(format="rgb24") for f in yuv], plain


def _rate(results: list[bool]) -> str:
    return f"{sum(results)}/{len(results)} ({100 * np.mean(results):.0f} %)" if results else "-"


def robustness(video_plane: str = "chroma") -> dict[str, dict[str, object]]:
    rows: dict[str, dict[str, list[bool]]] = {}
    psnrs: list[float] = []

    def record(group: str, transform: str, marked: np.ndarray, clean: np.ndarray) -> None:
        r, r0 = detect_watermark(marked), detect_watermark(clean)
        row = rows.setdefault(f"{group} / {transform}", {"found": [], "payload": [], "fp": []})
        row["found"].append(r.found)
        row["payload"].append(r.payload == PAYLOAD)
        row["fp"].append(r0.found)

    for name in STILLS:
        rgb = read_image(media_path(name)).rgb
        marked = embed_watermark(rgb, PAYLOAD)
        psnrs.append(psnr(rgb, marked))
        for t, fn in IMAGE_TRANSFORMS.items():
            record("stills", t, fn(marked), fn(rgb))
        record("stills", "h264_crf28", h264([marked])[0], h264([rgb])[0])
    for name in CLIPS:
        marked, frames = writer_marked(_clip(name), video_plane)
        group = f"{name} ({frames[0].shape[1]}x{frames[0].shape[0]})"
        for k in range(0, len(frames), 10):
            psnrs.append(psnr(frames[k], marked[k]))
            for t, fn in IMAGE_TRANSFORMS.items():
                record(group, t, fn(marked[k]), fn(frames[k]))
        enc, enc0 = h264(marked), h264(frames)
        for k in range(0, len(enc), 5):
            record(group, "h264_crf28", enc[k], enc0[k])
        whole, whole0 = detect_watermark(enc[::2][:16]), detect_watermark(enc0[::2][:16])
        row = rows.setdefault(f"{group} / h264_crf28, 16 frames together", {"found": [], "payload": [], "fp": []})
        row["found"].append(whole.found)
        row["payload"].append(whole.payload == PAYLOAD)
        row["fp"].append(whole0.found)
    # the payload from single frames after crf 28, per output resolution: the face clip scaled up as a swap of it
    # would be written at that size (and bigbuckbunny scaled from 720p), marked, re-encoded, every frame read alone
    for name in CLIPS:
        frames = _clip(name, 40)
        for h, w in RESOLUTIONS:
            marked, scaled = writer_marked(
                [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA if h < f.shape[0] else cv2.INTER_CUBIC)
                 for f in frames], video_plane)
            enc = h264(marked)
            enc0 = h264(scaled)
            for k in range(len(enc)):
                record(f"{name} scaled to {w}x{h}", "h264_crf28, single frames", enc[k], enc0[k])
    table = {k: {"detected": _rate(v["found"]), "payload": _rate(v["payload"]), "false_positives": _rate(v["fp"])}
             for k, v in rows.items()}
    table["PSNR dB (min / mean)"] = {"detected": f"{min(psnrs):.1f} / {np.mean(psnrs):.1f}"}
    return table


def timing(device: str, repeats: int = 20) -> dict[str, float]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    out: dict[str, float] = {}

    def best(fn: object) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()  # type: ignore[operator]
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return 1000 * float(np.median(times))

    out["offset, once per video (ms)"] = best(lambda: watermark_delta(1080, 1920, PAYLOAD))
    delta = watermark_delta(1080, 1920, PAYLOAD)
    out["embed, RGB uint8 frame, CPU (ms)"] = best(lambda: embed_watermark(rgb, PAYLOAD, delta=delta))
    out["embed, luma plane uint8, CPU (ms)"] = best(lambda: embed_watermark_luma(rgb[..., 0], delta))
    marker = LumaMarker(1080, 1920, PAYLOAD)
    y = np.ascontiguousarray(rgb[..., 0])
    out["embed, LumaMarker in place (the video writer's step before the chroma mark), CPU (ms)"] = best(
        lambda: marker.apply(y))
    chroma = ChromaMarker(1080, 1920, PAYLOAD, (540, 960))
    v = np.ascontiguousarray(rgb[::2, ::2, 2])
    out["embed, ChromaMarker in place on the V plane (the video writer's step), CPU (ms)"] = best(
        lambda: chroma.apply(v))
    frames = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].to(device, torch.float32) / 255
    d = torch.from_numpy(delta).to(device)
    out[f"embed, (1,3,H,W) float32 on {device} (ms)"] = best(lambda: embed_watermark_torch(frames.clone(), d))
    out["detect, one frame, CPU (ms)"] = best(lambda: detect_watermark(rgb))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="device of the torch embedding path (cpu, cuda, cuda:N)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--skip-robustness", action="store_true", help="only time (e.g. on the GPU box)")
    parser.add_argument("--video-plane", choices=("chroma", "luma"), default="chroma",
                        help="how clip frames are marked: as the video writer does (chroma: the V plane), or in the "
                             "luma (what the writer did before)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    report: dict[str, object] = {}
    if not args.skip_robustness:
        table = robustness(args.video_plane)
        report["robustness"] = table
        print("| pictures / transformation | detected | payload decoded | false positives (unmarked) |")
        print("|---|---|---|---|")
        for k, v in table.items():
            print(f"| {k} | {v.get('detected', '-')} | {v.get('payload', '-')} | {v.get('false_positives', '-')} |")
    times = timing(args.device)
    report["timing_1080p"] = times
    print("\n| 1080p frame | ms |\n|---|---|")
    for k, ms in times.items():
        print(f"| {k} | {ms:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
