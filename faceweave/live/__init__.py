"""Live mode: swap a camera, a network stream or a file played in real time (DESIGN §8).

Same engine as video jobs, on the camera's clock: :mod:`~faceweave.live.sources` (inputs), a one-slot
:mod:`~faceweave.live.mailbox` (newest frame wins), :mod:`~faceweave.live.session` (the engine loop and
``run_live``), :mod:`~faceweave.live.sinks` (outputs), :mod:`~faceweave.live.shared` (one warm engine for many
sessions, their frames batched) and :mod:`~faceweave.live.webrtc` (the browser's camera over WebRTC).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faceweave.live.mailbox import LiveStats, Mailbox
    from faceweave.live.session import LiveSession, run_live

__all__ = ["LIVE_DEFAULTS", "LiveSession", "LiveStats", "Mailbox", "run_live"]

#: What live mode changes from the jobs' settings, for the frame rate: no enhancer (the detail pass costs ~20 % of a
#: CPU frame, docs/benchmarks.md §4), no detail restoration (a cost per frame for a sharpness a moving picture
#: hides) and no hairline fill (its per-frame gate and mask test are ~350 more ops a face around the swap's CUDA
#: graph, tests/swapper/test_live_ops.py). `faceweave live`, the /live sessions and benchmarks/live_bench.py start
#: from these.
LIVE_DEFAULTS: dict[str, Any] = {"enhancer": None, "detail_restore": False, "hairline_fill": False}


def __getattr__(name: str) -> Any:
    # loaded on first use: every `faceweave` command imports faceweave.live.cli (mounted into the CLI), and the
    # session's media stack is not needed by `faceweave swap` before its first frame
    if name in ("LiveStats", "Mailbox"):
        from faceweave.live import mailbox

        return getattr(mailbox, name)
    if name in ("LiveSession", "run_live"):
        from faceweave.live import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
