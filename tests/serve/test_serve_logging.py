"""JSON logs carry request and job ids and never file names, client IPs or credentials."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import running_app, swap_form, wait_for_state

from faceweave.serve.executor import JobContext, JobOutcome
from faceweave.serve.logging import RedactingJsonFormatter

pytestmark = pytest.mark.anyio


def _copy(ctx: JobContext) -> JobOutcome:
    # Logging is not about faces: a copy keeps this test fast; the API tests run the real pipeline.
    shutil.copy(ctx.target, ctx.output)
    return JobOutcome(ctx.output, "image", 1, {})


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(RedactingJsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def test_logs_are_json_with_ids_and_without_secrets(tmp_path: Path, media_bytes: Any) -> None:
    capture = _Capture()
    logger = logging.getLogger("faceweave")
    old_level = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    try:
        async with running_app(tmp_path, job_function=_copy) as h:
            headers = h.headers()
            key = headers["Authorization"].split()[1]
            files, data = swap_form([("secret_holiday_alice.jpg", media_bytes("obama.jpg"))],
                                    ("bob_private_party.png", media_bytes("astronaut.png")))  # fmt: skip
            r = await h.client.post("/v1/swaps", files=files, data=data,
                                    headers={**headers, "X-Request-ID": "req42abc"})  # fmt: skip
            job = await wait_for_state(h.client, r.json()["id"], headers)
            assert job["state"] == "succeeded"
            await h.client.get("/v1/swaps", headers={"Authorization": "Bearer eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl"})
            # Code paths that might log user values: make one log a file name, an IP and a key on purpose.
            logging.getLogger("faceweave.serve").warning(
                "debug upload secret_holiday_alice.jpg from 127.0.0.1 token=%s", key
            )
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)
    records = [json.loads(line) for line in capture.lines]  # every line is one JSON object
    assert records
    text = "\n".join(capture.lines)
    for secret in ("secret_holiday_alice", "bob_private_party", "127.0.0.1", "50123", key, key[3:20], "eyJhbGciOi"):
        assert secret not in text, secret
    assert any(r["request_id"] == "req42abc" and r.get("route") == "/v1/swaps" for r in records)
    job_records = [r for r in records if r["job_id"] == job["id"]]
    assert any("job started" in r["message"] for r in job_records)
    assert any("job finished" in r["message"] for r in job_records)
