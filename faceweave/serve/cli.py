"""Command line of the service: ``faceweave serve`` and ``faceweave keys create --tenant T``.

The lead mounts these into the main CLI: ``serve_command`` as the ``serve`` command and ``keys_app`` as the
``keys`` group; ``serve_app`` bundles both (``python -m faceweave.serve``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:  # pydantic-settings loads with the service, not with every `faceweave` command (the CLI mounts this)
    from faceweave.serve.settings import ServiceSettings

serve_app = typer.Typer(help="The faceweave job service.", no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="API keys (stored hashed; printed once).", no_args_is_help=True)


def _settings(env_file: Path | None, **overrides: object) -> ServiceSettings:
    from faceweave.serve.settings import ServiceSettings

    values: dict[str, Any] = {k: v for k, v in overrides.items() if v is not None}
    if env_file is not None:
        values["_env_file"] = env_file
    return ServiceSettings(**values)


def serve_command(
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000)")] = None,
    ssl_certfile: Annotated[str | None, typer.Option("--ssl-certfile", help="TLS certificate (PEM)")] = None,
    ssl_keyfile: Annotated[str | None, typer.Option("--ssl-keyfile", help="TLS private key (PEM)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="SQLite, media and work folders")] = None,
    env_file: Annotated[Path | None, typer.Option(help="a .env file of FACEWEAVE_* settings")] = None,
    executor: Annotated[str | None, typer.Option(help="'inprocess' (default) or 'ray'")] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="Ray cluster address")] = None,
    database: Annotated[str | None, typer.Option(help="SQLAlchemy URL, e.g. postgresql+psycopg://…")] = None,
    storage: Annotated[str | None, typer.Option(help="media storage URL, e.g. s3://bucket/prefix")] = None,
) -> None:
    """Run the service: FastAPI + uvicorn, SQLite, local media, in-process workers. Settings: FACEWEAVE_*."""
    import uvicorn

    from faceweave.serve.app import create_app
    from faceweave.serve.logging import configure_logging

    settings = _settings(
        env_file, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, data_dir=data_dir,
        executor=executor, ray_address=ray_address, database_url=database, storage_url=storage,
    )
    configure_logging(settings.log_level, settings.json_logs)
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, ssl_certfile=settings.ssl_certfile,
        ssl_keyfile=settings.ssl_keyfile, access_log=False, log_config=None, timeout_graceful_shutdown=10,
    )  # fmt: skip


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="the tenant that owns the key's jobs")],
    data_dir: Annotated[Path | None, typer.Option(help="the service's data folder")] = None,
    env_file: Annotated[Path | None, typer.Option(help="a .env file of FACEWEAVE_* settings")] = None,
) -> None:
    """Create an API key for TENANT and print it once (only its hash is stored)."""
    from faceweave.serve.auth import create_api_key
    from faceweave.serve.store import SqlJobStore

    settings = _settings(env_file, data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = SqlJobStore(settings.resolved_database_url)
    try:
        key = create_api_key(store, tenant)
    finally:
        store.close()
    typer.echo(key)


serve_app.command("serve")(serve_command)
serve_app.add_typer(keys_app, name="keys")
