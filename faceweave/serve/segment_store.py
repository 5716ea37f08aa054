"""Segment records of video jobs run by the Ray executor: one row per (job, segment), in the job store's database.

A video job is planned once (its segments are the rows); a segment is ``pending`` → ``running`` (``attempts`` + 1,
the actor that took it, the storage key its attempt writes) → ``done`` (``completions`` + 1, ``result_key`` the file
of the attempt that finished). Every transition is durable and idempotent:

- durable: it is retried with backoff until it commits (:func:`~faceweave.serve.resilience.retry_db`, bounded by a
  deadline, then :class:`~faceweave.serve.resilience.DatabaseUnavailable`); it never returns as if it committed
  when it did not. (The job store also asks PostgreSQL for synchronous commits: see ``make_engine``.)
- idempotent: the attempt's storage key is the transition's token. A transition retried after an unknown outcome
  (the connection died around ``COMMIT``) finds its own key already in the row and counts nothing twice.

A segment already ``done`` is never started or finished again, so after any crash — of an actor, a node, the API
or the database — only unfinished segments are recomputed, and ``completions`` stays 1 (tests read it).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Boolean, Float, Integer, String, Text, case, delete, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from faceweave.serve.resilience import retry_db
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

    def _row(self, job_id: str, index: int) -> SegmentRecord | None:
        with self._sessions() as s:
            row = s.get(SegmentRow, (job_id, index))
            return None if row is None else SegmentRecord.from_row(row)

    def start(self, job_id: str, index: int, worker: str, *, key: str) -> bool:
        """``pending``/``running`` → ``running`` by ``worker`` for the attempt writing ``key``; False when the
        segment is already done. Retried until it commits; a retry of a start that did commit counts no attempt."""

        def once() -> bool:
            with self._sessions() as s, s.begin():
                res = s.execute(
                    update(SegmentRow)
                    .where(SegmentRow.job_id == job_id, SegmentRow.idx == index, SegmentRow.state != "done",
                           SegmentRow.result_key.is_distinct_from(key))
                    .values(state="running", attempts=SegmentRow.attempts + 1, worker=worker, result_key=key,
                            updated_at=time.time())
                )  # fmt: skip
                if res.rowcount:  # type: ignore[attr-defined]
                    return True
            row = self._row(job_id, index)  # not changed now: done, or this very start committed before
            return row is not None and row.state == "running" and row.result_key == key

        return retry_db(once, what=f"start segment {index}")

    def release(self, job_id: str, index: int, *, key: str) -> None:
        """The attempt writing ``key`` died with its actor: its segment goes back to ``pending`` (a done one, or
        one another attempt took meanwhile, stays as it is)."""

        def once() -> None:
            with self._sessions() as s, s.begin():
                s.execute(
                    update(SegmentRow)
                    .where(SegmentRow.job_id == job_id, SegmentRow.idx == index, SegmentRow.state == "running",
                           SegmentRow.result_key == key)
                    .values(state="pending", updated_at=time.time())
                )  # fmt: skip

        retry_db(once, what=f"release segment {index}")

    def finish(self, job_id: str, index: int, *, result_key: str, frames: int, stats: dict[str, Any]) -> bool:
        """``running`` → ``done`` with the file ``result_key`` of the attempt that wrote it; False (and nothing
        changed) when another attempt finished it first: a late duplicate, whose file the caller drops.

        Retried until it commits; a retry of a finish that did commit (its key is the row's) returns True and
        counts no second completion. A segment whose start record is not this attempt's (the job was taken over,
        or the start's record is gone) gets this attempt counted here: a done segment always has ``attempts`` ≥ 1.
        """

        def once() -> bool:
            with self._sessions() as s, s.begin():
                res = s.execute(
                    update(SegmentRow)
                    .where(SegmentRow.job_id == job_id, SegmentRow.idx == index, SegmentRow.state != "done")
                    .values(state="done", completions=SegmentRow.completions + 1, result_key=result_key,
                            attempts=case((SegmentRow.result_key == result_key, SegmentRow.attempts),
                                          else_=SegmentRow.attempts + 1),
                            frames_done=frames, stats_json=json.dumps(stats, default=str), updated_at=time.time())
                )  # fmt: skip
                if res.rowcount:  # type: ignore[attr-defined]
                    return True
            row = self._row(job_id, index)  # done already: by this very call's earlier commit, or by another
            return row is not None and row.state == "done" and row.result_key == result_key

        return retry_db(once, what=f"finish segment {index}")

    def delete(self, job_id: str) -> None:
        with self._sessions() as s, s.begin():
            s.execute(delete(SegmentRow).where(SegmentRow.job_id == job_id))
