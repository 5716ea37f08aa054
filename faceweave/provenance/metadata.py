"""Plain-metadata marking: the tags that say "synthetic" in image files and video containers, and reading them back.

Images: PNG iTXt chunks; JPEG/WebP EXIF ImageDescription (JSON) + Software, and an XMP packet with the IPTC
``DigitalSourceType`` ``trainedAlgorithmicMedia`` (what Google, Adobe and IPTC readers look for); TIFF tags + XMP
(tag 700). Videos: container tags (``comment``, ``description``, ``faceweave:synthetic``) — MP4/MOV need
``movflags=+use_metadata_tags`` for the custom key, which :func:`video_container_options` adds together with
``+faststart`` (the ``moov`` box first, so a browser can start playing before the whole file arrived).

Metadata is the weakest of faceweave's three markings (any re-encode drops it); C2PA (:mod:`.c2pa`) signs it and the
watermark (:mod:`.watermark`) survives re-encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from faceweave import __version__

SYNTHETIC_KEY = "faceweave:synthetic"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
DESCRIPTION = "AI-generated face swap (faceweave)"


def provenance_tags(job_hash: str | None = None) -> dict[str, str]:
    """The key/value marking of every output (image text chunks / EXIF JSON; video container tags).

    ``job_hash``: hex hash of the job id (the watermark carries the same), never the id or a file name.
    """
    tags = {SYNTHETIC_KEY: "true", "Software": f"faceweave {__version__}", "Description": DESCRIPTION}
    if job_hash:
        tags["faceweave:job"] = job_hash
    return tags


def xmp_packet() -> bytes:
    """An XMP packet stating IPTC DigitalSourceType = trainedAlgorithmicMedia and the creator tool."""
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        f'Iptc4xmpExt:DigitalSourceType="{TRAINED_ALGORITHMIC_MEDIA}" xmp:CreatorTool="faceweave {__version__}">'
        f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{DESCRIPTION}</rdf:li></rdf:Alt></dc:description>'
        '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="r"?>'
    ).encode()


# --------------------------------------------------------------------------------------------- video
def video_tags(job_hash: str | None = None) -> dict[str, str]:
    """Container tags for a video output (``container.metadata`` in PyAV)."""
    tags = {"comment": DESCRIPTION, "description": f"{DESCRIPTION}; {SYNTHETIC_KEY}=true",
            SYNTHETIC_KEY: "true", "encoded_by": f"faceweave {__version__}"}
    if job_hash:
        tags["faceweave:job"] = job_hash
    return tags


def video_container_options(path: Path | str) -> dict[str, str]:
    """Muxer options for a marked video output: MP4/MOV get ``+faststart`` and keep custom tags."""
    if Path(path).suffix.lower() in (".mp4", ".mov", ".m4v"):
        return {"movflags": "+faststart+use_metadata_tags"}
    return {}


def tag_video_file(src: Path | str, dst: Path | str, job_hash: str | None = None) -> Path:
    """Remux ``src`` to ``dst`` (no re-encode) with the provenance tags and, for MP4/MOV, ``+faststart``.

    For outputs written by another tool; faceweave's own encoder sets the same tags and options when it opens the
    container.
    """
    import av

    dst = Path(dst)
    with av.open(str(src)) as inp, av.open(str(dst), "w", options=video_container_options(dst)) as out:
        out.metadata.update({k: v for k, v in inp.metadata.items() if k not in ("encoder", "major_brand")})
        out.metadata.update(video_tags(job_hash))
        mapping = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
        for packet in inp.demux(*[s for s in inp.streams if s.index in mapping]):
            if packet.dts is None:  # demuxer flush packet
                continue
            packet.stream = mapping[packet.stream.index]
            out.mux(packet)
    return dst


def mp4_moov_first(path: Path | str) -> bool:
    """Whether an MP4/MOV file's ``moov`` box comes before its ``mdat`` (progressive playback, "faststart")."""
    import struct

    with Path(path).open("rb") as fh:
        while True:
            head = fh.read(8)
            if len(head) < 8:
                return False
            size, kind = struct.unpack(">I4s", head)
            if kind == b"moov":
                return True
            if kind == b"mdat":
                return False
            if size == 1:
                size = struct.unpack(">Q", fh.read(8))[0] - 8
            elif size == 0:
                return False
            fh.seek(size - 8, 1)


# --------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class MetadataMarking:
    """What the plain metadata of a file says. ``synthetic``: faceweave's key or the IPTC source type found."""

    synthetic: bool
    software: str | None
    iptc_source_type: str | None
    tags: dict[str, str]

    def to_dict(self) -> dict[str, object]:
        return {"synthetic": self.synthetic, "software": self.software, "iptc_digital_source_type":
                self.iptc_source_type}


def _xmp_source_type(xmp: bytes | str | None) -> str | None:
    if not xmp:
        return None
    text = xmp.decode("utf-8", "replace") if isinstance(xmp, bytes) else str(xmp)
    marker = "DigitalSourceType"
    at = text.find(marker)
    if at < 0:
        return None
    rest = text[at + len(marker) :]
    for quote_open, quote_close in (('="', '"'), (">", "<")):
        if rest.startswith(quote_open):
            return rest[len(quote_open) : rest.find(quote_close, len(quote_open))]
    return None


def read_image_marking(path: Path | str) -> MetadataMarking:
    """Read the marking of an image file (any format Pillow opens)."""
    from PIL import Image

    from faceweave.media.image import read_image_metadata

    tags = read_image_metadata(path)
    with Image.open(Path(path)) as im:
        xmp = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
        if xmp is None and im.format == "TIFF":
            xmp = im.getexif().get(700)  # type: ignore[assignment]
    source_type = _xmp_source_type(xmp)
    synthetic = tags.get(SYNTHETIC_KEY) == "true" or source_type == TRAINED_ALGORITHMIC_MEDIA
    return MetadataMarking(synthetic, tags.get("Software"), source_type, tags)


def read_video_marking(path: Path | str) -> MetadataMarking:
    """Read the container tags of a video file."""
    import av

    with av.open(str(path), metadata_errors="ignore") as c:
        # Matroska stores tag names upper-case: compare them lower-case
        tags = {str(k).lower(): str(v) for k, v in c.metadata.items()}
    synthetic = tags.get(SYNTHETIC_KEY) == "true" or f"{SYNTHETIC_KEY}=true" in tags.get("description", "")
    return MetadataMarking(synthetic, tags.get("encoded_by"), None, tags)


__all__ = [
    "DESCRIPTION",
    "SYNTHETIC_KEY",
    "TRAINED_ALGORITHMIC_MEDIA",
    "MetadataMarking",
    "mp4_moov_first",
    "provenance_tags",
    "read_image_marking",
    "read_video_marking",
    "tag_video_file",
    "video_container_options",
    "video_tags",
    "xmp_packet",
]
