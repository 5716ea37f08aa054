"""Batch swaps: folder/glob/@list expansion, output names, and the CLI end to end (bad files, a video, --resume)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceweave.batch import BATCH_FAILED_EXIT, OutputPattern, OutputPatternError, expand_targets, plan_outputs
from faceweave.errors import InputNotFound, NoFaceInTarget
from faceweave.media.image import read_image, read_image_metadata, write_image


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "faceweave.cli", *args], capture_output=True, text=True, timeout=600)


# --- names and expansion (in process, fast) -----------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["{target_stem}_{nope}.png", "{target_stem", "{}.png", "sub/{target_stem}.png",
                                     "fixed.png", "{target_stem}_{index:q}.png"])
def test_bad_output_pattern(pattern: str) -> None:
    with pytest.raises(OutputPatternError):
        OutputPattern(pattern)


def test_output_names() -> None:
    p = OutputPattern("{index:03d}-{target_stem}_{source_stem}.{ext}")
    assert p.name_for(Path("in/photo.JPG"), Path("me.png"), "image", 7) == "007-photo_me.jpg"
    assert p.name_for(Path("in/anim.gif"), Path("me.png"), "image", 1) == "001-anim_me.png"  # GIF is not written
    assert p.name_for(Path("in/clip.avi"), Path("me.png"), "video", 2) == "002-clip_me.mp4"


def test_expand_folder_glob_and_list(tmp_path: Path) -> None:
    for name in ("b.png", "a.jpg", ".hidden.png", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    assert [p.name for p in expand_targets(str(tmp_path))] == ["a.jpg", "b.png", "c.txt"]
    assert [p.name for p in expand_targets(str(tmp_path / "*.png"))] == ["b.png"]
    assert [p.name for p in expand_targets(str(tmp_path / "**" / "*.png"))] == ["b.png", "d.png"]
    listing = tmp_path / "list.txt"
    listing.write_text("# targets\nsub/d.png\n\n  a.jpg  \nmissing.png\n")
    # relative to the list file; a missing entry stays in (it fails as its own item, not the batch)
    assert expand_targets(f"@{listing}") == [tmp_path / "sub/d.png", tmp_path / "a.jpg", tmp_path / "missing.png"]
    with pytest.raises(InputNotFound):
        expand_targets(str(tmp_path / "*.webp"))
    with pytest.raises(InputNotFound):
        expand_targets(f"@{tmp_path / 'nope.txt'}")


def test_two_targets_one_output_name(tmp_path: Path, media: type) -> None:
    (tmp_path / "a").mkdir()
    shutil.copy(media.path("obama.jpg"), tmp_path / "a" / "x.jpg")
    shutil.copy(media.path("astronaut.png"), tmp_path / "a" / "x.png")
    targets = expand_targets(str(tmp_path / "a"))
    with pytest.raises(OutputPatternError, match="x.jpg and .*x.png"):
        plan_outputs([Path("me.jpg")], targets, tmp_path / "out", OutputPattern("{target_stem}.png"))
    with pytest.raises(OutputPatternError, match="overwrite"):
        plan_outputs([Path("me.jpg")], targets, tmp_path / "a", OutputPattern("{target_name}"))
    items = plan_outputs([Path("me.jpg")], targets, tmp_path / "out", OutputPattern("{target_name}"))
    assert [it.output.name for it in items if it.output] == ["x.jpg", "x.png"]


def test_device_batch_matches_single_images(media: type) -> None:
    from faceweave.pipeline.engine import SwapEngine
    from faceweave.pipeline.image import swap_image, swap_images
    from faceweave.settings import SwapSettings

    engine = SwapEngine(SwapSettings(device="cpu"))
    sources = engine.prepare_sources([media.rgb("grace_hopper.jpg")])
    face = media.rgb("astronaut.png")
    targets = [face, np.full_like(face, 90), np.ascontiguousarray(face[:, ::-1])]
    batched = swap_images(sources, targets, engine)
    assert isinstance(batched[1], NoFaceInTarget)  # the face-less image fails alone
    for k in (0, 2):
        single, n = swap_image(sources, targets[k], engine)
        got = batched[k]
        assert isinstance(got, tuple) and got[1] == n == 1
        diff = np.abs(got[0].astype(int) - single.astype(int)).max(-1)
        # float rounding differs between a batch and one image; a hard coverage edge (texture present or not) can
        # flip on it at a pixel or two (seen: 1 pixel off by 5 after the edge-colour merge), never a region
        assert diff.max() <= 16 and (diff > 2).sum() <= 3, ((diff > 2).sum(), diff.max())
        assert (got[0] != targets[k]).any(-1).mean() > 0.02  # it did swap (the face is ~5% of the image)


# --- the CLI end to end --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, media: type) -> Path:
    d = tmp_path_factory.mktemp("batch") / "in"
    d.mkdir()
    shutil.copy(media.path("astronaut.png"), d / "astronaut.png")
    shutil.copy(media.path("obama2.jpg"), d / "obama2.jpg")
    shutil.copy(media.path("carphone_pristine.mp4"), d / "clip.mp4")
    data = media.path("astronaut.png").read_bytes()
    (d / "broken.png").write_bytes(data[: len(data) // 3])
    write_image(d / "blank.png", np.full((256, 256, 3), 90, np.uint8))
    (d / "notes.png").write_text("not an image\n")
    return d


GOOD = {"astronaut.png": "astronaut_grace_hopper.png", "obama2.jpg": "obama2_grace_hopper.jpg",
        "clip.mp4": "clip_grace_hopper.mp4"}
BAD = {"broken.png": "truncated_media", "blank.png": "no_face_in_target", "notes.png": "unsupported_media"}


def swap_folder(media: type, folder: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    report = out.parent / "report.json"
    proc = run("swap", "-s", str(media.path("grace_hopper.jpg")), "-t", str(folder), "-o", str(out),
               "--device", "cpu", "--trim-end", "6f", "--json", str(report), *extra)
    return proc, json.loads(report.read_text())


def by_name(report: dict) -> dict[str, dict]:
    return {Path(it["target"]).name: it for it in report["items"]}


def test_batch_folder_with_bad_files_and_a_video(folder: Path, media: type, tmp_path: Path) -> None:
    out = tmp_path / "out" / "nested"  # created, parents too
    proc, report = swap_folder(media, folder, out)
    assert proc.returncode == BATCH_FAILED_EXIT, proc.stderr
    assert "Traceback" not in proc.stderr and "internal_error" not in proc.stderr
    items = by_name(report)
    assert (report["done"], report["skipped"], report["failed"]) == (3, 0, 3)
    for target, name in GOOD.items():
        assert items[target]["status"] == "done" and items[target]["faces_swapped"] >= 1, items[target]
        assert items[target]["output"] == str(out / name)
    for target, code in BAD.items():
        assert items[target]["status"] == "failed" and items[target]["error_code"] == code, items[target]
    assert sorted(p.name for p in out.iterdir()) == sorted(GOOD.values())  # nothing for the bad ones, no temp files
    swapped = read_image(out / "astronaut_grace_hopper.png").rgb
    assert (swapped != media.rgb("astronaut.png")).any(-1).mean() > 0.02
    assert read_image_metadata(out / "astronaut_grace_hopper.png")["faceweave:synthetic"] == "true"
    assert items["clip.mp4"]["frames"] == 6
    # the summary table names every failure with its reason, and the counts
    text = " ".join(proc.stderr.split())
    assert "3 done, 0 skipped, 3 failed" in text
    for target, code in BAD.items():
        assert target in text and code in text

    # --resume: the written outputs are kept; a missing and a damaged output are swapped again
    (out / "obama2_grace_hopper.jpg").unlink()
    good = (out / "astronaut_grace_hopper.png").read_bytes()
    (out / "astronaut_grace_hopper.png").write_bytes(good[: len(good) // 2])
    video_mtime = (out / "clip_grace_hopper.mp4").stat().st_mtime_ns
    proc, report = swap_folder(media, folder, out, "--resume")
    assert proc.returncode == BATCH_FAILED_EXIT, proc.stderr
    items = by_name(report)
    assert items["clip.mp4"]["status"] == "skipped"
    assert (out / "clip_grace_hopper.mp4").stat().st_mtime_ns == video_mtime
    assert items["obama2.jpg"]["status"] == "done" and (out / "obama2_grace_hopper.jpg").is_file()
    assert items["astronaut.png"]["status"] == "done"
    assert read_image(out / "astronaut_grace_hopper.png").rgb.shape == swapped.shape
    assert (report["done"], report["skipped"], report["failed"]) == (2, 1, 3)


def test_batch_all_good_exits_0_json_to_stdout(media: type, tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(media.path("astronaut.png"), d / "a.png")
    shutil.copy(media.path("obama.jpg"), d / "b.jpg")
    (tmp_path / "list.txt").write_text("in/b.jpg\nin/a.png\n")
    proc = run("swap", "-s", str(media.path("grace_hopper.jpg")), "-t", f"@{tmp_path / 'list.txt'}",
               "-o", str(tmp_path / "out"), "--output-pattern", "{index:02d}_{target_name}", "--device", "cpu",
               "--json", "-")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [Path(it["output"]).name for it in report["items"]] == ["01_b.jpg", "02_a.png"]
    assert report["failed"] == 0 and report["done"] == 2


def test_batch_name_collision_is_a_usage_error(media: type, tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(media.path("astronaut.png"), d / "x.png")
    shutil.copy(media.path("obama.jpg"), d / "x.jpg")
    proc = run("swap", "-s", str(media.path("grace_hopper.jpg")), "-t", str(d / "x.*"), "-o", str(tmp_path / "out"),
               "--output-pattern", "{target_stem}.png")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("Usage: faceweave swap")
    assert "x.jpg and" in proc.stderr and "x.png" in proc.stderr and "--output-pattern" in proc.stderr
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize("extra", [["--output-pattern", "{nope}.png"], ["--output-pattern", "{target_stem"]])
def test_bad_pattern_is_a_usage_error(media: type, tmp_path: Path, extra: list[str]) -> None:
    proc = run("swap", "-s", "me.jpg", "-t", str(tmp_path), "-o", str(tmp_path / "out"), *extra)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("Usage: faceweave swap") and "--output-pattern" in proc.stderr
    assert "internal" not in proc.stderr


def test_batch_options_need_a_batch(media: type, tmp_path: Path) -> None:
    proc = run("swap", "-s", str(media.path("grace_hopper.jpg")), "-t", str(media.path("astronaut.png")),
               "-o", str(tmp_path / "o.png"), "--resume")
    assert proc.returncode == 2 and "--resume" in proc.stderr and "batch" in proc.stderr, proc.stderr


def test_batch_nothing_matches(tmp_path: Path) -> None:
    proc = run("swap", "-s", "me.jpg", "-t", str(tmp_path / "*.png"), "-o", str(tmp_path / "out"))
    assert proc.returncode == InputNotFound.exit_code and "input_not_found" in proc.stderr, proc.stderr
