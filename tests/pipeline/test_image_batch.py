"""Image jobs batched across requests (faceweave/pipeline/image_batch.py): one set of forwards for many jobs of
different sizes, sources and settings, with the outputs of a one-by-one run and errors that stay per job."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from faceweave.errors import FaceweaveError, NoFaceInSource, NoFaceInTarget
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.image import swap_image_counted, swap_image_file
from faceweave.pipeline.image_batch import (
    CountingEngine,
    ImageFileJob,
    ImageJob,
    ImageOutcome,
    forward_key,
    swap_image_batch,
    swap_image_files,
)
from faceweave.settings import SwapSettings


def close(batched: np.ndarray, single: np.ndarray) -> None:
    """The bound of tests/test_batch.py: float rounding differs between a batch and one image, and a hard coverage
    edge can flip on it at a pixel or two, never a region."""
    assert batched.shape == single.shape
    diff = np.abs(batched.astype(int) - single.astype(int)).max(-1)
    assert diff.max() <= 16 and (diff > 2).sum() <= 3, ((diff > 2).sum(), diff.max())


@pytest.fixture(scope="module")
def engines() -> dict[str, CountingEngine]:
    return {}


def engine_for(engines: dict[str, CountingEngine]):  # type: ignore[no-untyped-def]
    def get(settings: SwapSettings) -> CountingEngine:
        key = forward_key(settings)
        if key not in engines:
            engines[key] = CountingEngine(SwapEngine(settings))
        return engines[key]

    return get


def one_by_one(job: ImageJob, engine: SwapEngine) -> tuple[np.ndarray, int, int] | FaceweaveError:
    try:
        sources = engine.prepare_sources(job.sources)
        return swap_image_counted(sources, job.target, engine)
    except FaceweaveError as exc:
        return exc


def test_batch_of_sizes_and_sources_equals_one_by_one(media: type, engines: dict[str, CountingEngine],
                                                      device: torch.device) -> None:
    # on CUDA the default dtype is float16: the analysis nets stay float32 so that the faces an image yields do not
    # depend on the other images of its batch (in float16 they moved a box by 3.7 px; pipeline/engine.py)
    hopper, obama = media.rgb("grace_hopper.jpg"), media.rgb("obama.jpg")
    astronaut, obama2 = media.rgb("astronaut.png"), media.rgb("obama2.jpg")
    targets = [
        astronaut,                                        # 512 × 512
        obama2,                                           # another size
        np.ascontiguousarray(hopper[40:, ::-1]),          # mirrored and cut: a third size
        np.full((300, 420, 3), 90, np.uint8),             # no face: fails alone
        np.ascontiguousarray(astronaut[:400, 50:]),       # a fourth size
        np.ascontiguousarray(astronaut[:, ::-1]),         # the first one mirrored: a face of the same size
    ]
    one, many = SwapSettings(device=device.type), SwapSettings(device=device.type, selector="many")
    jobs = [ImageJob([hopper], targets[0], one), ImageJob([obama], targets[1], many),
            ImageJob([obama], targets[2], one), ImageJob([hopper], targets[3], one),
            ImageJob([hopper, obama], targets[4], many), ImageJob([obama], targets[5], one)]
    get = engine_for(engines)
    engine = get(one)
    before = engine.calls.copy()
    batched = swap_image_batch(jobs, get)
    calls = engine.calls - before
    # six jobs of two settings: one analysis (sources with the targets); the five swaps in fewer calls (one per
    # crop size the faces want, tests/swapper: a call works at its largest face's)
    assert calls["analyze"] == 1 and set(calls) == {"analyze", "swap"}, calls
    assert 1 <= calls["swap"] < 5, calls
    # selector is a per-job choice: one engine, one batch
    assert sum(e.settings.device == device.type for e in engines.values()) == 1

    assert isinstance(batched[3], NoFaceInTarget)
    for job, got in zip(jobs, batched, strict=True):
        single = one_by_one(job, SwapEngine(job.settings) if job.settings.selector != "one" else engine.engine)
        if isinstance(single, FaceweaveError):
            assert type(got) is type(single)
            continue
        assert isinstance(got, ImageOutcome)
        image, swapped, found = single
        assert (got.swapped, got.found) == (swapped, found) and swapped >= 1
        close(got.image, image)
        assert (got.image != job.target).any(-1).mean() > 0.01  # it did swap


def test_settings_that_change_the_forwards_are_separate_batches(media: type,
                                                                engines: dict[str, CountingEngine]) -> None:
    hopper, astronaut, obama2 = media.rgb("grace_hopper.jpg"), media.rgb("astronaut.png"), media.rgb("obama2.jpg")
    laplacian, alpha = SwapSettings(device="cpu"), SwapSettings(device="cpu", blend="feather")
    assert forward_key(laplacian) != forward_key(alpha)
    jobs = [ImageJob([hopper], astronaut, laplacian), ImageJob([hopper], astronaut, alpha),
            ImageJob([hopper], obama2, laplacian), ImageJob([np.full_like(hopper, 90)], obama2, alpha)]
    get = engine_for(engines)
    batched = swap_image_batch(jobs, get)
    assert isinstance(batched[3], NoFaceInSource)  # a face-less source fails its job alone
    for k in (0, 1, 2):
        single = one_by_one(jobs[k], get(jobs[k].settings).engine)
        assert isinstance(single, tuple) and isinstance(batched[k], ImageOutcome)
        close(batched[k].image, single[0])  # type: ignore[union-attr]
    # each job kept its own blend: the two astronaut outputs differ
    assert (batched[0].image != batched[1].image).any()  # type: ignore[union-attr]


def test_files_batch_writes_what_the_one_image_path_writes(media: type, tmp_path: Path,
                                                         engines: dict[str, CountingEngine]) -> None:
    from faceweave.media.image import read_image, read_image_metadata

    # without the invisible watermark, whose payload differs per output (the pixels can then be compared)
    settings = SwapSettings(device="cpu", provenance_label=True, watermark=False)
    bad = tmp_path / "broken.png"
    bad.write_bytes(media.path("astronaut.png").read_bytes()[:2000])
    jobs = [ImageFileJob([media.path("grace_hopper.jpg")], media.path("astronaut.png"), tmp_path / "a.png", settings),
            ImageFileJob([media.path("obama.jpg")], bad, tmp_path / "b.png", settings),
            ImageFileJob([media.path("obama.jpg")], media.path("obama2.jpg"), tmp_path / "c.jpg", settings)]
    results = swap_image_files(jobs, engine_for(engines))
    assert isinstance(results[1], FaceweaveError) and results[1].code == "truncated_media"
    assert not (tmp_path / "b.png").exists()
    for k in (0, 2):
        got = results[k]
        assert not isinstance(got, FaceweaveError) and got.faces_swapped == 1
        single = swap_image_file(jobs[k].sources, jobs[k].target, tmp_path / f"single{jobs[k].output.suffix}",
                                 settings, engine=SwapEngine(settings))
        assert got.stats == single.stats
        meta = read_image_metadata(got.output)
        assert meta["faceweave:synthetic"] == "true" and set(meta) == set(read_image_metadata(single.output))
        if got.output.suffix == ".png":  # lossless: the pixels themselves
            close(read_image(got.output).rgb, read_image(single.output).rgb)


def test_to_host_keeps_untouched_pixels_bit_exact(media: type, device: torch.device, dtype: torch.dtype) -> None:
    """A pixel the swap left alone comes back as the target's byte (to_host skips the mask only where every byte
    value survives the float round trip on that device and dtype); a changed pixel comes back rounded."""
    from faceweave.pipeline.engine import to_tensor
    from faceweave.pipeline.image_batch import DeviceOutcome, uint8_round_trip_exact

    target = media.rgb("obama2.jpg")
    assert uint8_round_trip_exact(device, dtype)
    frame = to_tensor(target, device, dtype)
    swapped = frame.clone()
    swapped[:, :, 100:180, 200:300] = swapped[:, :, 100:180, 200:300] * 0.5 + 0.25
    out = DeviceOutcome(swapped, frame, target, swapped=1, found=1).to_host()
    changed = np.zeros(target.shape[:2], bool)
    changed[100:180, 200:300] = True
    np.testing.assert_array_equal(out.image[~changed], target[~changed])
    expected = np.clip(np.round(target[changed].astype(np.float64) * 0.5 + 63.75), 0, 255)
    assert np.abs(out.image[changed].astype(np.float64) - expected).max() <= 2  # dtype rounding


def test_jobs_staged_on_the_device_give_the_same_images(media: type, engines: dict[str, CountingEngine],
                                                        device: torch.device) -> None:
    """:sync requests copy their images to the device on their own threads (stage_image_job); the batch then
    converts those copies instead of the host arrays: the same canvas, so the same outcome, byte for byte."""
    from faceweave.pipeline.image_batch import stage_image_job

    settings = SwapSettings(device=device.type)
    hopper, obama, astronaut = media.rgb("grace_hopper.jpg"), media.rgb("obama.jpg"), media.rgb("astronaut.png")
    jobs = [ImageJob([hopper], astronaut, settings), ImageJob([obama], np.ascontiguousarray(hopper[40:]), settings),
            ImageJob([hopper], np.full((200, 260, 3), 90, np.uint8), settings)]
    get = engine_for(engines)
    plain = swap_image_batch(jobs, get)
    staged_jobs = [stage_image_job(job, get(settings).device) for job in jobs]
    assert all(job.staged is not None and job.staged.target.device.type == device.type for job in staged_jobs)
    staged = swap_image_batch(staged_jobs, get)
    assert isinstance(plain[2], NoFaceInTarget) and isinstance(staged[2], NoFaceInTarget)
    for a, b in zip(plain[:2], staged[:2], strict=True):
        assert isinstance(a, ImageOutcome) and isinstance(b, ImageOutcome)
        assert (a.swapped, a.found) == (b.swapped, b.found)
        np.testing.assert_array_equal(a.image, b.image)
