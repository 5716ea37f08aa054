"""The models this server can run."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request

from faceweave.serve.deps import ServiceDep, authenticate
from faceweave.serve.schemas import ERRORS, ModelOut, ModelsOut

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelsOut, responses=ERRORS)
async def models(request: Request, svc: ServiceDep) -> ModelsOut:
    """Swappers, detectors and enhancers this server can run, and the registered weight files."""
    authenticate(request, svc)
    from faceweave.models.registry import all_specs

    specs = await anyio.to_thread.run_sync(all_specs)
    out = []
    for spec in specs:
        available = bool(spec.embedded or spec.package)
        out.append(ModelOut(name=spec.name, family=str(spec.family), licence=spec.licence,
                            embedded=spec.embedded, available=available))  # fmt: skip
    swappers = ["mesh"] + [m.name for m in out if m.family == "swapper"]
    detectors = ["blazeface"] + [m.name for m in out if m.family == "detector" and m.name != "blazeface"]
    enhancers = ["detail"] + [m.name for m in out if m.family == "enhancer"]
    return ModelsOut(swappers=swappers, detectors=detectors, enhancers=enhancers, models=out)
