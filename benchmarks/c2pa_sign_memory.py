"""Peak memory of C2PA-signing a large MP4, and what c2pa-rs reads and writes through the Python stream callbacks.

    python benchmarks/c2pa_sign_memory.py --frames 54            # ≈ 200 MB (1080p noise, x264 crf 0)
    python benchmarks/c2pa_sign_memory.py --frames 54 --no-embed # sidecar manifest instead of an embedded one
    python benchmarks/c2pa_sign_memory.py --frames 54 --library-defaults  # c2pa-rs's in-memory store, for comparison

Run each case in a fresh process (peak RSS is per process). The source and destination are wrapped in a file class
that counts the callbacks' reads and writes: they stream in small requests, so what the peak RSS adds beyond that is
held by the native library.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import resource
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceweave.provenance.c2pa import manifest_definition, signing_identity  # noqa: E402


class CountingFile(io.FileIO):
    """A file that counts the bytes and calls of reads and writes, and the largest request."""

    def __init__(self, path: Path, mode: str) -> None:
        super().__init__(path, mode)
        self.calls = 0
        self.bytes = 0
        self.largest = 0

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        n = super().readinto(b) or 0
        self.calls, self.bytes, self.largest = self.calls + 1, self.bytes + n, max(self.largest, len(b))
        return n

    def write(self, b: bytes | memoryview) -> int:  # type: ignore[override]
        n = super().write(b)
        self.calls, self.bytes, self.largest = self.calls + 1, self.bytes + n, max(self.largest, len(b))
        return n


def make_mp4(path: Path, frames: int) -> None:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 1920, 1080, "yuv420p"
        s.options = {"crf": "0", "preset": "ultrafast"}  # noise at crf 0: ~3.8 MB a frame
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (1080, 1920, 3), np.uint8), format="rgb24")
            for packet in s.encode(frame):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=54)
    parser.add_argument("--no-embed", action="store_true", help="Builder.set_no_embed(): a sidecar manifest")
    parser.add_argument("--library-defaults", action="store_true",
                        help="c2pa-rs's default in-memory backing store instead of faceweave's 1 MB threshold")
    parser.add_argument("--settings", default="{}",
                        help='more c2pa-rs settings as JSON, e.g. \'{"verify": {"verify_after_sign": false}}\'')
    args = parser.parse_args()
    import c2pa

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.mp4", Path(tmp) / "out.mp4"
        maker = multiprocessing.get_context("spawn").Process(target=make_mp4, args=(src, args.frames))
        maker.start()  # in a child: the encoder's peak must not hide in this process's baseline
        maker.join()
        identity = signing_identity()
        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, identity.cert_chain, identity.private_key, None)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        fin, fout = CountingFile(src, "r"), CountingFile(dst, "w+")
        # faceweave's sign_file sets this threshold: c2pa-rs then spills its output store to a temporary file
        settings: dict[str, dict[str, object]] = {} if args.library_defaults else {
            "core": {"backing_store_memory_threshold_in_mb": 1}}
        for section, values in json.loads(args.settings).items():
            settings.setdefault(section, {}).update(values)
        with c2pa.Context.builder().with_settings(c2pa.Settings.from_dict(settings)).build() as context, \
                c2pa.Signer.from_info(info) as signer, \
                c2pa.Builder(json.dumps(manifest_definition([], "c2pa.edited", "0")), context=context) as builder:
            if args.no_embed:
                builder.set_no_embed()
            builder.sign(signer, "video/mp4", fin, fout)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        size = src.stat().st_size / 2**20
        print(json.dumps({"file_mb": round(size, 1), "no_embed": args.no_embed, "settings": settings,
                          "library_defaults": args.library_defaults,
                          "read": {"mb": round(fin.bytes / 2**20, 1), "calls": fin.calls,
                                   "largest_kb": fin.largest // 1024},
                          "written": {"mb": round(fout.bytes / 2**20, 1), "calls": fout.calls,
                                      "largest_kb": fout.largest // 1024},
                          "peak_rss_mb_before_after": [round(before), round(after)],
                          "added_per_file_size": round((after - before) / size, 2)}))


if __name__ == "__main__":
    main()
