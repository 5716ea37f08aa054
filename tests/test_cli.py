"""The CLI end to end in a subprocess: exit codes and one-line messages for every error, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faceweave import errors
from faceweave.media.image import write_image


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "faceweave.cli", *args], capture_output=True, text=True, timeout=300)


def assert_error(proc: subprocess.CompletedProcess[str], exc: type[errors.FaceweaveError], *words: str) -> None:
    assert proc.returncode == exc.exit_code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    msg = " ".join(proc.stderr.split())
    assert exc.code in msg, msg
    for w in words:
        assert w in msg, msg


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, media: type) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli")
    out = {"src": media.path("grace_hopper.jpg"), "tgt": media.path("astronaut.png"), "dir": d}
    (d / "empty.png").write_bytes(b"")
    data = media.path("astronaut.png").read_bytes()
    (d / "truncated.png").write_bytes(data[: len(data) // 3])
    (d / "notes.png").write_text("this is not an image\n")
    write_image(d / "blank.png", np.full((200, 200, 3), 90, np.uint8))
    return out


def test_swap_image_and_eval(files: dict[str, Path]) -> None:
    out = files["dir"] / "out.png"
    proc = run("swap", "-s", str(files["src"]), "-t", str(files["tgt"]), "-o", str(out), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and "1 face(s) swapped" in proc.stderr
    proc = run("eval", "-s", str(files["src"]), "-t", str(files["tgt"]), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["identity_to_source"] < report["identity_to_target"]


def test_analyze_prints_faces(files: dict[str, Path]) -> None:
    proc = run("analyze", str(files["tgt"]), "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    faces = json.loads(proc.stdout)["faces"]
    assert len(faces) == 1 and len(faces[0]["keypoints"]) == 5


@pytest.mark.parametrize(
    ("target", "exc", "words"),
    [
        ("missing.png", errors.InputNotFound, ["missing.png"]),
        ("empty.png", errors.EmptyMedia, ["empty.png"]),
        ("truncated.png", errors.TruncatedMedia, []),
        ("notes.png", errors.UnsupportedMedia, []),
        ("blank.png", errors.NoFaceInTarget, ["target"]),
    ],
)
def test_bad_target(files: dict[str, Path], target: str, exc: type[errors.FaceweaveError], words: list[str]) -> None:
    out = files["dir"] / f"o_{target}"
    proc = run("swap", "-s", str(files["src"]), "-t", str(files["dir"] / target), "-o", str(out), "--device", "cpu")
    assert_error(proc, exc, *words)
    assert not out.exists()


def test_no_face_in_source(files: dict[str, Path]) -> None:
    proc = run("swap", "-s", str(files["dir"] / "blank.png"), "-t", str(files["tgt"]), "-o",
               str(files["dir"] / "o.png"), "--device", "cpu")
    assert_error(proc, errors.NoFaceInSource, "source")


def test_unknown_output_extension(files: dict[str, Path]) -> None:
    proc = run("swap", "-s", str(files["src"]), "-t", str(files["tgt"]), "-o", str(files["dir"] / "o.xyz"))
    assert_error(proc, errors.UnknownOutputFormat, ".xyz")


def test_output_not_writable(files: dict[str, Path]) -> None:
    proc = run("swap", "-s", str(files["src"]), "-t", str(files["tgt"]), "-o", "/proc/faceweave/o.png")
    assert_error(proc, errors.OutputNotWritable)


def test_bad_option_value(files: dict[str, Path]) -> None:
    proc = run("swap", "-s", str(files["src"]), "-t", str(files["tgt"]), "-o", str(files["dir"] / "o.png"),
               "--shape-transfer", "3")
    assert_error(proc, errors.InvalidOption, "shape_transfer")


def test_pixel_limit(files: dict[str, Path]) -> None:
    proc = run("swap", "-s", str(files["src"]), "-t", str(files["tgt"]), "-o", str(files["dir"] / "o.png"),
               "--max-pixels", "1000")
    assert_error(proc, errors.MediaTooLarge)


def test_no_matching_reference(files: dict[str, Path], media: type) -> None:
    proc = run("swap", "-s", str(files["src"]), "-t", str(files["tgt"]), "-o", str(files["dir"] / "o.png"),
               "--selector", "reference", "--reference", str(media.path("obama.jpg")), "--device", "cpu")
    assert_error(proc, errors.NoMatchingFace)


def _flag_effect(source: Path, target: Path, out_dir: Path, flags: tuple[str, str], key: str) -> dict[str, float]:
    """Swap ``source`` into ``target`` once with each of the two ``flags`` and read ``key`` of `faceweave eval`'s
    report of each output."""
    found = {}
    for flag in flags:
        out = out_dir / f"out{flag}.png"
        proc = run("swap", "-s", str(source), "-t", str(target), "-o", str(out), "--device", "cpu", flag)
        assert proc.returncode == 0, proc.stderr
        proc = run("eval", "-s", str(source), "-t", str(target), "-o", str(out))
        assert proc.returncode == 0, proc.stderr
        found[flag] = json.loads(proc.stdout)[key]
    return found


def test_detail_restore_flag(files: dict[str, Path], media: type) -> None:
    """`--no-detail-restore` reaches the swap: on a magnified face (a small source) the default output is sharper
    than the one with the restoration off, as `faceweave eval` measures it."""
    import cv2

    small = files["dir"] / "small_astronaut.png"
    rgb = media.rgb("astronaut.png")
    write_image(small, cv2.resize(rgb, None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA))
    sharpness = _flag_effect(small, media.path("obama2.jpg"), files["dir"], ("--detail-restore", "--no-detail-restore"),
                             "sharpness_vs_target")
    assert sharpness["--detail-restore"] > 1.1 * sharpness["--no-detail-restore"], sharpness


def test_hairline_fill_flag(files: dict[str, Path], media: type) -> None:
    """`--no-hairline-fill` reaches the swap: astronaut's fringe onto obama's high forehead leaves a lower band at
    the mask's top (`seam_top`, as `faceweave eval` measures it) with the fill (the default) than without."""
    seam_top = _flag_effect(media.path("astronaut.png"), media.path("obama.jpg"), files["dir"],
                            ("--hairline-fill", "--no-hairline-fill"), "seam_top")
    assert seam_top["--hairline-fill"] < seam_top["--no-hairline-fill"] - 0.05, seam_top
