"""The Ray actor's image batch without Ray (SwapWorker is a plain class): the jobs of one call run their forwards
together (counted on the real engine), each job keeps its own error and output."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from faceweave.media.image import read_image, write_image
from faceweave.serve.ray_worker import SwapWorker, WorkSpec


def test_actor_batch_runs_forwards_together(media: type, tmp_path: Path) -> None:
    store = tmp_path / "store"
    for user, name in (("u1", "grace_hopper.jpg"), ("u2", "obama.jpg"), ("u1", "astronaut.png"),
                       ("u2", "obama2.jpg")):
        (store / user).mkdir(parents=True, exist_ok=True)
        (store / user / name).write_bytes(media.path(name).read_bytes())
    write_image(store / "u2" / "blank.png", np.full((240, 320, 3), 90, np.uint8))
    settings = {"device": "cpu"}
    jobs = [("u1/grace_hopper.jpg", "u1/astronaut.png", settings),
            ("u2/obama.jpg", "u2/obama2.jpg", {**settings, "selector": "many"}),
            ("u2/obama.jpg", "u2/blank.png", settings),                 # no face: fails alone
            ("u1/grace_hopper.jpg", "u1/missing.png", settings),        # no input: fails alone
            ("u2/obama.jpg", "u1/astronaut.png", settings)]
    specs = [WorkSpec(f"job{n}", s, [src], tgt, str(store)) for n, (src, tgt, s) in enumerate(jobs)]
    keys = [f"results/job{n}.png" for n in range(len(jobs))]
    entries = SwapWorker().swap_images(specs, keys)

    assert [e.get("error", {}).get("code") for e in entries] == [None, None, "no_face_in_target", "input_not_found",
                                                                 None]
    forwards = entries[0]["forwards"]
    # five jobs, three with a face: one analysis call (two sources + four targets), at most one swap call per job
    assert forwards["analyze"] == 1 and forwards["swap"] <= 3, forwards
    for n in (0, 1, 4):
        assert entries[n]["faces"] >= 1 and entries[n]["bytes"] == (store / keys[n]).stat().st_size
        out = read_image(store / keys[n]).rgb
        target = read_image(store / jobs[n][1]).rgb
        assert out.shape == target.shape and (out != target).any(-1).mean() > 0.01
    assert not (store / keys[2]).exists() and not (store / keys[3]).exists()
