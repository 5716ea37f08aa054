"""Service configuration: one checked, immutable object read from ``FACEWEAVE_*`` environment variables or a file.

The embedded default needs nothing else to run: SQLite under ``data_dir``, media under ``data_dir/media`` through
fsspec, an in-process executor. Point ``database_url`` at PostgreSQL and ``storage_url`` at ``s3://bucket/prefix``
to scale out without touching the API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Everything the service needs, validated once at startup (environment prefix ``FACEWEAVE_``)."""

    model_config = SettingsConfigDict(env_prefix="FACEWEAVE_", env_file=None, extra="ignore", frozen=True)

    # --- network -------------------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None

    # --- persistence ---------------------------------------------------------------------------------------
    data_dir: Path = Field(Path("./faceweave-data"), description="SQLite file, local media and job work folders")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/faceweave.db")
    storage_url: str | None = Field(None, description="fsspec URL for media; default file://<data_dir>/media")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments for the storage_url's fsspec filesystem (JSON), e.g. an S3 endpoint_url,"
        " key and secret for s3fs",
        repr=False,  # may hold credentials
    )
    url_import_prefixes: tuple[str, ...] = Field(
        (), description="storage URL prefixes a job may read its inputs from (empty: URL inputs disabled)"
    )
    private_networks: tuple[str, ...] = Field(
        (),
        description="private/loopback/link-local networks (CIDR) URL imports and webhooks may reach; by default"
        " only public addresses are",
    )
    url_connect_timeout_s: float = Field(5.0, gt=0, description="URL imports: connect timeout")
    url_read_timeout_s: float = Field(10.0, gt=0, description="URL imports: longest wait for the next bytes")
    url_total_timeout_s: float = Field(60.0, gt=0, description="URL imports: longest whole download")
    retention_s: float = Field(24 * 3600.0, gt=0, description="uploads and results are deleted this long after")
    sweep_interval_s: float = Field(60.0, gt=0)

    # --- execution -----------------------------------------------------------------------------------------
    workers: int = Field(0, ge=0, le=64, description="concurrent jobs; 0: one per GPU, or 1 on CPU")
    sync_concurrency: int = Field(2, ge=1, le=64, description="concurrent :sync swaps (sync_batch 1)")
    sync_batch: int = Field(16, ge=1, le=64, description=":sync requests of concurrent clients swapped as one batch on "
                            "one warm engine (their model forwards together); 1: each alone, sync_concurrency at once")
    sync_batch_window_s: float = Field(0.005, ge=0, le=1, description=":sync batch: longest wait for requests "
                                       "already received (still uploading or being checked) to join it")
    sync_png_compression: int = Field(1, ge=0, le=9, description=":sync answers a PNG target with a PNG at this zlib "
                                      "level (1: fastest; the pixels and markings are the same at every level)")
    warmup: bool = Field(True, description="load the models at startup; /readyz answers 503 until done")
    device: str = Field("auto", description="device for every job (a job cannot pick another)")
    executor: Literal["inprocess", "ray"] = Field("inprocess", description="'ray': GPU actors of a Ray cluster")
    ray_address: str | None = Field(None, description="Ray cluster address (e.g. ray://head:10001); None: local")
    ray_namespace: str = Field("faceweave", description="Ray namespace of the named GPU actors")
    ray_actors: int = Field(0, ge=0, le=4096, description="GPU actors; 0: one per GPU of the cluster")
    ray_gpus_per_actor: float = Field(1.0, gt=0, le=8, description="GPU share of an actor (fractional: measure)")
    ray_segment_frames: int = Field(300, ge=8, description="frames per video segment handed to one actor")
    ray_batch_window_s: float = Field(0.05, ge=0, le=5, description="image jobs arriving this close are batched")
    ray_lease_s: float = Field(30.0, gt=0, description="a running job silent this long is requeued by any API")
    segment_s: float = Field(
        4.0, gt=0, le=600, description="video jobs run as segments of about this many seconds: a crashed job resumes"
        " from its last finished segment (shorter: less work redone after a crash, a little more overhead)",
    )

    # --- security ------------------------------------------------------------------------------------------
    auth: Literal["required", "disabled"] = Field("required", description="'disabled' only on a trusted machine")
    jwt_secret: str | None = Field(None, description="HS256 shared secret")
    jwt_public_key_file: Path | None = Field(None, description="RS256 PEM public key")
    jwks_file: Path | None = Field(None, description="RS256 JWKS JSON file (keys picked by 'kid')")
    jwt_audience: str = "faceweave"
    jwt_tenant_claim: str = "tenant"
    rate_limit_per_minute: float = Field(120.0, gt=0, description="requests per API key/token per minute")
    rate_limit_burst: int = Field(30, ge=1)
    max_concurrent_jobs: int = Field(4, ge=1, description="queued + running jobs per tenant")
    max_storage_bytes: int = Field(2 * 1024**3, ge=1, description="stored uploads + results per tenant")
    auth_failures_per_minute: float = Field(
        10.0, gt=0, description="failed authentications per client address and credential prefix, then 429"
    )
    auth_failure_burst: int = Field(10, ge=1)
    request_body_timeout_s: float = Field(30.0, gt=0, description="longest wait for the next bytes of a body")

    # --- upload limits (checked while streaming, before any decoding) -------------------------------------
    max_upload_bytes: int = Field(200 * 1024**2, ge=1, description="per file")
    max_pixels: int = Field(40_000_000, ge=1, description="per image or video frame, from the header")
    max_duration_s: float = Field(600.0, gt=0)
    max_frames: int = Field(36_000, ge=1)
    max_sources: int = Field(4, ge=1)
    max_batch_targets: int = Field(20, ge=1, le=1000, description="targets of one batch job (one result each)")
    max_form_parts: int = Field(32, ge=2, description="multipart parts (fields and files) per request")
    max_decode_bytes: int = Field(
        768 * 1024**2,
        ge=1,
        description="memory one job may spend decoding an image (~27 bytes per pixel, from its header): ~29 MP",
    )
    sync_max_pixels: int = Field(4_000_000, ge=1, description=":sync accepts only images up to this size")

    # --- content policy -----------------------------------------------------------------------------------
    require_consent: bool = Field(True, description="jobs must carry consent=true (the submitter's attestation)")
    moderation: str | None = Field(None, description="'package.module:function' called on every job's inputs")
    webhook_secret: str | None = Field(None, description="HMAC-SHA256 key for webhook signatures")
    webhook_timeout_s: float = Field(5.0, gt=0)
    # provenance: the operator's, never a client's (SwapSettings fields of the same names are refused from clients)
    watermark: bool = Field(True, description="invisible watermark in every output's pixels")
    c2pa: bool = Field(True, description="signed C2PA Content Credentials on every output that can carry them")
    c2pa_cert: str | None = Field(None, description="PEM certificate chain (default: a local, untrusted one)")
    c2pa_key: str | None = Field(None, description="PEM private key of c2pa_cert")

    # --- live sessions (the /live page: the browser's camera over WebRTC) -------------------------------------
    live_sessions_per_key: int = Field(2, ge=0, description="concurrent live sessions per API key/token")
    live_sessions_per_gpu: int = Field(
        8, ge=0, description="concurrent live sessions on the shared live engine's device (the CPU counts as one)"
    )
    live_batch_window_ms: float | None = Field(
        None, ge=0, le=50, description="wait this long to batch concurrent sessions' frames (default: 2 on a GPU, 0)"
    )

    # --- observability -------------------------------------------------------------------------------------
    log_level: str = "INFO"
    json_logs: bool = True

    @model_validator(mode="after")
    def _check(self) -> ServiceSettings:
        if self.executor == "ray" and self.resolved_database_url.startswith("sqlite") and self.ray_address:
            raise ValueError("the Ray executor on a cluster needs a shared database (FACEWEAVE_DATABASE_URL)")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("set both ssl_certfile and ssl_keyfile (FACEWEAVE_SSL_CERTFILE/_KEYFILE), or neither")
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'faceweave.db').resolve()}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or f"file://{(self.data_dir / 'media').resolve()}"

    @property
    def work_dir(self) -> Path:
        """Local per-job scratch folders (kept across restarts so that video jobs resume)."""
        return (self.data_dir / "work").resolve()
