"""``GET /runbooks``: docs/runbooks.md as a page, so alerts' ``runbook_url``s are absolute links."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Final

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from kpi.api.errors import not_found

#: The runbooks in the source tree (the container image copies docs/ beside kpi/).
RUNBOOKS: Final = Path(__file__).resolve().parents[3] / "docs" / "runbooks.md"
_H2: Final = re.compile(r"<h2>(\w+)</h2>")

router = APIRouter(tags=["docs"])


@functools.cache
def render(path: Path = RUNBOOKS) -> str:
    """The runbooks as HTML, each alert section with the anchor alerts link to (lower case)."""
    from markdown_it import MarkdownIt  # noqa: PLC0415  (on the first page asked, not at start-up)

    body = MarkdownIt("commonmark").enable("table").render(path.read_text(encoding="utf-8"))
    body = _H2.sub(lambda m: f'<h2 id="{m.group(1).lower()}">{m.group(1)}</h2>', body)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>postal-kpi runbooks</title>"
        "</head><body style='font-family:sans-serif;max-width:50em;margin:2em auto'>"
        f"{body}</body></html>"
    )


@router.get("/runbooks", include_in_schema=False)
async def runbooks() -> HTMLResponse:
    """The runbook of every alert; one anchor per alert (``#postalfacilitybackloghigh``)."""
    if not RUNBOOKS.exists():
        raise not_found(f"runbooks not installed here ({RUNBOOKS})")
    return HTMLResponse(render())
