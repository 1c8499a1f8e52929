"""The projects page: each project the user may view, its quota drawn as bars of use against limit."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from kawa.errors import ProjectNotFound
from kawa.portal.auth import Principal, get_portal, page_user
from kawa.portal.runtime import Portal
from kawa.portal.web.pages import error_page, render

router = APIRouter(include_in_schema=False)


def bar_percent(use: float | None, limit: float | None) -> int | None:
    """How full a quota is, 0 to 100 (None when it has no limit or no measured use); a zero limit in use is full."""
    if use is None or limit is None:
        return None
    if limit <= 0:
        return 100 if use > 0 else 0
    return max(0, min(100, round(100 * use / limit)))


def amount(field: str, value: float | None) -> str:
    """A quota value for people: bytes in the largest unit that fits, memory in MiB, counts as counts; None is no
    limit."""
    if value is None:
        return "no limit"
    if field == "storage_bytes":
        from kawa.store.quota import size_text

        return size_text(value)
    if field == "memory_mb":
        return f"{value:,.0f} MiB"
    return f"{value:,.3g}"


@router.get("/projects", response_class=HTMLResponse)
def projects_page(
    request: Request, principal: Principal = Depends(page_user()), portal: Portal = Depends(get_portal)
) -> HTMLResponse:
    projects = portal.projects.visible(principal.user)
    return render(request, "projects.html", principal, projects=projects, bar_percent=bar_percent, amount=amount)


def shell_config(project: str, portal_url: str) -> str:
    """What a member pastes into a shell to work in ``project`` from the CLI."""
    return (
        f"export KAWA_PROJECT={project}        # or, once per Kawa home: kawa use {project}\n"
        f"kawa projects show {project}\n"
        f"kawa jobs submit mypkg.train:train --cpu 1      # runs in {project}, within its quota\n"
        f"# API: {portal_url}api/projects/{project} with a token from {portal_url}account"
    )


def notebook_config(project: str) -> str:
    """What a member pastes into a notebook to submit work in ``project``."""
    return (
        "from kawa.config import load_config\n"
        "from kawa.ml import jobs\n\n"
        "config = load_config()  # ./kawa.yaml or $KAWA_CONFIG\n"
        f'job = jobs.submit("mypkg.train:train", config=config, project="{project}", cpu=1)\n'
        "jobs.wait(job.id, config=config)"
    )


@router.get("/projects/{name}", response_class=HTMLResponse)
def project_page(
    name: str, request: Request, principal: Principal = Depends(page_user()), portal: Portal = Depends(get_portal)
) -> HTMLResponse:
    """One project: members, resources with their backend names, quota bars, and copy-paste configuration."""
    from kawa.projects.templates import get_template, resources

    try:
        view = portal.projects.one(principal.user, name)
    except ProjectNotFound as exc:
        return error_page(request, str(exc), 404)
    project = portal.projects.registry.get(name)
    found = resources(get_template(view.template), view.name)
    url = str(request.base_url)
    return render(request, "project.html", principal, p=view, members=sorted(project.members.items()),
                  resources=found, bar_percent=bar_percent, amount=amount,
                  shell=shell_config(view.name, url), notebook=notebook_config(view.name))  # fmt: skip
