"""The swap engine: owns the models of one job (detector, FaceMesh, identity, plug-ins) on one device.

Stages stay plain functions (``analysis/``, ``swap/``, ``ops/``); the engine only holds their weights and composes
them for batches of frames: decode → detect → landmarks → select → swap → blend → enhance → encode.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import ParamSpec, Protocol, TypeVar

import numpy as np
import torch

from faceweave.analysis.face import Face
from faceweave.analysis.identity import face_identity
from faceweave.analysis.select import select_faces
from faceweave.cuda_graphs import GraphCache, GraphPool
from faceweave.device import engine_lock, init_cuda_linalg, resolve_device, resolve_dtype
from faceweave.enhance.detail import DetailEnhancer
from faceweave.errors import InvalidOption, NoFaceInReference, NoFaceInSource
from faceweave.models.tflite_graph import set_cuda_graphs
from faceweave.settings import SwapSettings
from faceweave.stages import (
    DescriptorRecogniser,
    Detector,
    EmbeddingRecogniser,
    Enhancer,
    Landmarker,
    Recogniser,
    Swapper,
)
from faceweave.swapper.geometry import CROP_SIZES
from faceweave.swapper.mesh import (
    MeshSwapOptions,
    MeshSwapper,
    SourceTexture,
    crop_graphs,
    prepare_source_texture,
    swap_faces,
    working_crop_size,
)


@dataclass(frozen=True)
class PreparedSource:
    """One source image, analysed once per job: its face, texture (built-in swapper) and plug-in latent."""

    face: Face
    texture: SourceTexture
    latent: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> PreparedSource:
        """A copy with its tensors on ``device`` (segment workers get sources on the CPU and move them); the
        texture's landmark points stay on the host, where the swap's geometry is computed."""
        tex = self.texture.to(device)
        latent = None if self.latent is None else self.latent.to(device)
        return PreparedSource(face=self.face, texture=tex, latent=latent)


def host_rgb(rgb: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB as a host tensor (sharing ``rgb``'s memory where it can)."""
    arr = np.ascontiguousarray(rgb)
    if not arr.flags.writeable:  # decoded/read-only buffers: torch warns on (and must not alias) them
        arr = arr.copy()
    return torch.from_numpy(arr)


def rgb_to_float(rgb: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB on any device → ``(1, 3, H, W)`` float ``[0, 1]`` on that device."""
    return rgb.permute(2, 0, 1)[None].to(dtype).div_(255)


def to_tensor(rgb: np.ndarray, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB → ``(1, 3, H, W)`` float ``[0, 1]`` on ``device``, one host→device copy."""
    return rgb_to_float(host_rgb(rgb).to(device, non_blocking=True), dtype)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` float ``[0, 1]`` → ``(B, H, W, 3)`` uint8 on the host (rounded, one copy)."""
    return (frames.float().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
            .cpu().numpy())


#: the analysis nets (detector, FaceMesh) run in float32 whatever ``settings.dtype`` says. In float16 the faces found in
#: an image depended on what else was in its batch (cuDNN picks kernels by batch size, and their rounding moved a
#: source's box by 3.7 px and its landmarks by 1.8 px on an H100: ``benchmarks/image_batch_parity.py --explain``),
#: so a request's output depended on other users' requests batched with it (issue 18); float32 gave identical faces.
#: It is not slower where it counts: the video path's analysis took 0.885 + 0.245 ms (fp32) against 0.574 + 0.342
#: (fp16) per frame at batch 32 with graphs (H100, docs/benchmarks.md 0-21), and that stream is bound by its host
#: thread, not the GPU.
ANALYSIS_DTYPE = torch.float32


def make_detector(settings: SwapSettings, device: torch.device, dtype: torch.dtype, pool: GraphPool | None = None
                  ) -> Detector:
    """The detector of ``settings.detector``: ``blazeface`` (built-in, CUDA graphs per ``settings.cuda_graphs``
    in ``pool``), or an ONNX detector: ``retinaface`` → the embedded MobileNet0.25; ``retinaface_r50`` → a user's
    RetinaFace export (same contract) from ``settings.model_dir``; ``scrfd`` / ``retinaface_10g`` →
    :class:`~faceweave.models.scrfd.ScrfdDetector`. Missing files raise ``ModelMissing``."""
    name = settings.detector
    if name == "blazeface":
        from faceweave.analysis.detect import FaceDetector

        detector = FaceDetector(device=device, dtype=dtype)
        set_cuda_graphs(detector, settings.cuda_graphs, pool)
        return detector
    from faceweave.analysis.onnx_detect import RetinaFaceDetector, ScrfdDetector
    from faceweave.models.onnx_zoo import resolve_model_file
    from faceweave.models.registry import get_spec

    spec = get_spec(name)
    if spec.family != "detector" or spec.extra.get("contract") not in ("retinaface_priorbox", "scrfd"):
        raise InvalidOption(f"{name!r} is not an ONNX face detector",
                            hint="detectors: blazeface, retinaface, retinaface_r50, scrfd, retinaface_10g")
    if spec.embedded:
        return RetinaFaceDetector(device, dtype)
    path = resolve_model_file(spec, settings.model_dir)
    if spec.extra["contract"] == "retinaface_priorbox":
        return RetinaFaceDetector(device, dtype, model_path=path)
    return ScrfdDetector(path, device, dtype, size=spec.contract.size[0])


def make_landmarker(settings: SwapSettings, device: torch.device, dtype: torch.dtype, pool: GraphPool | None = None
                    ) -> Landmarker:
    """FaceMesh, with CUDA graphs per ``settings.cuda_graphs`` (in ``pool``)."""
    from faceweave.analysis.landmarks import FaceMesh

    mesh = FaceMesh(device=device, dtype=dtype)
    set_cuda_graphs(mesh, settings.cuda_graphs, pool)
    return mesh


def make_recogniser(settings: SwapSettings, device: torch.device, shared: EmbeddingRecogniser | None = None
                    ) -> Recogniser:
    """The recogniser of ``settings.recogniser``: dlib (built-in) or the ArcFace plug-in (``ModelMissing`` naming
    the file when it is not installed). ``shared``: an ArcFace session of the same file already loaded (a plug-in
    swapper's), used instead of loading it twice."""
    if settings.recogniser == "dlib":
        from faceweave.models.dlib_identity import DlibIdentity

        return DlibIdentity()
    if shared is not None:
        return shared
    from faceweave.models.arcface import ArcFaceRecogniser
    from faceweave.models.onnx_zoo import resolve_model_file
    from faceweave.models.registry import get_spec

    return ArcFaceRecogniser(resolve_model_file(get_spec("arcface"), settings.model_dir), device=device)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _serialised(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``method`` under its engine's lock: the nets' CUDA graphs replay on shared static buffers and the models
    load lazily, so two threads must not be inside the engine at once (decode and encode around it still overlap)."""

    @functools.wraps(method)
    def locked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        engine = args[0]
        assert isinstance(engine, SwapEngine)
        with engine.lock:
            return method(*args, **kwargs)

    return locked


class SwapEngine:
    """Models and stages for one :class:`SwapSettings` on one device. Thread-safe: the forwards (``analyze``,
    ``refine``, ``identify``, ``swap``, ``prepare_sources``, ``prepare_source``, ``reference_embeddings``,
    ``warm_up``) run one at a time under :attr:`lock`, so K concurrent jobs can share one warm engine (one copy
    of the models, one graph set). On CUDA the lock is the device's: engines of different settings on one GPU take
    turns too, so no CUDA-graph capture overlaps other work on the device."""

    def __init__(self, settings: SwapSettings | None = None, *, device: torch.device | None = None) -> None:
        self.settings = settings or SwapSettings()
        self.device = device or resolve_device(self.settings.device)
        #: held by every forward (see :func:`_serialised`); reentrant because stages call one another. On CUDA it
        #: is the device's, shared with every other engine there (:func:`~faceweave.device.engine_lock`)
        self.lock = engine_lock(self.device)
        init_cuda_linalg(self.device)
        self.dtype = resolve_dtype(self.settings.dtype, self.device)
        #: the built-in swapper's options, taken from the settings once
        self.swap_options = MeshSwapOptions.from_settings(self.settings)
        self._detector: Detector | None = None
        self._mesh: Landmarker | None = None
        self._identity: Recogniser | None = None
        self._mesh_swapper: MeshSwapper | None = None
        self._pools: dict[str, GraphPool] = {}
        self._swap_graphs: GraphCache | None = None
        self._warmed: set[tuple[int, int] | None] = set()  # frame sizes warm_up has run for (None: no frame size)
        # a plug-in swapper (None: the built-in one) and the ArcFace session it holds, if the identity stage can
        # share it (same file)
        self._swapper: Swapper[torch.Tensor] | None = None
        self._shared_arcface: EmbeddingRecogniser | None = None
        self._enhancer: Enhancer | None = None
        if self.settings.swapper != "mesh":
            from faceweave.swapper.onnx import load_swapper

            plugin = load_swapper(self.settings.swapper, device=self.device, dtype=self.dtype, settings=self.settings)
            self._swapper = plugin
            if plugin.spec.extra.get("recogniser", "arcface") == "arcface":
                self._shared_arcface = plugin.recogniser
        if self.settings.enhancer:
            from faceweave.enhance import load_enhancer

            self._enhancer = load_enhancer(self.settings.enhancer, device=self.device, dtype=self.dtype,
                                           settings=self.settings)

    # --- models, loaded on first use ----------------------------------------------------------------------
    @property
    def detector(self) -> Detector:
        if self._detector is None:
            self._detector = make_detector(self.settings, self.device, ANALYSIS_DTYPE, self._graph_pool("analysis"))
        return self._detector

    def _graph_pool(self, stage: str) -> GraphPool | None:
        """The CUDA-graph memory pool of a stage's nets (None off CUDA or without graphs): one for the analysis
        (detector, FaceMesh) and one for the swap, so that the video stream's two threads, each on its own CUDA
        stream, replay their graphs at the same time (graphs of one pool take turns: see GraphPool)."""
        if stage not in self._pools and self.device.type == "cuda" and self.settings.cuda_graphs:
            self._pools[stage] = GraphPool()
        return self._pools.get(stage)

    @property
    def crop_graphs(self) -> GraphCache | None:
        """The built-in swapper's CUDA graphs (:func:`~faceweave.swapper.mesh.crop_graphs`): on CUDA with
        ``cuda_graphs``, except for the Poisson blend, which waits for the device; else None (eager)."""
        if (self._swap_graphs is None and self.device.type == "cuda" and self.settings.cuda_graphs
                and self.settings.swapper == "mesh" and self.settings.blend != "poisson"):
            self._swap_graphs = crop_graphs(self.swap_options, self._graph_pool("swap"))
        return self._swap_graphs

    @property
    def mesh_swapper(self) -> MeshSwapper:
        """The built-in swapper (with :attr:`crop_graphs` when there are any)."""
        if self._mesh_swapper is None:
            self._mesh_swapper = MeshSwapper(self.swap_options, self.crop_graphs)
        return self._mesh_swapper

    @property
    def mesh(self) -> Landmarker:
        if self._mesh is None:
            self._mesh = make_landmarker(self.settings, self.device, ANALYSIS_DTYPE, self._graph_pool("analysis"))
        return self._mesh

    @property
    def identity(self) -> Recogniser:
        """The recogniser of ``settings.recogniser`` (see :func:`make_recogniser`)."""
        if self._identity is None:
            self._identity = make_recogniser(self.settings, self.device, self._shared_arcface)
        return self._identity

    @_serialised
    def load_models(self) -> None:
        """Load every model the settings need, without running any (they load on first use otherwise): the
        detector, FaceMesh, the recogniser when ``selector="reference"``, the built-in swapper and its graph cache
        (plug-in swappers and enhancers load in the constructor)."""
        _ = self.detector, self.mesh
        if self.settings.selector == "reference":
            _ = self.identity
        if self._swapper is None:
            _ = self.mesh_swapper

    @_serialised
    def warm_up(self, frame_size: tuple[int, int] | None = None) -> None:
        """Load every model the settings need and run the analysis nets on a bundled face at the batch sizes a job
        uses (the service's /readyz waits for this).

        On a GPU the first forward at each batch shape pays cuDNN's plan search (seconds per net on an H100; the
        nets pad batches to a few sizes, see :func:`~faceweave.models.tflite_graph.cuda_batch_bucket`) and the
        capture of its CUDA graph; without a face in the warm-up image FaceMesh never ran and a video's first
        batches paid it instead. With ``frame_size`` ``(height, width)`` (video jobs on a GPU) every net also runs at
        every padded batch size a batch of such frames can need (:meth:`FaceDetector.forward_batch_sizes`: tiles
        and rotated retries for any number of frames without a face; FaceMesh for up to one face per frame), so
        those graphs are captured before the first frame, not whenever a video first loses a face, and a job's peak
        GPU memory does not depend on its content or length (frames with several faces each can still add one).
        The built-in swapper's graphs (:attr:`crop_graphs`) are captured likewise: every crop size, for every padded
        face count up to one face per frame.

        The same steps as :meth:`warm_up_steps`, all under the lock at once (a video job on the GPU may instead run
        them in the background while it streams: :class:`~faceweave.pipeline.warm_up.BackgroundWarmUp`).
        """
        for _ in self.warm_up_steps(frame_size):
            pass

    def warm_up_steps(self, frame_size: tuple[int, int] | None = None) -> Generator[str, None, None]:
        """:meth:`warm_up` one step at a time: each ``next()`` runs one forward or one swap (at most a few CUDA-graph
        captures) and yields its name; the last one marks ``frame_size`` warm. The caller holds :attr:`lock` around
        each ``next()`` (``warm_up`` around all of them), so another thread's batches can run between steps."""
        from faceweave.data import media_path
        from faceweave.media.image import read_image

        if frame_size in self._warmed:  # an engine serves many jobs: warm once per frame size
            return
        face = self.to_tensor(read_image(media_path("astronaut.png")).rgb)
        found: list[list[Face]] = []
        for count in sorted({1, 2, 4, self.settings.batch_size} & set(range(1, self.settings.batch_size + 1))):
            found = self.analyze(face.expand(count, -1, -1, -1))
            yield f"analysis x{count}"
        if frame_size is not None and self.device.type == "cuda":
            from faceweave.analysis.detect import FaceDetector
            from faceweave.analysis.landmarks import FaceMesh
            from faceweave.models.facemesh import INPUT_SIZE
            from faceweave.models.tflite_graph import cuda_batch_bucket

            if isinstance(self.detector, FaceDetector):  # the ONNX detector plug-ins capture no graphs
                yield from self.detector.warm_up_steps(*frame_size, self.settings.batch_size)
            buckets = sorted({cuda_batch_bucket(k) for k in range(1, self.settings.batch_size + 1)})
            mesh = self.mesh
            assert isinstance(mesh, FaceMesh)  # make_landmarker's
            for n in buckets:  # FaceMesh: up to one face per frame of a batch
                with torch.inference_mode():  # per step: inference mode is the calling thread's, not the generator's
                    mesh.net(torch.zeros(n, 3, INPUT_SIZE, INPUT_SIZE, device=self.device, dtype=ANALYSIS_DTYPE))
                yield f"facemesh x{n}"
            if self.crop_graphs is not None and found[0]:
                yield from self._warm_up_swap_steps(face, found[0][0], frame_size, buckets)
        self._warmed.add(frame_size)

    def _warm_up_swap(self, image: torch.Tensor, face: Face, frame_size: tuple[int, int], counts: Sequence[int]
                      ) -> None:
        """Capture the swap's graphs (every crop size, each face count in ``counts``): :meth:`_warm_up_swap_steps`
        at once."""
        for _ in self._warm_up_swap_steps(image, face, frame_size, counts):
            pass

    def _warm_up_swap_steps(self, image: torch.Tensor, face: Face, frame_size: tuple[int, int],
                            counts: Sequence[int]) -> Generator[str, None, None]:
        """Capture the swap's graphs (every crop size, each face count in ``counts``, one swap per step) on frames of
        ``frame_size`` with the bundled face at opposite corners: the paste then covers the whole frame, the most
        memory a batch's paste can take, so the peak is reached here and not whenever a video first has faces far
        apart."""
        height, width = frame_size
        h, w = min(image.shape[-2], height), min(image.shape[-1], width)
        n = max(counts)
        frames = torch.zeros(n, 3, height, width, device=self.device, dtype=self.dtype)
        faces = []
        assert face.landmarks is not None
        for k in range(n):
            x0, y0 = (0, 0) if k % 2 == 0 else (width - w, height - h)
            frames[k, :, y0 : y0 + h, x0 : x0 + w] = image[0, :, :h, :w]
            faces.append(replace(face, landmarks=face.landmarks + face.landmarks.new_tensor([x0, y0, 0.0])))
        source = prepare_source_texture(image, face)
        for count in counts:
            items = [(k, faces[k], source) for k in range(count)]
            for size in CROP_SIZES:
                swap_faces(frames[:count], items, self.swap_options, graphs=self.crop_graphs, crop_size=size)
                yield f"swap x{count} crop {size}"

    # --- stages -------------------------------------------------------------------------------------------
    def to_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        return to_tensor(rgb, self.device, self.dtype)

    @_serialised
    def analyze(self, frames: torch.Tensor, sizes: Sequence[tuple[int, int]] | None = None, *,
                recall: bool = True) -> list[list[Face]]:
        """Detect faces and their 468 landmarks in ``(B, 3, H, W)`` float ``[0, 1]`` frames.

        ``sizes``: per frame, ``(height, width)`` of an image at the top left of a zero-padded frame (images of
        different sizes stacked on one canvas, see :mod:`faceweave.pipeline.image_batch`); each is analysed as if
        alone. The built-in detector runs its nets once over all of them; an ONNX detector once per image size.
        ``recall=False`` skips the small-face tiles (a video that tracks its faces between recall passes).
        """
        from faceweave.analysis.detect import FaceDetector, group_by_size

        if sizes is None:
            faces = self.detector.detect(frames, tiles=recall)
        elif isinstance(self.detector, FaceDetector):
            faces = self.detector.detect(frames, sizes=sizes, tiles=recall)
        else:
            faces = [[] for _ in sizes]
            for (h, w), index in group_by_size(sizes).items():
                for i, found in zip(index, self.detector.detect(frames[index, :, :h, :w]), strict=True):
                    faces[i] = found
        # FaceMesh samples its crops with zeros outside the image: the padding changes nothing
        return self.mesh.landmarks(frames, faces) if any(faces) else faces

    @_serialised
    def refine(self, frames: torch.Tensor, faces: list[list[Face]]) -> list[list[Face]]:
        """Landmarks only, seeded by faces from an earlier frame (tracking between detections)."""
        return self.mesh.landmarks(frames, faces) if any(faces) else faces

    @_serialised
    def identify(self, frames: torch.Tensor, faces: list[list[Face]],
                 sizes: Sequence[tuple[int, int]] | None = None) -> list[list[Face]]:
        """Fill :attr:`Face.embedding` for every face: dlib 128-d (one host copy per frame with faces) or, with
        ``recogniser="arcface"``, unit-length 512-d from one batched forward on the device. ``sizes``: as in
        :meth:`analyze` (dlib then sees each image without its padding)."""
        identity = self.identity
        if isinstance(identity, DescriptorRecogniser):
            out: list[list[Face]] = []
            for b, frame_faces in enumerate(faces):
                if not frame_faces:
                    out.append([])
                    continue
                h, w = frames.shape[-2:] if sizes is None else sizes[b]
                rgb = to_uint8(frames[b : b + 1, :, :h, :w])[0]
                out.append(face_identity(rgb, frame_faces, identity=identity))
            return out
        from faceweave.analysis.identity import embed_faces
        from faceweave.models.arcface import ArcFaceRecogniser

        if not isinstance(identity, ArcFaceRecogniser):  # embed_faces' alignment is ArcFace's template
            raise InvalidOption(f"no embedding path for recogniser {type(identity).__name__}")
        return embed_faces(identity, frames, faces)

    @_serialised
    def prepare_sources(self, images: Sequence[np.ndarray]) -> list[PreparedSource]:
        """Analyse each source image once: its largest face, texture, and the plug-in latent if any."""
        prepared = []
        for n, rgb in enumerate(images):
            t = self.to_tensor(rgb)
            faces = self.analyze(t)[0]
            if not faces:
                raise NoFaceInSource(
                    f"no face found in source image {n + 1} of {len(images)}",
                    hint="use a photo where the face is clearly visible, frontal, at least ~40 px wide",
                )
            prepared.append(self.prepare_source(t, max(faces, key=lambda f: f.area)))
        return prepared

    @_serialised
    def prepare_source(self, image: torch.Tensor, face: Face) -> PreparedSource:
        """One source from its image ``(1, 3, H, W)`` float ``[0, 1]`` and its analysed face (the largest)."""
        if self.settings.selector == "reference":
            face = self.identify(image, [[face]])[0][0]
        latent = self._swapper.prepare_source(image, face) if self._swapper is not None else None
        return PreparedSource(face=face, texture=prepare_source_texture(
            image, face, hairline_fill=self.swap_options.hairline_fill), latent=latent)

    @_serialised
    def reference_embeddings(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Identity embeddings of the largest face of each reference image."""
        refs = []
        for rgb in images:
            t = self.to_tensor(rgb)
            faces = self.analyze(t)[0]
            if not faces:
                raise NoFaceInReference("no face found in the reference image",
                                        hint="use a clear photo of the person whose face should be swapped")
            emb = self.identify(t, [[max(faces, key=lambda f: f.area)]])[0][0].embedding
            assert emb is not None
            refs.append(emb)
        return refs

    def select(self, faces: list[Face], sources: Sequence[PreparedSource],
               reference: Sequence[torch.Tensor] | None = None) -> list[tuple[Face, int]]:
        """Faces to swap in one frame and the source index for each (see :func:`select_faces`)."""
        return select_faces(faces, self.settings, [s.face for s in sources], reference)

    def swap_key(self, plan: Sequence[Sequence[tuple[Face, int]]], sources: Sequence[PreparedSource]) -> int | None:
        """Plans of separate images with one key can share a :meth:`swap` call and get exactly what separate calls
        give: the built-in swapper works at one crop size per call (the largest face's), so that size is the key; a
        plug-in swapper's crops are its model's fixed size (None: any plans share)."""
        if self._swapper is not None:
            return None
        items = [(b, f, sources[s].texture) for b, row in enumerate(plan) for f, s in row]
        return working_crop_size(items, self.swap_options) if items else None

    @_serialised
    def swap(self, frames: torch.Tensor, plan: Sequence[Sequence[tuple[Face, int]]],
             sources: Sequence[PreparedSource]) -> torch.Tensor:
        """Swap the planned faces of each frame; frames without a planned face come back unchanged.

        Runs in inference mode (its output is an inference tensor, as the detector's faces are): a 512² image's swap
        is ~5,700 small ops, and leaving out autograd's dispatch took 12 % off its CPU time (bit-identical)."""
        with torch.inference_mode():
            return self._swap(frames, plan, sources)

    def _swap(self, frames: torch.Tensor, plan: Sequence[Sequence[tuple[Face, int]]],
              sources: Sequence[PreparedSource]) -> torch.Tensor:
        if self._swapper is not None:
            items = [(b, f, _latent(sources[s])) for b, row in enumerate(plan) for f, s in row]
            out = self._swapper.swap(frames, items) if items else frames
        else:
            mesh_items = [(b, f, sources[s].texture) for b, row in enumerate(plan) for f, s in row]
            out = self.mesh_swapper.swap(frames, mesh_items)
        if self._enhancer is not None and any(plan):
            # the enhancer works on what the swap changed: pixels the swap kept (occluders, the frame around the
            # face) stay the target's own, bit for bit
            faces = [[f for f, _ in row] for row in plan]
            if isinstance(self._enhancer, DetailEnhancer):
                # tests only its face windows; writes into the swap's own output (not the caller's frames)
                out = self._enhancer.enhance(out, faces, before=frames, inplace=out is not frames)
            else:
                enhanced = self._enhancer.enhance(out, faces)
                changed = (out != frames).any(1, keepdim=True)
                out = torch.where(changed, enhanced, out)
        return out


def _latent(source: PreparedSource) -> torch.Tensor:
    """A plug-in swapper's latent of ``source`` (every source has one when a plug-in swapper prepared it)."""
    if source.latent is None:
        raise InvalidOption("a source prepared without a plug-in swapper cannot feed one",
                            hint="prepare the sources with the engine that swaps")
    return source.latent


class ReferenceEmbedder(Protocol):
    """What :func:`job_references` needs of an engine (a :class:`SwapEngine`, or a stand-in in tests)."""

    def reference_embeddings(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]: ...


def job_references(engine: ReferenceEmbedder, settings: SwapSettings, reference: str | PathLike[str] | None,
                   source_images: Sequence[np.ndarray]) -> list[torch.Tensor] | None:
    """Identity embeddings for ``selector="reference"`` (the reference image's, else the sources'); else None."""
    if settings.selector != "reference":
        return None
    if reference is None:
        return list(engine.reference_embeddings(source_images))
    from faceweave.media.image import read_image

    return list(engine.reference_embeddings([read_image(Path(reference), max_pixels=settings.max_pixels).rgb]))
