"""``faceweave verify FILE…``: is each file marked as faceweave's synthetic output? (mounted by ``faceweave.cli``)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from faceweave.errors import NotMarked


def verify_command(
    files: Annotated[list[Path], typer.Argument(help="images or videos to check")],
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list instead of a table")] = False,
) -> None:
    """Report metadata marking, C2PA manifest and invisible watermark per file. Exit 0 when every file is marked,
    70 (not_marked) when one is not."""
    from faceweave.provenance.verify import verify_file

    reports = [verify_file(f) for f in files]
    out = Console()
    if as_json:
        out.print_json(json.dumps([r.to_dict() for r in reports]))
    else:
        table = Table("file", "marked", "metadata", "C2PA", "signer", "watermark", "confidence", "payload")
        for r in reports:
            wm = r.watermark
            table.add_row(
                r.file, "yes" if r.marked else "[red]no[/red]", "synthetic" if r.metadata.synthetic else "-",
                r.c2pa.status, r.c2pa.signer or "-", "found" if wm.found else "not found", f"{wm.confidence:.4f}",
                f"job {wm.payload.job_hash:08x}, v{wm.payload.version}" if wm.payload else "-",
            )
        out.print(table)
    unmarked = [r.file for r in reports if not r.marked]
    if unmarked:
        raise NotMarked(f"not marked as faceweave output: {', '.join(unmarked)}",
                        hint="no metadata, C2PA manifest or watermark found")
