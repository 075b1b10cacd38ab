"""The dashboard's stylesheet (a route rather than a mount, so routers stay the only extension point)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from dashboard.templating import HERE

router = APIRouter()


@router.get("/assets/esafety.css", include_in_schema=False)
def stylesheet() -> FileResponse:
    return FileResponse(HERE / "static" / "esafety.css", media_type="text/css",
                        headers={"Cache-Control": "max-age=3600"})
