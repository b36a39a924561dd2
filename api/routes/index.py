"""/api/v1/: what the API is and where to go next, so the URL `boxtasks run` prints answers.

Public: it names only what the OpenAPI document (public too) already names, and reads no data.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

router = APIRouter(tags=["index"])


class IndexOut(BaseModel):
    name: str
    version: str
    docs: str = Field(description="the interactive docs (Swagger UI)")
    openapi: str
    metrics: str = Field(description="Prometheus text")
    auth: str = Field(description="how to call the other routes")
    links: dict[str, str] = Field(description="every GET route that takes no path parameter, by name")


@router.get("/", response_model=IndexOut)
def index(request: Request) -> IndexOut:
    """Where everything is; no token needed."""
    app = request.app
    prefix = app.openapi_url.rsplit("/", 1)[0]  # /api/v1
    # From the OpenAPI document (made once, then cached by FastAPI): the index names what it names.
    links = {
        path.removeprefix(prefix + "/"): path
        for path, methods in app.openapi()["paths"].items()
        if "get" in methods and "{" not in path and path.startswith(prefix + "/") and path != prefix + "/"
    }
    return IndexOut(
        name=app.title,
        version=app.version,
        docs=app.docs_url,
        openapi=app.openapi_url,
        metrics="/metrics",
        auth="every other route under this one needs 'Authorization: Bearer <token>' "
        "(`boxtasks token create --name NAME --scope read|write|admin`)",
        links=dict(sorted(links.items())),
    )
