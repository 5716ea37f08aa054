"""Content policy: a consent attestation required by default, and a pluggable moderation callable.

The moderation hook is configured by import path (``FACEWEAVE_MODERATION=package.module:function``). It is called
with a :class:`ModerationRequest` for every job before it is queued and returns None (accept) or a
:class:`ModerationVerdict`; a rejecting verdict answers 422 ``policy_rejected`` with its reason. Provenance is the
pipeline's: every output carries metadata marking it as synthetic (``settings.provenance_label`` adds a visible
label).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from faceweave.serve.errors import ConsentRequired, PolicyRejected

TRUE_VALUES = {"true", "1", "yes", "on"}


@dataclass(frozen=True)
class ModerationRequest:
    """What a moderation hook sees: the tenant, local paths of the sniffed inputs and their kinds."""

    tenant: str
    sources: list[Path]
    target: Path
    target_kind: str
    settings: dict[str, object]


@dataclass(frozen=True)
class ModerationVerdict:
    allowed: bool
    reason: str = ""


Moderator = Callable[[ModerationRequest], "ModerationVerdict | None"]


def load_moderator(import_path: str | None) -> Moderator | None:
    """Import ``package.module:function`` (checked once at startup; a wrong path is a startup error)."""
    if not import_path:
        return None
    module_name, sep, attr = import_path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"moderation must look like 'package.module:function', got {import_path!r}")
    fn = getattr(importlib.import_module(module_name), attr, None)
    if not callable(fn):
        raise ValueError(f"moderation hook {import_path!r} is not a callable")
    return fn  # type: ignore[no-any-return]


def check_consent(value: str | None, required: bool) -> bool:
    """The submitter's attestation that everyone depicted consented; required unless the operator turned it off."""
    given = value is not None and value.strip().lower() in TRUE_VALUES
    if required and not given:
        raise ConsentRequired(
            "consent is required: attest that every person depicted agreed to this use of their likeness",
            hint="send the form field consent=true",
        )
    return given


def moderate(moderator: Moderator | None, request: ModerationRequest) -> None:
    """Run the hook; raise :class:`PolicyRejected` with its reason when it rejects the job."""
    if moderator is None:
        return
    verdict = moderator(request)
    if verdict is not None and not verdict.allowed:
        raise PolicyRejected(f"rejected by the content policy: {verdict.reason or 'no reason given'}", hint=None)
