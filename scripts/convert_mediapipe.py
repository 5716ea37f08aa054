"""Convert the vendored MediaPipe ``.tflite`` files to safetensors (fp32, torch layouts) and print sha256s.

Usage: ``python scripts/convert_mediapipe.py [STEM ...]`` (rerunnable, byte-identical output; needs the ``tflite``
package of the dev extra); no STEM converts every model in ``MODELS``.
``python scripts/convert_mediapipe.py --topology .../mediapipe/python/solutions/face_mesh_connections.py``
rederives the FaceMesh triangles from MediaPipe's tesselation and checks them against ``models/topology.py``.
Each output stores the op program of the graph as JSON in its metadata, so that
:class:`faceweave.models.tflite_graph.GraphNet` rebuilds the network without tflite at run time.
Paste the printed hashes into ``faceweave/models/blazeface.py`` / ``facemesh.py`` / ``iris.py`` and
``faceweave/models/data/NOTICE`` after a reconversion.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from faceweave.models.registry import EMBEDDED_DIR, sha256_file
from faceweave.models.tflite_graph import read_tflite

MODELS = ("face_detection_short_range", "face_detection_full_range", "face_landmark", "iris_landmark")


def convert(stem: str, data_dir: Path = EMBEDDED_DIR) -> Path:
    """Convert ``data_dir/stem.tflite`` to ``data_dir/stem.safetensors``; return the output path."""
    source = data_dir / f"{stem}.tflite"
    program, weights = read_tflite(source)
    tensors = {name: torch.from_numpy(array.copy()).contiguous() for name, array in sorted(weights.items())}
    # ONE metadata key: safetensors stores the metadata as a hash map whose key order varies between runs, and
    # the file hash pinned in the registry must not.
    header = {"format": "faceweave-tflite-graph-v1", "source": source.name, "source_sha256": sha256_file(source),
              "program": program}
    metadata = {"faceweave": json.dumps(header, separators=(",", ":"), sort_keys=True)}
    target = data_dir / f"{stem}.safetensors"
    save_file(tensors, str(target), metadata=metadata)
    return target


def triangles_from_connections(source_text: str) -> np.ndarray:
    """``(T, 3)`` triangles of ``FACEMESH_TESSELATION`` in MediaPipe's ``face_mesh_connections.py`` source.

    The source writes each triangle as three consecutive edges ``(a, b), (b, c), (c, a)``; the frozenset it
    builds loses that order, so the text is parsed instead.
    """
    start = source_text.index("FACEMESH_TESSELATION")
    pairs = [(int(a), int(b)) for a, b in re.findall(r"\((\d+),\s*(\d+)\)", source_text[start:])]
    triangles = []
    for i in range(0, len(pairs) - 2, 3):
        (a, b), (b2, c), (c2, a2) = pairs[i:i + 3]
        if (b, c, a) != (b2, c2, a2):
            raise ValueError(f"edges {pairs[i:i + 3]} do not form a triangle")
        triangles.append((a, b, c))
    return np.array(triangles, dtype=np.int64)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--topology":
        from faceweave.models.topology import NUM_TESSELATION_TRIANGLES, TRIANGLES

        derived = triangles_from_connections(Path(sys.argv[2]).read_text())
        print(f"{len(derived)} triangles; equal to faceweave.models.topology.TRIANGLES: "
              f"{np.array_equal(derived, TRIANGLES[:NUM_TESSELATION_TRIANGLES])}")
        return 0
    stems = sys.argv[1:] or list(MODELS)
    unknown = sorted(set(stems) - set(MODELS))
    if unknown:
        print(f"unknown model(s) {unknown}; known: {', '.join(MODELS)}", file=sys.stderr)
        return 2
    for stem in stems:
        source = EMBEDDED_DIR / f"{stem}.tflite"
        target = convert(stem)
        print(f"{source.name}  sha256 {sha256_file(source)}")
        print(f"{target.name}  sha256 {sha256_file(target)}  ({target.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
