"""benchmarks/quality_set.py with the swap's occlusion mask made by a trained occluder net alone, or by the net and
the hand-built estimate (as the swap does with the shipped net: ``faceweave/swapper/occlusion.py``).

    PYTHONPATH=$PWD python benchmarks/occluder_net/evaluate.py --net .occnet/occluder_net.safetensors \
        [--keep 0.35,0.65] [--with-estimate] -- --split tune --split heldout --set occlusion=true --json net.json

Everything after ``--`` goes to quality_set.py unchanged; ``occlusion=true`` turns the (replaced) step on. Each swap
also prints the share of its face mask the net keeps (before quality_set's row of that case).
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path

import torch

import faceweave.swapper.mesh as mesh
from faceweave.models.occluder_net import KEEP_HIGH, KEEP_LOW, OccluderNet, load_occluder_net, occluder_mask
from faceweave.swapper.occlusion import occlusion_mask

QUALITY_SET = Path(__file__).resolve().parents[1] / "quality_set.py"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", required=True, help="train.py's safetensors file")
    ap.add_argument("--keep", default=f"{KEEP_LOW},{KEEP_HIGH}",
                    help="probabilities from which a pixel starts to be kept and is kept whole")
    ap.add_argument("--with-estimate", action="store_true",
                    help="keep what the net or the hand-built estimate keeps (the larger of the two masks)")
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    low, high = (float(v) for v in args.keep.split(","))
    nets: dict[torch.device, OccluderNet] = {}

    def net_mask(target, skin, region, features, *, face_px, lips):  # noqa: ANN001, ANN202 - occlusion_mask's
        if target.device not in nets:
            nets[target.device] = load_occluder_net(target.device, args.net)
        if args.with_estimate:  # the swap's own combination, with this net
            occ = occlusion_mask(target, skin, region, features, face_px=face_px, lips=lips, net=nets[target.device],
                                 keep=(low, high))
        else:
            occ = occluder_mask(nets[target.device], target, skin, region, features, lips=lips, keep=(low, high))
        kept = ((occ > 0.5).float() * region).sum((1, 2, 3)) / region.sum((1, 2, 3)).clamp_min(1)
        print(json.dumps({"kept_share_of_face_mask": [round(float(k), 4) for k in kept]}), file=sys.stderr)
        return occ

    mesh.occlusion_mask = net_mask  # type: ignore[assignment]  # the one step this experiment replaces
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    sys.argv = [str(QUALITY_SET), *rest]
    runpy.run_path(str(QUALITY_SET), run_name="__main__")


if __name__ == "__main__":
    main()
