"""What marking costs the video path on the CPU: the same runs with and without it, in one process, interleaved.

Two paths, each run ``--repeats`` times as A/B pairs in alternating order (AB, BA, AB, …: a drift in the machine's
load hits both sides alike). Each pair gives one ratio, marked time / unmarked time; the report gives the median
ratio and its spread (min, max, quartiles), the same ratio of the process's CPU time (all its threads: x264's too;
much less moved by other jobs than the wall clock), the load average before and after, and each side's medians:

- ``swap``: :func:`faceweave.pipeline.video.swap_video` with ``watermark``/``c2pa`` on vs off (container tags are
  always written: they cost nothing measurable). Marked includes the watermark in every frame's chroma (Cr) and C2PA
  signing of the finished MP4 (hashing the whole file), or one of them with ``--marks watermark|c2pa``. One
  unmeasured swap runs first (the first swap of a frame size pays cuDNN plans and graph captures).
- ``transcode``: decode → encode only (no face work), the worst case for a relative cost, with and without the
  watermark pattern in every frame.

The input is benchmarks/video_cpu.py's clip (carphone upscaled, letterboxed, looped) or, with ``--clip
carphone-full`` / ``bigbuckbunny``, that clip scaled to fill the frame. ``--encoder-only``: x264 alone, one
thread, on the same frames with and without the pattern (both with no picture type, as the writer sends them), with
the output's frame types (``I``/``P``/``B``): x264 decides them from the content, and the pattern can change them.

    python benchmarks/video_marking_cost.py --sizes 1280x720,1920x1080 --frames 60 --repeats 3
    python benchmarks/video_marking_cost.py --encoder-only --clip bigbuckbunny --frames 40 --repeats 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import torch

sys.path.insert(0, str(Path(__file__).parent))
from video_cpu import make_clip  # noqa: E402  (a sibling script, not a package)

from faceweave.data import media_path  # noqa: E402
from faceweave.media.video.encode import EncoderSettings, transcode  # noqa: E402
from faceweave.pipeline.engine import SwapEngine  # noqa: E402
from faceweave.pipeline.video import swap_video  # noqa: E402
from faceweave.provenance.mark import Marking, video_output_mark  # noqa: E402
from faceweave.settings import SwapSettings  # noqa: E402


def frame_marker(frame: av.VideoFrame, plane: str = "chroma") -> tuple[Any, int]:
    """The marker the writer uses for frames like ``frame`` (``plane="chroma"``: :class:`ChromaMarker` on the V plane)
    or the luma marker it used before (``"luma"``: :class:`LumaMarker` on Y), and the plane index it marks."""
    from faceweave.provenance.watermark import ChromaMarker, LumaMarker

    payload = Marking().payload
    if plane == "luma":
        return LumaMarker(frame.height, frame.width, payload), 0
    v = frame.planes[2]
    return ChromaMarker(frame.height, frame.width, payload, (v.height, v.width)), 2


def writer_step_ms(width: int, height: int, repeats: int = 50, plane: str = "chroma") -> dict[str, float]:
    """The writer's added per-frame work alone, median ms: copy a decoded frame, add the pattern to its plane."""
    import numpy as np

    from faceweave.media.video.encode import copy_video_frame, frame_plane

    rng = np.random.default_rng(0)
    src = av.VideoFrame.from_ndarray(rng.integers(0, 256, (height, width, 3), np.uint8), format="rgb24")
    src = src.reformat(format="yuv420p")
    marker, index = frame_marker(src, plane)
    copy_t, mark_t = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        frame = copy_video_frame(src)
        t1 = time.perf_counter()
        marker.apply(frame_plane(frame, index))
        t2 = time.perf_counter()
        copy_t.append(t1 - t0)
        mark_t.append(t2 - t1)
    return {"copy_ms": round(1000 * statistics.median(copy_t), 3),
            "mark_ms": round(1000 * statistics.median(mark_t), 3)}


def x264_cpu(frames: list[av.VideoFrame], path: Path) -> tuple[float, int, str]:
    """Encode ``frames`` with x264 (crf 20, veryfast, one thread) to ``path``: this process's CPU seconds for it, the
    file's bytes and the frame types x264 chose (``I``/``P``/``B``, decoded in display order)."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        s.options = {"crf": "20", "preset": "veryfast"}
        s.thread_count = 1
        c0 = time.process_time()
        for k, f in enumerate(frames):
            f.pts = k
            for packet in s.encode(f):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
        cpu = time.process_time() - c0
    with av.open(str(path)) as c:
        types = "".join(" IPB"[int(f.pict_type)] if int(f.pict_type) < 4 else "?" for f in c.decode(video=0))
    return cpu, path.stat().st_size, types


def encode_cpu_ms(clip: Path, repeats: int, decoder_frame_types: bool = False, plane: str = "chroma"
                  ) -> dict[str, object]:
    """x264's CPU time per frame (one encoder thread, so contention does not add spinning) and output size for the
    clip's frames as decoded and with the pattern in their luma, A/B pairs in alternating order; medians and the
    pair-ratio median. What marking costs the encoder: the pattern is detail x264 has to code.

    Both sides go to the encoder with no picture type, as :class:`VideoWriter` sends them. ``decoder_frame_types``
    keeps the decoder's I/P types on the unmarked side only (what this function did before): libx264 then obeys
    them — all P, no B-frame decision — and the unmarked side is ~30 % cheaper for that reason alone. ``plane``: the
    writer's chroma mark, or ``"luma"``: the luma mark it wrote before."""
    from faceweave.media.video.encode import copy_video_frame, frame_plane

    with av.open(str(clip)) as c:
        plain = [f.reformat(format="yuv420p") for f in c.decode(video=0)]
    marker, index = frame_marker(plain[0], plane)
    marked = []
    for f in plain:
        g = copy_video_frame(f)  # a new frame: its picture type is NONE
        marker.apply(frame_plane(g, index))
        marked.append(g)
    if not decoder_frame_types:
        for f in plain:
            f.pict_type = av.video.frame.PictureType.NONE

    def encode(frames: list[av.VideoFrame]) -> tuple[float, int, str]:
        with tempfile.TemporaryDirectory() as tmp:
            cpu_s, size, types = x264_cpu(frames, Path(tmp) / "e.mp4")
        return cpu_s * 1000 / len(frames), size, types

    encode(plain)  # x264's first open in the process is slower: not part of either side
    t: dict[bool, list[float]] = {True: [], False: []}
    size: dict[bool, int] = {}
    types: dict[bool, str] = {}
    for rep in range(repeats):
        for m in ((False, True) if rep % 2 == 0 else (True, False)):
            ms, size[m], types[m] = encode(marked if m else plain)
            t[m].append(ms)
    ratios = [a / b for a, b in zip(t[True], t[False], strict=True)]
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return {"unmarked_ms": round(statistics.median(t[False]), 2), "marked_ms": round(statistics.median(t[True]), 2),
            "pair_ratio_median": round(statistics.median(ratios), 3),
            "pair_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "pair_ratio_iqr": [round(q[0], 3), round(q[2], 3)],
            "bytes_unmarked": size[False], "bytes_marked": size[True],
            "bytes_ratio": round(size[True] / size[False], 3),
            "types_unmarked": types[False], "types_marked": types[True]}


def make_scaled_clip(name: str, dst: Path, size: tuple[int, int], frames: int) -> None:
    """A bundled clip scaled to fill ``size`` (no letterbox), encoded like :func:`video_cpu.make_clip` (ultrafast,
    crf 16) so every clip reaches the benchmark the same way."""
    import cv2

    w, h = size
    with av.open(str(media_path(name))) as c, av.open(str(dst), "w") as out:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.codec_context.options = {"preset": "ultrafast", "crf": "16"}
        for i, f in zip(range(frames), c.decode(video=0), strict=False):
            rgb = cv2.resize(f.to_ndarray(format="rgb24"), (w, h), interpolation=cv2.INTER_AREA if w < f.width
                             else cv2.INTER_CUBIC)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu", help="the swap's device: cpu, cuda or cuda:N (the GPU A/B row)")
    parser.add_argument("--sizes", default="1280x720,1920x1080")
    parser.add_argument("--skip-swap", action="store_true", help="only the transcode rows")
    parser.add_argument("--marks", choices=("both", "watermark", "c2pa"), default="both",
                        help="what the marked swap turns on: the pixel watermark and C2PA (the default), or one of "
                             "them (to split the cost: the watermark is per frame, C2PA hashes the finished file once)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--encoder-only", action="store_true", help="only x264's CPU time per frame, A/B")
    parser.add_argument("--clip", choices=("carphone", "carphone-full", "bigbuckbunny"), default="carphone",
                        help="carphone upscaled and letterboxed (the face clip), carphone scaled to fill the frame, "
                             "or bigbuckbunny scaled")
    parser.add_argument("--plane", choices=("chroma", "luma"), default="chroma",
                        help="--encoder-only: the writer's mark (chroma, the V plane) or the luma mark it wrote "
                             "before this change")
    parser.add_argument("--decoder-frame-types", action="store_true",
                        help="--encoder-only: keep the decoder's picture types on the unmarked side (the old, "
                             "biased measurement)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base = SwapSettings(video_codec="libx264", preset="veryfast", crf=20, device=args.device)
    encoder = EncoderSettings("libx264", crf=20, preset="veryfast")
    engine = None if args.skip_swap else SwapEngine(base)
    if engine is not None:
        engine.warm_up()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.sizes.split(","):
            w, h = (int(v) for v in spec.split("x"))
            clip = Path(tmp) / f"in_{h}p.mp4"
            if args.clip == "carphone":
                make_clip(clip, (w, h), args.frames)
            else:
                name = "bigbuckbunny.mp4" if args.clip == "bigbuckbunny" else "carphone_pristine.mp4"
                make_scaled_clip(name, clip, (w, h), args.frames)
            step = writer_step_ms(w, h)
            if args.encoder_only:
                load0 = os.getloadavg()[0]
                enc_ms = encode_cpu_ms(clip, args.repeats, args.decoder_frame_types, args.plane)
                print(json.dumps({"clip": args.clip, "size": f"{w}x{h}", "plane": args.plane,
                                  "x264_one_thread_cpu_per_frame": enc_ms,
                                  "load_before_after": [load0, os.getloadavg()[0]]}), flush=True)
                continue
            load0 = os.getloadavg()[0]
            print(json.dumps({"size": f"{w}x{h}", "writer_step": step}), flush=True)
            paths = {"transcode": {}, "swap": {}} if engine is not None else {"transcode": {}}
            times: dict[str, dict[bool, list[float]]] = {k: {True: [], False: []} for k in paths}
            # CPU seconds of this process (all its threads, x264's included): what the work costs, far less moved
            # by other jobs on a shared machine than the wall clock
            cpu: dict[str, dict[bool, list[float]]] = {k: {True: [], False: []} for k in paths}
            marks = {"watermark": args.marks in ("both", "watermark"), "c2pa": args.marks in ("both", "c2pa")}
            if engine is not None:  # one unmeasured run: the first swap of a size pays cuDNN plans and captures
                swap_video([media_path("astronaut.png")], clip, Path(tmp) / "warm.mp4",
                           base.model_copy(update={"watermark": False, "c2pa": False}), engine=engine)
            for rep in range(args.repeats):
                for marked in ((False, True) if rep % 2 == 0 else (True, False)):
                    out = Path(tmp) / f"t_{marked}.mp4"
                    t0, c0 = time.perf_counter(), time.process_time()
                    transcode(clip, out, encoder, mark=video_output_mark(Marking()) if marked else None)
                    times["transcode"][marked].append(time.perf_counter() - t0)
                    cpu["transcode"][marked].append(time.process_time() - c0)
                    if engine is not None:
                        settings = base.model_copy(update={k: marked and on for k, on in marks.items()})
                        t0, c0 = time.perf_counter(), time.process_time()
                        swap_video([media_path("astronaut.png")], clip, Path(tmp) / f"s_{marked}.mp4", settings,
                                   engine=engine)
                        times["swap"][marked].append(time.perf_counter() - t0)
                        cpu["swap"][marked].append(time.process_time() - c0)
            for path, t in times.items():
                plain, marked_s = statistics.median(t[False]), statistics.median(t[True])
                ratios = sorted(m / u for m, u in zip(t[True], t[False], strict=True))
                q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
                row = {"clip": args.clip, "size": f"{w}x{h}", "path": path, "frames": args.frames, "writer_step": step,
                       "marks": "watermark" if path == "transcode" else args.marks,
                       "pair_ratio_median": round(statistics.median(ratios), 3),
                       "pair_ratio_spread": {"min": round(ratios[0], 3), "q1": round(q[0], 3), "q3": round(q[2], 3),
                                             "max": round(ratios[-1], 3)},
                       "load_before_after": [load0, os.getloadavg()[0]],
                       "cpu_pair_ratio_median": round(statistics.median(
                           m / u for m, u in zip(cpu[path][True], cpu[path][False], strict=True)), 3),
                       "cpu_pair_ratio_range": [round(min(m / u for m, u in zip(cpu[path][True], cpu[path][False],
                                                                                strict=True)), 3),
                                                round(max(m / u for m, u in zip(cpu[path][True], cpu[path][False],
                                                                                strict=True)), 3)],
                       "fps_unmarked": round(args.frames / plain, 2), "fps_marked": round(args.frames / marked_s, 2),
                       "time_ratio": round(marked_s / plain, 3),
                       "ms_per_frame_added": round((marked_s - plain) / args.frames * 1000, 2),
                       "runs_s": {"unmarked": [round(v, 2) for v in t[False]],
                                  "marked": [round(v, 2) for v in t[True]]}}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("| size | path | pairs | fps unmarked | fps marked | speed marked / unmarked, median of pairs (range; IQR) "
          "| CPU time marked / unmarked, median of pairs (range) | ms added per frame | copy + mark ms "
          "| load avg before → after |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sp = r["pair_ratio_spread"]
        print(f"| {r['size']} | {r['path']} ({r['marks']}) | {args.repeats} | {r['fps_unmarked']} | "
              f"{r['fps_marked']} | "
              f"{1 / r['pair_ratio_median']:.3f} ({1 / sp['max']:.3f}–{1 / sp['min']:.3f}; "
              f"{1 / sp['q3']:.3f}–{1 / sp['q1']:.3f}) | {r['cpu_pair_ratio_median']} "
              f"({r['cpu_pair_ratio_range'][0]}–{r['cpu_pair_ratio_range'][1]}) | {r['ms_per_frame_added']} | "
              f"{r['writer_step']['copy_ms']} + {r['writer_step']['mark_ms']} | "
              f"{r['load_before_after'][0]:.1f} → {r['load_before_after'][1]:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "device": args.device,
                                         "torch_threads": args.threads, "pyav": av.__version__, "results": rows},
                                        indent=2))


if __name__ == "__main__":
    main()
