"""A moderation hook loaded by import path in the policy test (``serve_policy_hooks:reject_videos``)."""

from __future__ import annotations

from faceweave.serve.policy import ModerationRequest, ModerationVerdict


def reject_videos(request: ModerationRequest) -> ModerationVerdict | None:
    if request.target_kind == "video":
        return ModerationVerdict(allowed=False, reason="videos are not allowed for this tenant")
    return None
