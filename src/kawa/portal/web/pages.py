"""The web UI: server-rendered pages (Jinja) with light JavaScript for the live parts (server-sent events).

Pages read through the same sources as the JSON API. Actions are HTML forms that post here with the
session's CSRF token and redirect back (post/redirect/get), so they work without JavaScript.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from kawa.errors import InvalidCredentials, KawaError, PermissionDenied
from kawa.portal.api.deadletters import list_records as dead_letter_records
from kawa.portal.api.deadletters import visible_topics as visible_dead_letters
from kawa.portal.api.functions import function_out, visible_functions, visible_routes
from kawa.portal.api.jobs import job_out, may_on_job, visible_jobs
from kawa.portal.api.topics import consumers_of, topic_out, viewable_topics
from kawa.portal.apps import AppNotRunning, installed_apps
from kawa.portal.auth import Principal, audit_notes, client_address, get_portal, may, may_in, page_user
from kawa.portal.board_view import app_board
from kawa.portal.login import LoginThrottled, throttled_login
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal
from kawa.portal.security import LOGIN_CSRF_COOKIE, SESSION_COOKIE, LoginCsrf, cookie_secure, set_session_cookie
from kawa.portal.sources.deadletters import DeadLettersSource
from kawa.portal.views import overview

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.filters["when"] = lambda t: time.strftime("%H:%M:%S", time.localtime(t)) if t else "—"
templates.env.filters["urlpart"] = lambda s: quote(str(s), safe="")


def _cell(value: Any, format: str = "") -> str:
    """A table cell as the board's JavaScript writes it (see ``cell`` in static/portal.js)."""
    if value is None:
        return "\u2013"  # an en dash, as the page's script writes it
    if format == "time" and isinstance(value, int | float):
        return time.strftime("%H:%M:%S", time.localtime(value))
    if format == "percent" and isinstance(value, int | float):
        return f"{value * 100:.1f}%"
    if format == "ms" and isinstance(value, int | float):
        return f"{value:.0f} ms"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


templates.env.filters["cell"] = _cell

NAV = [
    ("/", "Overview", Action.VIEW),
    ("/functions", "Functions", Action.VIEW),
    ("/topics", "Topics", Action.VIEW),
    ("/models", "Models", Action.VIEW),
    ("/jobs", "Jobs", Action.VIEW),
    ("/monitoring", "Monitoring", Action.VIEW),
    ("/experiments", "Experiments", Action.VIEW),
    ("/loop", "Loop", Action.VIEW),
    ("/projects", "Projects", Action.VIEW),
    ("/deadletters", "Dead letters", Action.DEADLETTERS_READ),  # the action its page requires
    ("/audit", "Audit", Action.AUDIT_READ),
    ("/account", "Account", Action.VIEW),
]


PROJECT_SCOPED_PAGES = frozenset({"/deadletters"})  # pages whose action is checked in the project of what they show


def render(
    request: Request, name: str, principal: Principal | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    portal: Portal | None = getattr(request.app.state, "portal", None)

    def shown(href: str, action: Action) -> bool:
        if principal is None:
            return False
        if principal.can(action):
            return True
        # Dead letters are scoped by project: a member who may read a project's sees the page's link too.
        return href in PROJECT_SCOPED_PAGES and portal is not None and portal.projects.allows_somewhere(
            principal.user, action)  # fmt: skip

    nav = [(href, label) for href, label, action in NAV if shown(href, action)]
    if principal is not None and nav:  # the boards of the installed apps, after the overview
        apps = installed_apps(portal.platform) if portal is not None else []
        nav[1:1] = [(f"/apps/{quote(a.name)}", a.board.title or a.name) for a in apps if a.board is not None]
    context.update(
        request=request,
        principal=principal,
        nav=nav,
        Action=Action,
        path=request.url.path,
        flash=request.query_params.get("flash"),
        flash_error=request.query_params.get("error"),
    )
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def error_page(request: Request, message: str, status_code: int) -> HTMLResponse:
    principal = getattr(request.state, "principal", None)
    return render(request, "error.html", principal, status_code=status_code, message=message)


def back(path: str, *, flash: str | None = None, error: str | None = None) -> RedirectResponse:
    query = f"flash={quote(flash)}" if flash else f"error={quote(error or '')}"
    return RedirectResponse(f"{path}?{query}", status_code=303)


def _safe_next(target: str | None) -> str:
    # Only paths on this site: not //host, /\\host (browsers read it as //host) or a scheme.
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    return "/" if ":" in target.split("?")[0] else target


# --- login -----------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_form(
    request: Request, next: str = "/", portal: Portal = Depends(get_portal), error: str | None = None
) -> HTMLResponse:
    cookie, token = LoginCsrf(portal.secret).issue()
    response = render(
        request,
        "login.html",
        None,
        next=_safe_next(next),
        csrf_token=token,
        error=error or request.query_params.get("error"),
        sso=portal.sso is not None,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        cookie,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=cookie_secure(request, portal.config),
        path="/login",
    )
    return response


@router.post("/login")
def login(
    request: Request,
    username: str = Form(..., max_length=64),
    password: str = Form(..., max_length=1000),
    csrf_token: str = Form(""),
    next: str = Form("/"),
    portal: Portal = Depends(get_portal),
) -> Response:
    notes = audit_notes(request)
    notes.user, notes.action = username, "login"  # the record names who logged in (or tried to)
    try:
        LoginCsrf(portal.secret).check(request.cookies.get(LOGIN_CSRF_COOKIE), csrf_token)
        user = throttled_login(portal, username, password, client_address(request))
    except LoginThrottled as exc:
        # Answered here (not by a redirect that a browser would follow at once): 429 with Retry-After.
        page = login_form(request, next, portal, str(exc))
        page.status_code = 429
        page.headers["Retry-After"] = exc.retry_after
        return page
    except InvalidCredentials as exc:
        return RedirectResponse(f"/login?next={quote(_safe_next(next))}&error={quote(str(exc))}", status_code=303)
    secret, _session = portal.users.create_session(user, portal.config.portal.session_ttl_s)
    target = _safe_next(next)
    if target == "/" and (project := portal.projects.landing(user)) is not None:
        target = f"/projects/{quote(project)}"  # a project member lands on their project, ready to use
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, request, portal.config, secret)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(
    request: Request, principal: Principal = Depends(page_user(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        portal.users.end_session(cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- pages -----------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def overview_page(
    request: Request, principal: Principal = Depends(page_user()), portal: Portal = Depends(get_portal)
) -> HTMLResponse:
    graph = overview(portal, principal)
    return render(request, "overview.html", principal, graph=graph, capabilities=portal.capabilities())


@router.get("/apps/{app}", response_class=HTMLResponse)
def app_page(
    app: str, request: Request, principal: Principal = Depends(page_user()), portal: Portal = Depends(get_portal)
) -> HTMLResponse:
    """The board of an installed app, its panels drawn by kind (and updated live over /api/apps/{app}/stream)."""
    try:
        built = app_board(portal, principal, app)
    except AppNotRunning as exc:
        return error_page(request, str(exc), 404)
    return render(request, "app_board.html", principal, board=built)


@router.get("/functions", response_class=HTMLResponse)
def functions_page(
    request: Request, principal: Principal = Depends(page_user()), portal: Portal = Depends(get_portal)
) -> HTMLResponse:
    ok, reason = portal.functions.available()
    items = [function_out(portal, v) for v in visible_functions(principal, portal)] if ok else []
    ok_routes, routes_reason = portal.routes.available()
    routes = visible_routes(principal, portal) if ok_routes else []
    return render(
        request, "functions.html", principal, functions=items, reason=reason, routes=routes, routes_reason=routes_reason
    )


@router.get("/topics", response_class=HTMLResponse)
def topics_page(
    request: Request, principal: Principal = Depends(page_user()), portal: Portal = Depends(get_portal)
) -> HTMLResponse:
    consumers = consumers_of(portal)
    topics = [topic_out(portal, info, consumers) for info in viewable_topics(portal, principal)]
    ok, reason = portal.store.available()
    buckets = []
    if ok:
        names = portal.projects.viewable(principal.user, "bucket", [b.name for b in portal.store.buckets()])
        for name in names:
            buckets.append(
                {
                    "name": name,
                    "phi_free": portal.store.phi.phi_free(name),
                    "notifications": portal.store.notifications(name),
                }
            )
    return render(request, "topics.html", principal, topics=topics, buckets=buckets, store_reason=reason)


@router.get("/models", response_class=HTMLResponse)
def models_page(
    request: Request, principal: Principal = Depends(page_user()), portal: Portal = Depends(get_portal)
) -> HTMLResponse:
    ok, reason = portal.models.available()
    models = []
    if ok:
        listed = portal.models.models()
        keep = set(portal.projects.viewable(principal.user, "model", [m.name for m in listed]))
        for model in (m for m in listed if m.name in keep):
            models.append({"model": model, "versions": portal.models.versions(model.name)})
    return render(request, "models.html", principal, models=models, reason=reason, csrf=principal.csrf)


@router.post("/models/{name}/promote")
def promote_form(
    name: str,
    version: int = Form(..., ge=1),
    alias: str = Form("champion", max_length=64),
    principal: Principal = Depends(page_user()),
    portal: Portal = Depends(get_portal),
) -> Response:
    may(principal, portal, "model", name, Action.MODELS_PROMOTE)
    try:
        move = portal.models.promote(name, version, alias)
    except KawaError as exc:
        return back("/models", error=str(exc))
    return back(
        "/models",
        flash=f"{move.model}@{move.alias} now points to version {move.version} (was {move.previous or 'unset'})",
    )


@router.post("/models/{name}/rollback")
def rollback_form(
    name: str,
    alias: str = Form("champion", max_length=64),
    principal: Principal = Depends(page_user()),
    portal: Portal = Depends(get_portal),
) -> Response:
    may(principal, portal, "model", name, Action.MODELS_PROMOTE)
    try:
        move = portal.models.rollback(name, alias)
    except KawaError as exc:
        return back("/models", error=str(exc))
    return back("/models", flash=f"{move.model}@{move.alias} rolled back to version {move.version}")


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request, principal: Principal = Depends(page_user()), portal: Portal = Depends(get_portal)
) -> HTMLResponse:
    ok, reason = portal.jobs.available()
    jobs, inventory, logs, selected = [], None, None, request.query_params.get("job")
    if ok:
        jobs = [job_out(j) for j in visible_jobs(portal, principal, 100)]
        inventory = portal.jobs.inventory()
        if selected:
            try:
                job = portal.jobs.job(selected)
                may_on_job(principal, portal, job, Action.VIEW)
                logs = portal.jobs.log_tail(job.id)
            except KawaError as exc:
                logs = str(exc)
    return render(
        request,
        "jobs.html",
        principal,
        jobs=jobs,
        inventory=inventory,
        reason=reason,
        logs=logs,
        selected=selected,
        scheduler_here=portal.jobs.running_here() if ok else False,
    )


@router.post("/jobs")
def submit_form(
    entrypoint: str = Form(..., min_length=1, max_length=1000),
    cpu: float = Form(1.0, gt=0),
    memory: str = Form("", max_length=20),
    gpu: int = Form(0, ge=0),
    project: str = Form("default", max_length=63),
    params: str = Form("", max_length=4000),
    principal: Principal = Depends(page_user()),
    portal: Portal = Depends(get_portal),
) -> Response:
    name = project or "default"
    may_in(principal, portal, portal.projects.registered(name), Action.JOBS_SUBMIT, f"project {name!r}")
    try:
        from kawa.ml.jobs import parse_params

        spec = portal.jobs.build_spec(
            entrypoint=entrypoint,
            cpu=cpu,
            mem=memory or None,
            gpu=gpu,
            params=parse_params(params.split()),
            project=project or "default",
        )
        job = portal.jobs.submit(spec)
    except (KawaError, ImportError) as exc:
        return back("/jobs", error=str(exc))
    return RedirectResponse(f"/jobs?job={job.id}&flash={quote('submitted job ' + job.id)}", status_code=303)


@router.post("/jobs/{job_id}/cancel")
def cancel_form(
    job_id: str, principal: Principal = Depends(page_user()), portal: Portal = Depends(get_portal)
) -> Response:
    try:
        may_on_job(principal, portal, portal.jobs.job(job_id), Action.JOBS_CANCEL)
    except PermissionDenied:
        raise
    except KawaError as exc:
        return back("/jobs", error=str(exc))
    try:
        job = portal.jobs.cancel(job_id)
    except KawaError as exc:
        return back("/jobs", error=str(exc))
    return back("/jobs", flash=f"job {job.id}: {job.state}")


@router.get("/deadletters", response_class=HTMLResponse)
def deadletters_page(
    request: Request,
    principal: Principal = Depends(page_user(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> HTMLResponse:
    topics = visible_dead_letters(principal, portal)
    selected = request.query_params.get("topic") or (topics[0].topic if topics else None)
    if selected:  # the API's route checks this in its dependency; called directly here, it is checked here
        may(principal, portal, "topic", selected, Action.DEADLETTERS_READ)
    records = dead_letter_records(selected, 50, principal, portal) if selected else []
    return render(request, "deadletters.html", principal, topics=topics, selected=selected, records=records)


@router.post("/deadletters/{topic}/redrive")
def redrive_form(
    topic: str,
    partition: int = Form(..., ge=0),
    offset: int = Form(..., ge=0),
    principal: Principal = Depends(page_user(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> Response:
    path = f"/deadletters?topic={quote(topic)}"
    may(principal, portal, "topic", topic, Action.DEADLETTERS_REDRIVE)
    try:
        meta = DeadLettersSource(portal).redrive(topic, partition, offset)
    except KawaError as exc:
        return RedirectResponse(f"{path}&error={quote(str(exc))}", status_code=303)
    return RedirectResponse(
        f"{path}&flash={quote(f're-driven to {meta.topic}[{meta.partition}]@{meta.offset}')}", status_code=303
    )


@router.get("/account", response_class=HTMLResponse)
def account_page(
    request: Request, principal: Principal = Depends(page_user()), portal: Portal = Depends(get_portal)
) -> HTMLResponse:
    return _account(request, principal, portal, None)


def _account(request: Request, principal: Principal, portal: Portal, new_token: str | None) -> HTMLResponse:
    from kawa.portal.permissions import PERMISSIONS, Role

    return render(
        request,
        "account.html",
        principal,
        tokens=portal.users.tokens(principal.user.name),
        roles=list(Role),
        permissions=PERMISSIONS,
        actions=list(Action),
        new_token=new_token,
    )


@router.post("/account/tokens", response_class=HTMLResponse)
def token_form(
    request: Request,
    label: str = Form("browser", max_length=100),
    principal: Principal = Depends(page_user(Action.TOKENS_OWN)),
    portal: Portal = Depends(get_portal),
) -> HTMLResponse:
    """Create a token and show it once, in this response (never in a URL or a redirect)."""
    _info, secret = portal.users.create_token(principal.user.name, label or "browser")
    response = _account(request, principal, portal, secret)
    response.headers["Cache-Control"] = "no-store"
    return response
