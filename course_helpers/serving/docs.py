"""``/docs`` that renders offline: Swagger UI's files come from the ``swagger-ui-bundle``
package and are served by the model server itself, not fetched from a CDN."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs-assets"


def install_docs(app: FastAPI) -> None:
    """Mount the Swagger UI files at ``/docs-assets`` and serve ``/docs`` from them.

    URLs in the page are relative, so the page also works behind a path prefix
    (jupyter-server-proxy's ``/proxy/PORT/docs``).
    """
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # an image built without it: say so rather than render blank
        @app.get("/docs", include_in_schema=False)
        async def no_docs():
            return HTMLResponse(
                "<p>Swagger UI's files are not installed here (pip install swagger-ui-bundle). "
                "The API description is at <a href='openapi.json'>openapi.json</a>.</p>")
        return

    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    rel = ASSETS.lstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url="openapi.json", title=f"{app.title} - docs",
                                   swagger_js_url=f"{rel}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{rel}/swagger-ui.css",
                                   swagger_favicon_url=f"{rel}/favicon-32x32.png")
