"""Every output format marked and read back: tags/XMP, C2PA (valid, tampered), watermark; `faceweave verify`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from faceweave.data import media_path
from faceweave.media.image import read_image
from faceweave.provenance.c2pa import Ingredient, read_c2pa, sign_file, signing_identity
from faceweave.provenance.mark import Marking, write_marked_image
from faceweave.provenance.metadata import (
    TRAINED_ALGORITHMIC_MEDIA,
    mp4_moov_first,
    read_image_marking,
    read_video_marking,
    tag_video_file,
)
from faceweave.provenance.verify import verify_file


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # the local C2PA identity is made under the user cache: keep it out of the real one
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    return read_image(media_path("grace_hopper.jpg")).rgb


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_image_round_trip(picture: np.ndarray, tmp_path: Path, ext: str) -> None:
    marking = Marking(job_id="job-7")
    out = write_marked_image(tmp_path / f"out{ext}", picture, marking,
                             ingredients=[Ingredient.of_file("source", media_path("obama.jpg"))])
    report = verify_file(out)
    assert report.marked and report.watermark.found
    assert report.watermark.payload == marking.payload
    if ext == ".bmp":  # no metadata block, no C2PA: the watermark alone marks it
        assert not report.metadata.synthetic and report.c2pa.status == "unsupported"
        return
    assert report.metadata.synthetic and report.metadata.tags["faceweave:job"] == marking.job_hash
    assert read_image_marking(out).iptc_source_type == TRAINED_ALGORITHMIC_MEDIA
    c2pa = report.c2pa
    assert c2pa.status == "valid" and c2pa.synthetic and not c2pa.trusted
    assert c2pa.signer is not None and "untrusted" in c2pa.signer
    assert c2pa.ingredients[0]["sha256"] == Ingredient.of_file("source", media_path("obama.jpg")).sha256
    assert "obama" not in json.dumps(c2pa.to_dict())  # hashes, never file names


def test_pixel_tampering_fails_c2pa_validation(picture: np.ndarray, tmp_path: Path) -> None:
    # a fixed job id: the watermark, so the scan's bytes, are the same every run (with a random one, 3 files in 150
    # happened to become undecodable after the flip below)
    out = write_marked_image(tmp_path / "out.jpg", picture, Marking(job_id="tamper-test"))
    assert read_c2pa(out).status == "valid"
    before = read_image(out).rgb
    data = bytearray(out.read_bytes())
    at = data.rindex(b"\xff\xd9") - 2000  # inside the entropy-coded scan: the pixels change, the file still decodes
    # low bits of bytes that are not part of a marker (0xFF and the byte after it stay)
    for i in range(at, at + 8):
        if data[i] != 0xFF and data[i - 1] != 0xFF and data[i] ^ 0x01 != 0xFF:
            data[i] ^= 0x01
    out.write_bytes(bytes(data))
    assert not np.array_equal(read_image(out).rgb, before)
    assert read_c2pa(out).status == "tampered"


def test_switches_off(picture: np.ndarray, tmp_path: Path) -> None:
    out = write_marked_image(tmp_path / "out.png", picture, Marking(watermark=False, c2pa=False))
    report = verify_file(out)
    assert report.metadata.synthetic and not report.watermark.found and report.c2pa.status == "absent"
    assert np.array_equal(read_image(out).rgb, picture)


def test_operator_identity_is_used(picture: np.ndarray, tmp_path: Path) -> None:
    from faceweave.provenance.c2pa import make_local_identity

    make_local_identity(tmp_path / "id")  # stands in for an operator's PEM files
    marking = Marking(c2pa_cert=str(tmp_path / "id/signer-chain.pem"), c2pa_key=str(tmp_path / "id/signer-key.pem"))
    out = write_marked_image(tmp_path / "out.png", picture, marking)
    assert read_c2pa(out).status == "valid"
    assert not signing_identity(marking.c2pa_cert, marking.c2pa_key).local


@pytest.mark.parametrize("ext", [".mp4", ".mov", ".mkv", ".webm"])
def test_video_container_tags(tmp_path: Path, ext: str) -> None:
    src = media_path("carphone_pristine.mp4")
    if ext == ".webm":  # WebM carries VP8/VP9/AV1 only: make a short VP9 clip first
        src = tmp_path / "in.webm"
        with av.open(str(media_path("carphone_pristine.mp4"))) as inp, av.open(str(src), "w") as out:
            s = out.add_stream("libvpx-vp9", rate=30)
            s.width, s.height, s.pix_fmt = 176, 144, "yuv420p"
            for _, frame in zip(range(5), inp.decode(video=0), strict=False):
                for p in s.encode(frame.reformat(format="yuv420p")):
                    out.mux(p)
            for p in s.encode():
                out.mux(p)
    out = tag_video_file(src, tmp_path / f"out{ext}", job_hash="0badc0de")
    marking = read_video_marking(out)
    assert marking.synthetic and marking.tags.get("faceweave:job") == "0badc0de"
    assert not read_video_marking(src).synthetic
    if ext in (".mp4", ".mov"):
        assert mp4_moov_first(out)
        assert not mp4_moov_first(media_path("carphone_pristine.mp4"))  # the test can fail: the input is moov-last


def test_mp4_c2pa_keeps_faststart_and_validates(tmp_path: Path) -> None:
    tagged = tag_video_file(media_path("carphone_pristine.mp4"), tmp_path / "tagged.mp4")
    signed = sign_file(tagged, tmp_path / "signed.mp4", signing_identity(),
                       [Ingredient.of_file("target", media_path("carphone_pristine.mp4"))])
    report = verify_file(signed)
    assert report.c2pa.status == "valid" and report.c2pa.synthetic and report.metadata.synthetic
    assert mp4_moov_first(signed)


def test_cli_exit_codes(picture: np.ndarray, tmp_path: Path) -> None:
    out = write_marked_image(tmp_path / "out.png", picture, Marking())
    cmd = [sys.executable, "-m", "faceweave.cli", "verify", "--json"]
    ok = subprocess.run([*cmd, str(out)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)[0]["watermark"]["found"] is True
    bad = subprocess.run([*cmd, str(out), str(media_path("obama.jpg"))], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 70 and "not_marked" in bad.stderr
    assert [r["marked"] for r in json.loads(bad.stdout)] == [True, False]


def test_service_clients_cannot_turn_marking_off() -> None:
    from faceweave.errors import InvalidOption
    from faceweave.serve.inputs import job_settings, parse_settings
    from faceweave.serve.settings import ServiceSettings
    from faceweave.settings import SwapSettings

    class _Svc:  # parse_settings reads only .settings
        settings = ServiceSettings(watermark=False)

    for field in ('{"watermark": false}', '{"c2pa": false}', '{"c2pa_key": "/etc/key.pem"}'):
        with pytest.raises(InvalidOption):
            parse_settings(_Svc(), field)  # type: ignore[arg-type]
    # the operator's switch wins over whatever a settings object carries
    assert job_settings(ServiceSettings(watermark=False), SwapSettings(watermark=True)).watermark is False
    assert job_settings(ServiceSettings(), SwapSettings(c2pa=False)).c2pa is True


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_claim_thumbnail_is_made_from_the_marked_pixels(picture: np.ndarray, tmp_path: Path, ext: str) -> None:
    # the manifest's claim thumbnail is faceweave's (claim_thumbnail of the watermarked pixels), not one c2pa-rs
    # made by decoding the encoded file again: byte for byte the JPEG we hand it
    import io

    import c2pa
    from PIL import Image

    from faceweave.provenance.c2pa import THUMBNAIL_LONG_EDGE, claim_thumbnail
    from faceweave.provenance.mark import encode_marked_image
    from faceweave.provenance.watermark import embed_watermark

    big = np.asarray(Image.fromarray(picture).resize((1200, 1500), Image.Resampling.BILINEAR))  # over 1024 px
    marking = Marking(job_id="job-thumb")
    data = encode_marked_image(big, tmp_path / f"out{ext}", marking)
    mime = "image/png" if ext == ".png" else "image/jpeg"
    with c2pa.Reader(mime, io.BytesIO(data)) as reader:
        manifest = json.loads(reader.json())
        active = manifest["manifests"][manifest["active_manifest"]]
        thumb = io.BytesIO()
        reader.resource_to_stream(active["thumbnail"]["identifier"], thumb)
    assert active["thumbnail"]["format"] == "image/jpeg"
    assert thumb.getvalue() == claim_thumbnail(embed_watermark(big, marking.payload))
    with Image.open(thumb) as im:
        assert im.format == "JPEG" and max(im.size) == THUMBNAIL_LONG_EDGE and im.size == (819, 1024)


def test_png_compression_level_changes_bytes_not_pixels_nor_marks(picture: np.ndarray, tmp_path: Path) -> None:
    # the :sync service answers PNGs at zlib level 1 (sync_png_compression): same pixels, same three markings
    fast = write_marked_image(tmp_path / "fast.png", picture, Marking(job_id="job-png"), png_compression=1)
    small = write_marked_image(tmp_path / "small.png", picture, Marking(job_id="job-png"), png_compression=9)
    assert fast.read_bytes() != small.read_bytes()
    assert np.array_equal(read_image(fast).rgb, read_image(small).rgb)
    for path in (fast, small):
        report = verify_file(path)
        assert report.marked and report.metadata.synthetic and report.c2pa.status == "valid"
        assert report.watermark.found and report.watermark.payload == Marking(job_id="job-png").payload
