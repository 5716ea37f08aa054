"""C2PA Content Credentials: a signed manifest on images and MP4/MOV outputs, and reading it back.

The manifest states one ``c2pa.actions`` entry — ``c2pa.created`` (or ``c2pa.edited`` when a target was edited) with
``digitalSourceType`` ``trainedAlgorithmicMedia`` and faceweave as the software agent — and an
``org.faceweave.ingredients`` assertion listing each input's role and SHA-256 (never its file name, and no
thumbnail: a source face must not travel inside the output). The claim thumbnail — of the output itself — is made
from the output's pixels by :func:`claim_thumbnail` for images (c2pa-rs would decode the encoded file again).

Signing: ES256 (ECDSA P-256). The operator's key and certificate chain (PEM) come from the settings; with none, a
local CA and a signer certificate are made on first use under faceweave's cache folder (``<cache>/c2pa``) and a
warning says so. C2PA validators refuse self-signed end-entity certificates and want ``digitalSignature`` key usage
and an extended key usage such as ``emailProtection``: the local pair follows those rules, so readers report the
manifest as *valid* with an *untrusted* signer, which is honest.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: threads of this process are still kept apart
    fcntl = None  # type: ignore[assignment]

import numpy as np

from faceweave import __version__
from faceweave.errors import DependencyMissing, InvalidOption, OutputNotWritable
from faceweave.provenance.metadata import TRAINED_ALGORITHMIC_MEDIA

log = logging.getLogger(__name__)

# formats faceweave signs (what c2pa-rs embeds into); MKV/WebM/BMP carry metadata and the watermark only
C2PA_MIME: dict[str, str] = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
    ".tif": "image/tiff", ".tiff": "image/tiff", ".mp4": "video/mp4", ".mov": "video/quicktime",
}
INGREDIENTS_LABEL = "org.faceweave.ingredients"
MERKLE_CHUNK_KB = 1024  # BMFF Merkle-tree hash chunk: signing memory stays ~1 chunk, not ~1 file (measured)
LOCAL_CN = "faceweave local signer (untrusted)"
THUMBNAIL_LONG_EDGE = 1024  # c2pa-rs's default claim thumbnail: 1024 px long edge, JPEG quality 75
THUMBNAIL_ID = "thumbnail.jpg"


def _c2pa() -> Any:
    try:
        import c2pa
    except ImportError:
        raise DependencyMissing("C2PA Content Credentials need the c2pa-python package",
                                hint="pip install c2pa-python (or turn C2PA off in the operator settings)") from None
    return c2pa


# --------------------------------------------------------------------------------------------- keys
@dataclass(frozen=True)
class SigningIdentity:
    """PEM certificate chain (signer first) and PEM private key. ``local``: made by faceweave, untrusted."""

    cert_chain: bytes
    private_key: bytes
    local: bool


def _local_identity_dir() -> Path:
    from faceweave.models.store import user_cache_dir

    return user_cache_dir() / "c2pa"


def make_local_identity(folder: Path) -> SigningIdentity:
    """Create a local CA + signer certificate (EC P-256, 10 years) in ``folder`` (key file mode 0600)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _dt.datetime.now(_dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "faceweave (local, untrusted)"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def usage(sign: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=not sign, crl_sign=not sign,
                             encipher_only=False, decipher_only=False)

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    start, end = now - _dt.timedelta(days=1), now + _dt.timedelta(days=3650)
    ca = (x509.CertificateBuilder(subject_name=name("faceweave local CA"), issuer_name=name("faceweave local CA"),
                                  public_key=ca_key.public_key(), serial_number=x509.random_serial_number(),
                                  not_valid_before=start, not_valid_after=end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder(subject_name=name(LOCAL_CN), issuer_name=ca.subject, public_key=key.public_key(),
                                    serial_number=x509.random_serial_number(), not_valid_before=start,
                                    not_valid_after=end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    chain = leaf.public_bytes(pem) + ca.public_bytes(pem)
    private = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    folder.mkdir(parents=True, exist_ok=True)
    # each file whole or not at all (written aside, then renamed): a reader never sees half a PEM
    _write_atomic(folder / "signer-key.pem", private, mode=0o600)
    _write_atomic(folder / "signer-chain.pem", chain, mode=0o644)
    return SigningIdentity(chain, private, local=True)


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Held while the local identity is read or made: two processes (or two threads, each with its own open file)
    that found no identity at once each made one, and the chain of one with the key of the other was left behind:
    every later signature failed ("the signature does not match the provided data or public key", 8 concurrent
    :sync requests on a fresh GPU box, 2026-12-05)."""
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover - not POSIX
        with _NO_FLOCK:
            yield
        return
    # flock excludes other processes and, each with its own open file, other threads of this one
    with open(folder / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


_NO_FLOCK = threading.Lock()


def _pair_matches(identity: SigningIdentity) -> bool:
    """Whether the private key is the one of the chain's first (signer) certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(identity.cert_chain)
        key = serialization.load_pem_private_key(identity.private_key, password=None)
    except ValueError:
        return False
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki))


def signing_identity(cert: str | Path | None = None, key: str | Path | None = None,
                     local_dir: Path | None = None) -> SigningIdentity:
    """The operator's identity (``cert`` chain + ``key`` PEM files), else the local one, made on first use."""
    if cert or key:
        if not (cert and key):
            raise InvalidOption("C2PA signing needs both a certificate chain and a private key",
                                hint="set c2pa_cert and c2pa_key together (PEM files)")
        try:
            return SigningIdentity(Path(cert).read_bytes(), Path(key).read_bytes(), local=False)
        except OSError as exc:
            raise InvalidOption(f"cannot read the C2PA certificate or key: {exc}", hint="check the paths") from None
    folder = local_dir or _local_identity_dir()
    chain, private = folder / "signer-chain.pem", folder / "signer-key.pem"
    with _folder_lock(folder):
        if chain.exists() and private.exists():
            identity = SigningIdentity(chain.read_bytes(), private.read_bytes(), local=True)
            if _pair_matches(identity):
                return identity
            log.warning("the local C2PA key in %s does not belong to its certificate (left by an older version that "
                        "could make two at once): made a new pair", folder)
        else:
            log.warning("no C2PA signing certificate configured: made a local, untrusted one in %s (readers will "
                        "show 'untrusted signer'; configure c2pa_cert/c2pa_key for a trusted one)", folder)
        return make_local_identity(folder)


# --------------------------------------------------------------------------------------------- signing
@dataclass(frozen=True)
class Ingredient:
    """An input of the job: its role (``source``, ``target``, ``reference``) and the SHA-256 of its bytes."""

    role: str
    sha256: str

    @classmethod
    def of_file(cls, role: str, path: str | os.PathLike[str]) -> Ingredient:
        h = hashlib.sha256()
        with Path(path).open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return cls(role, h.hexdigest())


def manifest_definition(ingredients: list[Ingredient], action: Literal["c2pa.created", "c2pa.edited"],
                        job_hash: str | None = None) -> dict[str, Any]:
    """The manifest faceweave signs (a plain dict, see the module docstring)."""
    agent = {"name": "faceweave", "version": __version__}
    ingredient_data: dict[str, Any] = {"ingredients": [{"role": i.role, "sha256": i.sha256} for i in ingredients]}
    if job_hash:
        ingredient_data["job_hash"] = job_hash
    # c2pa-rs wants the first action to be c2pa.created or c2pa.opened (with a parent ingredient, which would embed
    # the target's bytes or thumbnail): a swap is stated as created-by-AI, then edited
    actions = [{"action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA, "softwareAgent": agent}]
    if action == "c2pa.edited":
        actions.append({"action": "c2pa.edited", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                        "softwareAgent": agent, "description": "face swap"})
    return {
        "claim_generator_info": [agent],
        "title": "faceweave output",
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": actions}},
            {"label": INGREDIENTS_LABEL, "data": ingredient_data},
        ],
    }


def claim_thumbnail(rgb: np.ndarray) -> bytes:
    """The manifest's claim thumbnail of an image ``(H, W, 3)`` uint8 RGB: a JPEG of quality 75 at most 1024 px on
    its long edge — the form c2pa-rs gives one it makes itself, made here from the pixels already in memory (c2pa-rs
    decodes the encoded file again for it: a 1920² PNG's signature took 99 ms that way, 15 + 9 ms this way;
    docs/scaling.md)."""
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, THUMBNAIL_LONG_EDGE / max(h, w))
    small = rgb if scale >= 1.0 else cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(small[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 75])
    if not ok:
        raise OutputNotWritable("OpenCV failed to encode the C2PA thumbnail", hint="report this as a bug")
    return buf.tobytes()


def sign_bytes(data: bytes, mime: str, identity: SigningIdentity, ingredients: list[Ingredient],
               action: Literal["c2pa.created", "c2pa.edited"] = "c2pa.edited", job_hash: str | None = None,
               thumbnail: bytes | None = None) -> bytes:
    """Return ``data`` (an encoded image or MP4) with a signed C2PA manifest embedded. ``thumbnail``: the claim
    thumbnail (a JPEG, :func:`claim_thumbnail`); None lets c2pa-rs make it from ``data``."""
    c2pa = _c2pa()
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, identity.cert_chain, identity.private_key, None)
    definition = manifest_definition(ingredients, action, job_hash)
    if thumbnail is not None:
        definition["thumbnail"] = {"format": "image/jpeg", "identifier": THUMBNAIL_ID}
    with c2pa.Signer.from_info(info) as signer, c2pa.Builder(json.dumps(definition)) as builder:
        if thumbnail is not None:
            builder.add_resource(THUMBNAIL_ID, io.BytesIO(thumbnail))
        out = io.BytesIO()
        builder.sign(signer, mime, io.BytesIO(data), out)
    return out.getvalue()


def sign_file(src: Path, dst: Path, identity: SigningIdentity, ingredients: list[Ingredient],
              action: Literal["c2pa.created", "c2pa.edited"] = "c2pa.edited", job_hash: str | None = None) -> Path:
    """Write ``src`` with a signed manifest to ``dst`` from file streams.

    Memory: c2pa-python passes the files to c2pa-rs in 8 KiB reads, but c2pa-rs keeps its output in an in-memory
    store up to ``core.backing_store_memory_threshold_in_mb`` (a large default): 1 MB makes it spill to a temporary
    file. For MP4/MOV, c2pa-rs's BMFF hash otherwise holds about the file's size (198 MB MP4: +207 MB peak RSS);
    ``core.merkle_tree_chunk_size_in_kb`` makes it hash ``mdat`` as a Merkle tree of chunks of that size, read
    twice but held one chunk at a time (+12 MB, bounded; see docs/provenance.md).
    """
    c2pa = _c2pa()
    mime = C2PA_MIME[dst.suffix.lower()]
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, identity.cert_chain, identity.private_key, None)
    core: dict[str, int] = {"backing_store_memory_threshold_in_mb": 1}
    if mime.startswith("video/"):
        core["merkle_tree_chunk_size_in_kb"] = MERKLE_CHUNK_KB
    settings = c2pa.Settings.from_dict({"core": core})
    with c2pa.Context.builder().with_settings(settings).build() as context, \
            c2pa.Signer.from_info(info) as signer, \
            c2pa.Builder(json.dumps(manifest_definition(ingredients, action, job_hash)), context=context) as builder, \
            src.open("rb") as fin, dst.open("w+b") as fout:
        builder.sign(signer, mime, fin, fout)
    return dst


# --------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class C2paReport:
    """``status``: ``valid`` (signature and hashes check out; trusted or not), ``tampered`` (a manifest whose
    validation failed), ``absent`` (none), ``unsupported`` (format c2pa cannot carry)."""

    status: Literal["valid", "tampered", "absent", "unsupported"]
    signer: str | None = None
    trusted: bool = False
    synthetic: bool = False
    failures: tuple[str, ...] = ()
    ingredients: tuple[dict[str, str], ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"status": self.status, "signer": self.signer, "trusted": self.trusted, "synthetic": self.synthetic,
                "failures": list(self.failures), "ingredients": list(self.ingredients)}


def read_c2pa(path: str | Path) -> C2paReport:
    """Read and validate the C2PA manifest of ``path``."""
    path = Path(path)
    mime = C2PA_MIME.get(path.suffix.lower())
    if mime is None:
        return C2paReport("unsupported")
    c2pa = _c2pa()
    try:
        with path.open("rb") as fh:
            reader = c2pa.Reader.try_create(mime, fh)
            if reader is None:
                return C2paReport("absent")
            with reader:
                state = reader.get_validation_state()
                results = reader.get_validation_results() or {}
                manifest = reader.get_active_manifest() or {}
    except c2pa.C2paError as exc:
        # a manifest so damaged that it cannot be parsed counts as tampered, not absent
        return C2paReport("tampered", failures=(str(exc),))
    failures = tuple(f"{f.get('code')}: {f.get('explanation', '')}"
                     for f in (results.get("activeManifest") or {}).get("failure", []))
    failure_codes = {f.split(":")[0] for f in failures}
    # an untrusted signer is a statement about trust, not integrity: the content is what was signed
    integrity_failures = failure_codes - {"signingCredential.untrusted"}
    sig = manifest.get("signature_info") or {}
    actions = [a for asr in manifest.get("assertions", []) if asr.get("label", "").startswith("c2pa.actions")
               for a in asr.get("data", {}).get("actions", [])]
    ingredients = next((tuple(asr["data"].get("ingredients", [])) for asr in manifest.get("assertions", [])
                        if asr.get("label") == INGREDIENTS_LABEL), ())
    ok = state in ("Valid", "Trusted") and not integrity_failures
    return C2paReport(
        "valid" if ok else "tampered", signer=sig.get("common_name") or sig.get("issuer"), trusted=state == "Trusted",
        synthetic=any(a.get("digitalSourceType") == TRAINED_ALGORITHMIC_MEDIA for a in actions), failures=failures,
        ingredients=ingredients,
    )


__all__ = [
    "C2PA_MIME",
    "C2paReport",
    "Ingredient",
    "SigningIdentity",
    "claim_thumbnail",
    "make_local_identity",
    "manifest_definition",
    "read_c2pa",
    "sign_bytes",
    "sign_file",
    "signing_identity",
]
