"""Segment records of video jobs run by the Ray executor: one row per (job, segment), in the job store's database.

A video job is planned once (its segments are the rows); a segment is ``pending`` → ``running`` (``attempts`` + 1,
the actor that took it) → ``done`` (``completions`` + 1, the storage key of its file). Every change is one
conditional ``UPDATE``: a segment already ``done`` is never started again, so after any crash — of an actor, a
node or the API — only unfinished segments are recomputed, and ``completions`` stays 1 (tests read it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, Integer, String, Text, delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from faceweave.serve.store import Base


class SegmentRow(Base):
    __tablename__ = "job_segments"  # revision 0003

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    start_pts: Mapped[int] = mapped_column(BigInteger)
    end_pts: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    frames: Mapped[int] = mapped_column(Integer)
    keyframe_aligned: Mapped[bool] = mapped_column(Boolean)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    completions: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    result_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    frames_done: Mapped[int] = mapped_column(Integer, default=0)
    stats_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)


@dataclass(frozen=True)
class SegmentRecord:
    """A detached snapshot of one segment row."""

    job_id: str
    index: int
    start_pts: int
    end_pts: int | None
    frames: int
    keyframe_aligned: bool
    state: str
    attempts: int
    completions: int
    worker: str | None
    result_key: str | None
    frames_done: int
    stats: dict[str, Any]

    @classmethod
    def from_row(cls, r: SegmentRow) -> SegmentRecord:
        return cls(r.job_id, r.idx, r.start_pts, r.end_pts, r.frames, bool(r.keyframe_aligned), r.state,
                   r.attempts or 0, r.completions or 0, r.worker, r.result_key, r.frames_done or 0,
                   json.loads(r.stats_json) if r.stats_json else {})  # fmt: skip

    def plan(self) -> dict[str, Any]:
        """The segment as :class:`faceweave.media.video.segments.Segment` keyword arguments."""
        return {"index": self.index, "start_pts": self.start_pts, "end_pts": self.end_pts, "frames": self.frames,
                "keyframe_aligned": self.keyframe_aligned}  # fmt: skip


class SqlSegmentStore:
    """Segment rows on the job store's SQLAlchemy engine (the migrations made the table)."""

    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def segments(self, job_id: str) -> list[SegmentRecord]:
        with self._sessions() as s:
            rows = s.scalars(select(SegmentRow).where(SegmentRow.job_id == job_id).order_by(SegmentRow.idx)).all()
            return [SegmentRecord.from_row(r) for r in rows]

    def save_plan(self, job_id: str, plan: list[dict[str, Any]]) -> list[SegmentRecord]:
        """Store the plan unless the job already has one (another run planned it first: theirs wins)."""
        now = time.time()
        try:
            with self._sessions() as s, s.begin():
                if s.scalar(select(SegmentRow.idx).where(SegmentRow.job_id == job_id).limit(1)) is None:
                    s.add_all(SegmentRow(job_id=job_id, idx=p["index"], start_pts=p["start_pts"], end_pts=p["end_pts"],
                                         frames=p["frames"], keyframe_aligned=p["keyframe_aligned"], state="pending",
                                         attempts=0, completions=0, frames_done=0, updated_at=now)
                              for p in plan)  # fmt: skip
        except IntegrityError:
            pass  # planned concurrently: read the plan that won
        return self.segments(job_id)

    def start(self, job_id: str, index: int, worker: str) -> bool:
        """``pending``/``running`` → ``running`` by ``worker``; False when the segment is already done."""
        with self._sessions() as s, s.begin():
            res = s.execute(
                update(SegmentRow)
                .where(SegmentRow.job_id == job_id, SegmentRow.idx == index, SegmentRow.state != "done")
                .values(state="running", attempts=SegmentRow.attempts + 1, worker=worker, updated_at=time.time())
            )
            return bool(res.rowcount)  # type: ignore[attr-defined]

    def release(self, job_id: str, index: int) -> None:
        """A running segment whose actor died goes back to ``pending`` (a done one stays done)."""
        with self._sessions() as s, s.begin():
            s.execute(
                update(SegmentRow)
                .where(SegmentRow.job_id == job_id, SegmentRow.idx == index, SegmentRow.state == "running")
                .values(state="pending", updated_at=time.time())
            )

    def finish(self, job_id: str, index: int, *, result_key: str, frames: int, stats: dict[str, Any]) -> bool:
        """``running`` → ``done``; False (and nothing changed) when it was done already: a late duplicate."""
        with self._sessions() as s, s.begin():
            res = s.execute(
                update(SegmentRow)
                .where(SegmentRow.job_id == job_id, SegmentRow.idx == index, SegmentRow.state != "done")
                .values(state="done", completions=SegmentRow.completions + 1, result_key=result_key,
                        frames_done=frames, stats_json=json.dumps(stats, default=str), updated_at=time.time())
            )  # fmt: skip
            return bool(res.rowcount)  # type: ignore[attr-defined]

    def delete(self, job_id: str) -> None:
        with self._sessions() as s, s.begin():
            s.execute(delete(SegmentRow).where(SegmentRow.job_id == job_id))
