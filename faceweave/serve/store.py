"""The job store: SQLAlchemy 2 models (SQLite by default, PostgreSQL by URL), migrated with Alembic.

The API and the executor talk to :class:`JobStore` (a Protocol) only, so another store slots in without touching
them. Every state change is one conditional ``UPDATE … WHERE state = …`` so that two workers (or two processes
on PostgreSQL) never claim the same job and a cancelled job is never overwritten by a finishing worker.
"""

from __future__ import annotations

import enum
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from faceweave.serve.errors import QuotaExceeded

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class JobState(str, enum.Enum):
    """queued → running → succeeded | failed | cancelled (running → queued again only on recovery)."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.cancelled)


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    media_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    settings_json: Mapped[str] = mapped_column(Text)
    source_keys_json: Mapped[str] = mapped_column(Text)
    target_key: Mapped[str] = mapped_column(String(512))
    result_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    result_bytes: Mapped[int] = mapped_column(Integer, default=0)
    stored_bytes: Mapped[int] = mapped_column(Integer, default=0)
    frames_done: Mapped[int] = mapped_column(Integer, default=0)
    frames_total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    fps: Mapped[float] = mapped_column(Float, default=0.0)
    eta_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    stage: Mapped[str] = mapped_column(String(32), default="")
    faces_swapped: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    webhook_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    expired: Mapped[bool] = mapped_column(Boolean, default=False)
    stats_json: Mapped[str | None] = mapped_column(Text, nullable=True)  # revision 0002


class ItemRow(Base):
    """One target of a batch job (revision 0004): its input, state, and result or failure reason."""

    __tablename__ = "job_items"

    job_id: Mapped[str] = mapped_column(String(32), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(512), default="")
    target_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    media_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    state: Mapped[str] = mapped_column(String(16))
    result_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    result_bytes: Mapped[int] = mapped_column(Integer, default=0)
    faces_swapped: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    stats_json: Mapped[str | None] = mapped_column(Text, nullable=True)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(128), index=True)
    key_hash: Mapped[str] = mapped_column(String(128), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


@dataclass(frozen=True)
class Job:
    """A detached, immutable snapshot of one job row."""

    id: str
    tenant: str
    state: JobState
    media_kind: str | None
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    settings: dict[str, Any]
    source_keys: list[str]
    target_key: str
    result_key: str | None
    result_bytes: int
    stored_bytes: int
    frames_done: int
    frames_total: int | None
    fps: float
    eta_s: float | None
    stage: str
    faces_swapped: int | None
    error_type: str | None
    error_code: str | None
    error_message: str | None
    attempts: int
    webhook_url: str | None
    expired: bool
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: JobRow) -> Job:
        return cls(
            id=row.id, tenant=row.tenant, state=JobState(row.state), media_kind=row.media_kind,
            created_at=row.created_at, updated_at=row.updated_at, started_at=row.started_at,
            finished_at=row.finished_at, settings=json.loads(row.settings_json),
            source_keys=json.loads(row.source_keys_json), target_key=row.target_key, result_key=row.result_key,
            result_bytes=row.result_bytes or 0, stored_bytes=row.stored_bytes or 0,
            frames_done=row.frames_done or 0, frames_total=row.frames_total, fps=row.fps or 0.0, eta_s=row.eta_s,
            stage=row.stage or "", faces_swapped=row.faces_swapped, error_type=row.error_type,
            error_code=row.error_code, error_message=row.error_message, attempts=row.attempts or 0,
            webhook_url=row.webhook_url, expired=bool(row.expired),
            stats=json.loads(row.stats_json) if row.stats_json else {},
        )  # fmt: skip


@dataclass(frozen=True)
class JobItem:
    """One target of a batch job. ``state``: queued → running → succeeded | failed (failed at submission too,
    when the target could not be read; ``target_key`` is then None)."""

    job_id: str
    index: int
    name: str
    target_key: str | None
    media_kind: str | None
    state: str
    result_key: str | None = None
    result_bytes: int = 0
    faces_swapped: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: ItemRow) -> JobItem:
        return cls(
            job_id=row.job_id, index=row.idx, name=row.name or "", target_key=row.target_key,
            media_kind=row.media_kind, state=row.state, result_key=row.result_key, result_bytes=row.result_bytes or 0,
            faces_swapped=row.faces_swapped, error_code=row.error_code, error_message=row.error_message,
            stats=json.loads(row.stats_json) if row.stats_json else {},
        )  # fmt: skip


@dataclass(frozen=True)
class NewJob:
    tenant: str
    settings: dict[str, Any]
    source_keys: list[str]
    target_key: str
    media_kind: str | None
    stored_bytes: int
    webhook_url: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    items: tuple[JobItem, ...] = ()  # a batch job's targets (empty: a single-target job)


@dataclass(frozen=True)
class Quota:
    """A tenant's limits, checked in the same transaction as the insert that would exceed them."""

    max_active_jobs: int
    max_stored_bytes: int


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    tenant: str
    prefix: str
    revoked: bool


@dataclass(frozen=True)
class QueueStats:
    """The queue as the metrics see it: when the oldest queued job was submitted, and how fast running jobs go."""

    oldest_queued_at: float | None  # time.time() of the oldest queued job's submission; None when none waits
    running_fps: float  # sum of the frames per second last reported by every running job (all processes)


class JobStore(Protocol):
    """What the API and executors need from a job store (SQL here; anything transactional elsewhere)."""

    def create_job(self, new: NewJob, quota: Quota | None = None) -> Job: ...
    def get_job(self, job_id: str, tenant: str | None = None) -> Job | None: ...
    def list_jobs(self, tenant: str, state: JobState | None, limit: int, offset: int) -> tuple[list[Job], int]: ...
    def claim_next(self) -> Job | None: ...
    def update_progress(
        self, job_id: str, *, frames_done: int, frames_total: int | None, fps: float, eta_s: float | None, stage: str
    ) -> None: ...
    def finish(
        self,
        job_id: str,
        *,
        result_key: str,
        result_bytes: int,
        faces_swapped: int,
        kind: str,
        stats: dict[str, Any] | None = None,
    ) -> bool: ...
    def fail(self, job_id: str, *, error_type: str, error_code: str, error_message: str) -> bool: ...
    def cancel(self, job_id: str) -> bool: ...
    def requeue_unfinished(self) -> int: ...
    def count_active(self, tenant: str) -> int: ...
    def stored_bytes(self, tenant: str) -> int: ...
    def finished_before(self, when: float) -> list[Job]: ...
    def mark_expired(self, job_id: str) -> None: ...
    def counts_by_state(self) -> dict[str, int]: ...
    def queue_stats(self) -> QueueStats: ...
    def add_api_key(self, tenant: str, key_hash: str, prefix: str) -> ApiKeyRecord: ...
    def find_api_key(self, key_hash: str) -> ApiKeyRecord | None: ...
    def list_items(self, job_ids: list[str]) -> dict[str, list[JobItem]]: ...
    def update_item(self, job_id: str, index: int, **values: Any) -> None: ...
    def finish_batch(self, job_id: str, *, faces_swapped: int, result_bytes: int, stats: dict[str, Any],
                     error: tuple[str, str] | None) -> bool: ...  # fmt: skip


def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
    # WAL: readers never block the worker's writes, and a kill -9 mid-write loses nothing committed.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and cross-thread use, PostgreSQL synchronous commits."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # a server with synchronous_commit = off loses acknowledged COMMITs in a crash: ask for synchronous ones
    sync = {"options": "-c synchronous_commit=on"} if url.startswith("postgresql") else {}
    return create_engine(url, pool_pre_ping=True, connect_args=sync)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent; run at every startup)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class SqlJobStore:
    """:class:`JobStore` on SQLAlchemy 2 (SQLite or PostgreSQL)."""

    def __init__(self, url: str, *, run_migrations: bool = True) -> None:
        self.engine = make_engine(url)
        if run_migrations:
            migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def _session(self) -> Session:
        return self._sessions()

    # --- jobs ----------------------------------------------------------------------------------------------
    @staticmethod
    def _add_job(s: Session, row: JobRow, new: NewJob) -> None:
        s.add(row)
        s.flush()  # the job row first: its items' foreign key points at it (no ORM relationship orders them)
        s.add_all(ItemRow(
            job_id=new.id, idx=it.index, name=it.name[:512], target_key=it.target_key, media_kind=it.media_kind,
            state=it.state, result_bytes=0, error_code=it.error_code, error_message=it.error_message,
        ) for it in new.items)  # fmt: skip
        s.flush()  # before the caller commits the connection under a quota lock (that session never flushes itself)

    def create_job(self, new: NewJob, quota: Quota | None = None) -> Job:
        """Insert ``new`` as queued; with ``quota``, atomically with the check of the tenant's live jobs and stored
        bytes (:class:`QuotaExceeded`), so concurrent submits of one tenant cannot all pass a count taken before
        any of them was inserted. SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock before the count;
        PostgreSQL: a transaction-scoped advisory lock per tenant serialises that tenant's submits only."""
        now = time.time()
        row = JobRow(
            id=new.id, tenant=new.tenant, state=JobState.queued.value, media_kind=new.media_kind, created_at=now,
            updated_at=now, settings_json=json.dumps(new.settings), source_keys_json=json.dumps(new.source_keys),
            target_key=new.target_key, stored_bytes=new.stored_bytes, webhook_url=new.webhook_url, attempts=0,
            result_bytes=0, frames_done=0, fps=0.0, stage="queued", expired=False,
        )  # fmt: skip
        if quota is None:
            with self._session() as s, s.begin():
                self._add_job(s, row, new)
            return Job.from_row(row)
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # pysqlite begins nothing itself before a SELECT
            elif conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:t, 0))"), {"t": new.tenant})
            with Session(bind=conn, expire_on_commit=False) as s:
                active = s.scalar(
                    select(func.count()).select_from(JobRow).where(
                        JobRow.tenant == new.tenant, JobRow.state.in_([JobState.queued.value, JobState.running.value])
                    )
                )  # fmt: skip
                stored = s.scalar(
                    select(func.coalesce(func.sum(JobRow.stored_bytes), 0)).where(
                        JobRow.tenant == new.tenant, JobRow.expired.is_(False)
                    )
                )  # fmt: skip
                if int(active or 0) >= quota.max_active_jobs:
                    conn.rollback()
                    raise QuotaExceeded(
                        f"this tenant already has {quota.max_active_jobs} queued or running jobs",
                        hint="wait for one to finish or cancel one",
                    )
                if int(stored or 0) + new.stored_bytes > quota.max_stored_bytes:
                    conn.rollback()
                    raise QuotaExceeded(
                        "this tenant's storage quota is used up", hint="delete finished jobs (DELETE /v1/swaps/{id})",
                        retry_after_s=3600,
                    )  # fmt: skip
                self._add_job(s, row, new)
            conn.commit()
        return Job.from_row(row)

    def get_job(self, job_id: str, tenant: str | None = None) -> Job | None:
        with self._session() as s:
            row = s.get(JobRow, job_id)
            if row is None or (tenant is not None and row.tenant != tenant):
                return None
            return Job.from_row(row)

    def list_jobs(self, tenant: str, state: JobState | None, limit: int, offset: int) -> tuple[list[Job], int]:
        q = select(JobRow).where(JobRow.tenant == tenant)
        c = select(func.count()).select_from(JobRow).where(JobRow.tenant == tenant)
        if state is not None:
            q, c = q.where(JobRow.state == state.value), c.where(JobRow.state == state.value)
        with self._session() as s:
            rows = s.scalars(q.order_by(JobRow.created_at.desc(), JobRow.id).limit(limit).offset(offset)).all()
            total = s.scalar(c) or 0
            return [Job.from_row(r) for r in rows], int(total)

    def claim_next(self) -> Job | None:
        with self._session() as s:
            for _ in range(5):  # another worker may win the race for the oldest job: try the next one
                job_id = s.scalar(
                    select(JobRow.id).where(JobRow.state == JobState.queued.value).order_by(JobRow.created_at).limit(1)
                )
                if job_id is None:
                    return None
                now = time.time()
                res = s.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id, JobRow.state == JobState.queued.value)
                    .values(
                        state=JobState.running.value,
                        started_at=now,
                        updated_at=now,
                        attempts=JobRow.attempts + 1,
                        stage="starting",
                    )  # fmt: skip
                )
                s.commit()
                if res.rowcount == 1:  # type: ignore[attr-defined]
                    row = s.get(JobRow, job_id, populate_existing=True)
                    return Job.from_row(row) if row is not None else None
        return None

    def update_progress(
        self, job_id: str, *, frames_done: int, frames_total: int | None, fps: float, eta_s: float | None, stage: str
    ) -> None:
        with self._session() as s, s.begin():
            s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == JobState.running.value)
                .values(
                    frames_done=frames_done,
                    frames_total=frames_total,
                    fps=fps,
                    eta_s=eta_s,
                    stage=stage,
                    updated_at=time.time(),
                )  # fmt: skip
            )

    def _transition(self, job_id: str, from_states: tuple[JobState, ...], **values: Any) -> bool:
        with self._session() as s, s.begin():
            res = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state.in_([st.value for st in from_states]))
                .values(updated_at=time.time(), **values)
            )
            return bool(res.rowcount)  # type: ignore[attr-defined]

    def finish(
        self,
        job_id: str,
        *,
        result_key: str,
        result_bytes: int,
        faces_swapped: int,
        kind: str,
        stats: dict[str, Any] | None = None,
    ) -> bool:
        return self._transition(
            job_id, (JobState.running,), state=JobState.succeeded.value, finished_at=time.time(),
            result_key=result_key, result_bytes=result_bytes, stored_bytes=JobRow.stored_bytes + result_bytes,
            faces_swapped=faces_swapped, media_kind=kind, stage="done", eta_s=0.0,
            frames_done=func.coalesce(JobRow.frames_total, JobRow.frames_done),
            stats_json=json.dumps(stats or {}, default=str),
        )  # fmt: skip

    def fail(self, job_id: str, *, error_type: str, error_code: str, error_message: str) -> bool:
        return self._transition(
            job_id, (JobState.running, JobState.queued), state=JobState.failed.value, finished_at=time.time(),
            error_type=error_type, error_code=error_code, error_message=error_message[:4000], stage="failed",
        )  # fmt: skip

    def cancel(self, job_id: str) -> bool:
        return self._transition(
            job_id, (JobState.queued, JobState.running), state=JobState.cancelled.value, finished_at=time.time(),
            stage="cancelled",
        )  # fmt: skip

    def requeue_unfinished(self) -> int:
        with self._session() as s, s.begin():
            res = s.execute(
                update(JobRow)
                .where(JobRow.state == JobState.running.value)
                .values(state=JobState.queued.value, stage="requeued", updated_at=time.time())
            )
            return int(res.rowcount or 0)  # type: ignore[attr-defined]

    def requeue_stale(self, updated_before: float, exclude: set[str] | frozenset[str] = frozenset()) -> int:
        """Running jobs whose executor stopped reporting before ``updated_before`` (its process died) → queued."""
        with self._session() as s, s.begin():
            res = s.execute(
                update(JobRow)
                .where(JobRow.state == JobState.running.value, JobRow.updated_at < updated_before,
                       JobRow.id.not_in(list(exclude)))
                .values(state=JobState.queued.value, stage="requeued", updated_at=time.time())
            )  # fmt: skip
            return int(res.rowcount or 0)  # type: ignore[attr-defined]

    def count_active(self, tenant: str) -> int:
        with self._session() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(JobRow)
                    .where(
                        JobRow.tenant == tenant,
                        JobRow.state.in_([JobState.queued.value, JobState.running.value]),
                    )
                )
                or 0
            )

    def stored_bytes(self, tenant: str) -> int:
        with self._session() as s:
            return int(
                s.scalar(
                    select(func.coalesce(func.sum(JobRow.stored_bytes), 0)).where(
                        JobRow.tenant == tenant, JobRow.expired.is_(False)
                    )
                )
                or 0
            )

    def finished_before(self, when: float) -> list[Job]:
        with self._session() as s:
            rows = s.scalars(
                select(JobRow).where(
                    JobRow.finished_at.is_not(None), JobRow.finished_at < when, JobRow.expired.is_(False)
                )
            ).all()
            return [Job.from_row(r) for r in rows]

    def mark_expired(self, job_id: str) -> None:
        with self._session() as s, s.begin():
            s.execute(update(JobRow).where(JobRow.id == job_id).values(expired=True, stored_bytes=0))

    def counts_by_state(self) -> dict[str, int]:
        with self._session() as s:
            rows = s.execute(select(JobRow.state, func.count()).group_by(JobRow.state)).all()
        counts = {st.value: 0 for st in JobState}
        counts.update({str(state): int(n) for state, n in rows})
        return counts

    def queue_stats(self) -> QueueStats:
        with self._session() as s:
            oldest = s.scalar(select(func.min(JobRow.created_at)).where(JobRow.state == JobState.queued.value))
            fps = s.scalar(select(func.sum(JobRow.fps)).where(JobRow.state == JobState.running.value))
        return QueueStats(oldest_queued_at=None if oldest is None else float(oldest), running_fps=float(fps or 0.0))

    # --- API keys ------------------------------------------------------------------------------------------
    def add_api_key(self, tenant: str, key_hash: str, prefix: str) -> ApiKeyRecord:
        row = ApiKeyRow(
            id=uuid.uuid4().hex, tenant=tenant, key_hash=key_hash, prefix=prefix, created_at=time.time(), revoked=False
        )
        with self._session() as s, s.begin():
            s.add(row)
        return ApiKeyRecord(id=row.id, tenant=tenant, prefix=prefix, revoked=False)

    def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        with self._session() as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == key_hash))
            if row is None:
                return None
            return ApiKeyRecord(id=row.id, tenant=row.tenant, prefix=row.prefix, revoked=bool(row.revoked))

    # --- batch items ---------------------------------------------------------------------------------------
    def list_items(self, job_ids: list[str]) -> dict[str, list[JobItem]]:
        """The items of each of ``job_ids`` in order (a job without items is absent)."""
        if not job_ids:
            return {}
        with self._session() as s:
            rows = s.scalars(select(ItemRow).where(ItemRow.job_id.in_(job_ids)).order_by(ItemRow.job_id, ItemRow.idx))
            out: dict[str, list[JobItem]] = {}
            for r in rows:
                out.setdefault(r.job_id, []).append(JobItem.from_row(r))
            return out

    def update_item(self, job_id: str, index: int, **values: Any) -> None:
        """Set an item's columns (``stats`` as a dict); only the worker running the job writes its items."""
        if "stats" in values:
            values["stats_json"] = json.dumps(values.pop("stats"), default=str)
        with self._session() as s, s.begin():
            s.execute(update(ItemRow).where(ItemRow.job_id == job_id, ItemRow.idx == index).values(**values))

    def finish_batch(self, job_id: str, *, faces_swapped: int, result_bytes: int, stats: dict[str, Any],
                     error: tuple[str, str] | None) -> bool:  # fmt: skip
        """End a running batch job: succeeded when any item did (``error`` None), else failed with ``error``
        ``(code, message)``. The results live on the items; the job keeps no result of its own."""
        common: dict[str, Any] = {"finished_at": time.time(), "stats_json": json.dumps(stats, default=str),
                                  "faces_swapped": faces_swapped, "eta_s": 0.0}  # fmt: skip
        if error is None:
            return self._transition(
                job_id, (JobState.running,), state=JobState.succeeded.value, stage="done", result_bytes=result_bytes,
                stored_bytes=JobRow.stored_bytes + result_bytes, **common,
            )  # fmt: skip
        return self._transition(
            job_id, (JobState.running,), state=JobState.failed.value, stage="failed", error_type="BatchFailed",
            error_code=error[0], error_message=error[1][:4000], stored_bytes=JobRow.stored_bytes + result_bytes,
            **common,
        )  # fmt: skip
