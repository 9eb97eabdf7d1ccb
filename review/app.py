"""The review page: a small server-rendered web app over the configured database and storage.

A reviewer signs in with a name (and the token, when one is set: always when the page is bound
off loopback), is handed images from the model version's review queue (claims: no two
reviewers get the same image), sees the photo, the cutout on a checkerboard, the mask outline
over the photo, the confidence and the decision, and marks it clean or flawed (keys 1/2; j/k
move through the images they hold and reviewed). Every write is a POST carrying the session's
CSRF token; the session cookie is SameSite=Strict. Database calls ride out a restart.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from starlette.middleware.sessions import SessionMiddleware

from jewelcut import reviews
from jewelcut.db import FLAWS, Image, ReviewItem, Segmentation, session_scope
from jewelcut.retry import with_database_retries
from jewelcut.settings import Settings
from review import images

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
CLAIM_BATCH = 5  # images a reviewer holds at a time (j moves through them)
GRID_BATCH = 12  # images the grid shows (and holds) at once
HISTORY = 20  # reviewed images k can go back to


class ReviewConfigError(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Access:
    token: str | None  # None: open to anyone who can reach the loopback address


def create_app(settings: Settings, host: str | None = None) -> FastAPI:
    """The app for `settings`, as bound to `host` (default: the review_host setting). Refuses
    to be bound off loopback without a token."""
    host = host or settings.review_host
    token = settings.resolved_review_token
    if token is None and not is_loopback(host):
        raise ReviewConfigError(
            f"the review page is bound to {host}, off loopback: set a token "
            "(JEWELCUT_REVIEW_TOKEN or JEWELCUT_REVIEW_TOKEN_FILE) or bind 127.0.0.1"
        )
    app = FastAPI(title="jewelcut review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        SessionMiddleware,
        secret_key=secrets.token_urlsafe(32),
        session_cookie="jewelcut_review",
        same_site="strict",
        max_age=12 * 3600,
    )
    app.state.settings = settings
    app.state.access = Access(token)
    _routes(app)
    return app


# --- sessions, auth and CSRF ---------------------------------------------------------------


def _csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return str(token)


def _check_csrf(request: Request, sent: str | None) -> None:
    expected = request.session.get("csrf")
    if not expected or not sent or not hmac.compare_digest(str(expected), sent):
        raise HTTPException(403, "CSRF token missing or wrong: reload the page")


def _bearer_ok(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    return header.startswith("Bearer ") and hmac.compare_digest(header[7:], token)


def _reviewer(request: Request) -> str | None:
    """The signed-in reviewer, or None when the request may not see the page."""
    access: Access = request.app.state.access
    reviewer = request.session.get("reviewer")
    if access.token is not None:
        authed = request.session.get("authed") or _bearer_ok(request, access.token)
        if not authed:
            return None
        reviewer = reviewer or request.headers.get("x-reviewer")
    return str(reviewer) if reviewer else None


def _require_reviewer(request: Request) -> str:
    reviewer = _reviewer(request)
    if reviewer is None:
        raise HTTPException(401, "sign in first (/login)")
    return reviewer


# --- routes ----------------------------------------------------------------------------------


def _routes(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    def _error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 401 and "text/html" in request.headers.get("accept", ""):
            return _login_page(request, status=401, message=str(error.detail))
        return Response(f"{error.status_code}: {error.detail}\n", error.status_code)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        return _login_page(request)

    @app.post("/login")
    def login(
        request: Request,
        name: Annotated[str, Form(max_length=128)],
        csrf_token: Annotated[str, Form()] = "",
        token: Annotated[str, Form()] = "",
    ) -> Response:
        _check_csrf(request, csrf_token)
        access: Access = request.app.state.access
        if access.token is not None and not hmac.compare_digest(token, access.token):
            return _login_page(request, status=401, message="wrong token")
        name = name.strip()
        if not name:
            return _login_page(request, status=422, message="give your name")
        request.session["reviewer"] = name
        request.session["authed"] = True
        return RedirectResponse("/review", status_code=303)

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/review", status_code=303)

    @app.get("/review", response_class=HTMLResponse)
    def review_page(
        request: Request,
        filters: Annotated[reviews.Filters, Depends(_page_filters)],
        model_version: str | None = None,
        image: str | None = None,
    ) -> Response:
        reviewer = _require_reviewer(request)
        settings: Settings = request.app.state.settings
        version = model_version or _default_version(settings)
        context = with_database_retries(
            lambda: _page_context(settings, version, reviewer, filters, image)
        )
        query = _filter_query(version, filters)
        context |= {
            "reviewer": reviewer,
            "csrf_token": _csrf_token(request),
            "filters": filters,
            "query": query,
            "flaws": FLAWS,
        }
        return TEMPLATES.TemplateResponse(request, "review.html", context)

    @app.post("/verdict")
    def verdict(
        request: Request,
        model_version: Annotated[str, Form()],
        image_id: Annotated[str, Form()],
        verdict: Annotated[str, Form()],
        csrf_token: Annotated[str, Form()] = "",
        flaw: Annotated[str, Form()] = "",
        query: Annotated[str, Form()] = "",
        view: Annotated[str, Form()] = "review",
    ) -> Response:
        reviewer = _require_reviewer(request)
        _check_csrf(request, csrf_token)
        settings: Settings = request.app.state.settings
        try:
            reviews.record_verdict(
                settings, model_version, image_id, reviewer, verdict, flaw or None
            )
        except reviews.UnknownImage as unknown:
            raise HTTPException(404, str(unknown)) from unknown
        except ValueError as invalid:
            raise HTTPException(422, str(invalid)) from invalid
        page = "/grid" if view == "grid" else "/review"
        return RedirectResponse(f"{page}?{query}", status_code=303)

    @app.get("/grid", response_class=HTMLResponse)
    def grid_page(
        request: Request,
        filters: Annotated[reviews.Filters, Depends(_page_filters)],
        model_version: str | None = None,
    ) -> Response:
        reviewer = _require_reviewer(request)
        settings: Settings = request.app.state.settings
        version = model_version or _default_version(settings)

        def gather() -> dict[str, Any]:
            held = reviews.claim(settings, version, reviewer, want=GRID_BATCH, filters=filters)
            rows = [_row(settings, version, image_id) for image_id in held]
            return {
                "model_version": version,
                "versions": _versions(settings),
                "progress": reviews.progress(settings, version, reviewer),
                "items": [row for row in rows if row is not None],
            }

        context = with_database_retries(gather)
        context |= {
            "reviewer": reviewer,
            "csrf_token": _csrf_token(request),
            "filters": filters,
            "query": _filter_query(version, filters),
            "flaws": FLAWS,
        }
        return TEMPLATES.TemplateResponse(request, "grid.html", context)

    @app.get("/image/{model_version}/{image_id}/{kind}")
    def image(request: Request, model_version: str, image_id: str, kind: str) -> Response:
        _require_reviewer(request)
        if kind not in images.KINDS:
            raise HTTPException(404, f"no such view {kind!r}")
        settings: Settings = request.app.state.settings
        source_uri = with_database_retries(lambda: _source_uri(settings, model_version, image_id))
        if source_uri is None:
            raise HTTPException(404, f"no decided image {image_id!r} under {model_version!r}")
        rendered = images.render(settings, model_version, image_id, source_uri, kind)
        if rendered is None:
            raise HTTPException(404, f"{kind} of {image_id!r} is not available")
        data, media_type = rendered
        return Response(data, media_type=media_type, headers={"Cache-Control": "private"})


def _login_page(request: Request, status: int = 200, message: str | None = None) -> Response:
    access: Access = request.app.state.access
    context = {
        "csrf_token": _csrf_token(request),
        "needs_token": access.token is not None,
        "message": message,
    }
    return TEMPLATES.TemplateResponse(request, "login.html", context, status_code=status)


def _page_filters(
    decision: str | None = None,
    min_confidence: float | None = None,
    max_confidence: float | None = None,
    day: date | None = None,
) -> reviews.Filters:
    """The filters a review page takes from its query string (the review and grid pages)."""
    return reviews.Filters(decision or None, min_confidence, max_confidence, day)


def _filter_query(version: str, filters: reviews.Filters) -> str:
    values: dict[str, Any] = {
        "model_version": version,
        "decision": filters.decision,
        "min_confidence": filters.min_confidence,
        "max_confidence": filters.max_confidence,
        "day": filters.day.isoformat() if filters.day else None,
    }
    return urlencode({key: value for key, value in values.items() if value is not None})


def _default_version(settings: Settings) -> str:
    if settings.model_version:
        return settings.model_version
    with session_scope(settings.resolved_database_url) as session:
        latest = session.scalars(
            select(Segmentation.model_version)
            .where(Segmentation.status == "done")
            .group_by(Segmentation.model_version)
            .order_by(func.max(Segmentation.finished_at).desc())
            .limit(1)
        ).first()
    if latest is None:
        raise HTTPException(404, "no decided images in the database yet")
    return latest


def _source_uri(settings: Settings, model_version: str, image_id: str) -> str | None:
    with session_scope(settings.resolved_database_url) as session:
        return session.scalars(
            select(Image.source_uri)
            .join(Segmentation, Segmentation.image_id == Image.id)
            .where(
                Segmentation.image_id == image_id,
                Segmentation.model_version == model_version,
                Segmentation.status == "done",
            )
        ).first()


def _page_context(
    settings: Settings,
    version: str,
    reviewer: str,
    filters: reviews.Filters,
    image: str | None,
) -> dict[str, Any]:
    held = reviews.claim(settings, version, reviewer, want=CLAIM_BATCH, filters=filters)
    done = reviews.reviewed_by(settings, version, reviewer, HISTORY)
    order = [*[i for i in done if i not in held], *held]
    current = image or (held[0] if held else None)  # asked for (a link, j/k), else next held
    if current is not None and current not in order:
        order.append(current)
    index = order.index(current) if current is not None else -1
    context: dict[str, Any] = {
        "model_version": version,
        "versions": _versions(settings),
        "progress": reviews.progress(settings, version, reviewer),
        "current": None,
        "previous": order[index - 1] if index > 0 else None,
        "next": order[index + 1] if 0 <= index < len(order) - 1 else None,
        "held": len(held),
    }
    if current is not None:
        row = _row(settings, version, current)
        if row is not None:
            context["current"] = row
            context["verdict"] = reviews.verdict_of(settings, version, current, reviewer)
    return context


def _versions(settings: Settings) -> list[str]:
    with session_scope(settings.resolved_database_url) as session:
        return list(
            session.scalars(
                select(Segmentation.model_version)
                .where(Segmentation.status == "done")
                .group_by(Segmentation.model_version)
                .order_by(Segmentation.model_version)
            )
        )


def _row(settings: Settings, version: str, image_id: str) -> dict[str, Any] | None:
    with session_scope(settings.resolved_database_url) as session:
        segmentation = session.get(Segmentation, (image_id, version))
        if segmentation is None or segmentation.status != "done":
            return None
        item = session.get(ReviewItem, (version, image_id))
        return {
            "stratum": item.stratum if item else None,
            "image_id": image_id,
            "decision": segmentation.decision,
            "reason": segmentation.reason,
            "confidence": segmentation.confidence,
            "mask_area": segmentation.mask_area,
            "gate": segmentation.gate_min_confidence,
            "finished_at": segmentation.finished_at,
        }
