"""Buckets and objects. Objects of a bucket that is not declared PHI-free (their keys, metadata and content)
are served only to roles with ``phi.read``; thumbnails follow the same rule."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from kawa.errors import KawaError
from kawa.portal.api.common import ERRORS, Section, not_configured
from kawa.portal.auth import Principal, get_portal, may, may_read_bucket, require
from kawa.portal.content import INLINE_RASTER, MAX_REENCODE_BYTES, Served, object_headers, reencode_raster
from kawa.portal.permissions import Action
from kawa.portal.runtime import Portal

router = APIRouter(tags=["buckets"], responses=ERRORS)

BUCKET = Annotated[str, Path(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")]
KEY = Annotated[str, Path(min_length=1, max_length=1024)]


class NotificationOut(BaseModel):
    topic: str
    events: list[str]
    prefix: str | None = None
    suffix: str | None = None
    regex: str | None = None


class BucketOut(BaseModel):
    name: str
    phi_free: bool = Field(description="objects carry no PHI: every role may view them")
    notifications: list[NotificationOut] = []


class BucketIn(BaseModel):
    name: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")


class ObjectOut(BaseModel):
    key: str
    size: int
    etag: str
    content_type: str | None = None
    last_modified: float | None = None
    metadata: dict[str, str] = {}


class ObjectPageOut(BaseModel):
    bucket: str
    objects: list[ObjectOut]
    next_start_after: str | None = Field(None, description="pass as start_after for the next page")


def _object_out(info: Any) -> ObjectOut:
    return ObjectOut(
        key=info.key,
        size=info.size,
        etag=info.etag,
        content_type=info.content_type,
        last_modified=info.last_modified.timestamp() if info.last_modified else None,
        metadata=dict(info.metadata),
    )


def _bucket_out(portal: Portal, name: str) -> BucketOut:
    rules = portal.store.notifications(name)
    return BucketOut(
        name=name,
        phi_free=portal.store.phi.phi_free(name),
        notifications=[
            NotificationOut(topic=r.topic, events=list(r.events), prefix=r.prefix, suffix=r.suffix, regex=r.regex)
            for r in rules
        ],
    )


@router.get("/api/buckets", response_model=Section[BucketOut])
def list_buckets(
    principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> dict[str, Any]:
    """Every bucket you may view (another project's are left out)."""
    ok, reason = portal.store.available()
    if not ok:
        return not_configured(reason)
    names = portal.projects.viewable(principal.user, "bucket", [b.name for b in portal.store.buckets()])
    return {"items": [_bucket_out(portal, name) for name in names]}


@router.post("/api/buckets", response_model=BucketOut, status_code=201)
def create_bucket(
    body: BucketIn, principal: Principal = Depends(require(Action.VIEW)), portal: Portal = Depends(get_portal)
) -> BucketOut:
    """Create a bucket (``buckets.write`` in the project its name's prefix names, else globally)."""
    may(principal, portal, "bucket", body.name, Action.BUCKETS_WRITE)
    portal.store.store.create_bucket(body.name)
    return _bucket_out(portal, body.name)


@router.get("/api/buckets/{bucket}/objects", response_model=ObjectPageOut)
def list_objects(
    bucket: BUCKET,
    prefix: Annotated[str, Query(max_length=1024)] = "",
    start_after: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> ObjectPageOut:
    may_read_bucket(principal, portal, bucket)
    page = portal.store.store.list_objects(bucket, prefix=prefix, start_after=start_after or None, max_keys=limit)
    objects = [_object_out(info) for info in page.objects]
    more = page.continuation_token is not None and objects
    return ObjectPageOut(bucket=bucket, objects=objects, next_start_after=objects[-1].key if more else None)


def _stream(reader: Any) -> Iterator[bytes]:
    with reader:
        yield from reader.iter_chunks(256 * 1024)


@router.get(
    "/api/buckets/{bucket}/objects/{key:path}",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"application/octet-stream": {}, "image/png": {}, "image/jpeg": {}},
            "description": "the object's content: a PNG or JPEG the portal re-encoded, inline; anything else "
            "as an application/octet-stream attachment (see docs/portal.md, Security)",
        }
    },
)
def get_object(
    bucket: BUCKET,
    key: KEY,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> Response:
    may_read_bucket(principal, portal, bucket)
    reader = portal.store.store.get(bucket, key)
    info = reader.info
    raster = (info.content_type or "").split(";")[0].strip().lower() in INLINE_RASTER
    if raster and info.size <= MAX_REENCODE_BYTES:
        with reader:
            data = reader.read()
        served = reencode_raster(data, info.content_type)
        if served is not None and served.body is not None:
            headers = object_headers(key, served) | {"ETag": f'W/"{info.etag}"'}
            return Response(served.body, media_type=served.media_type, headers=headers)
        attachment = Served(None, "application/octet-stream", inline=False)
        headers = object_headers(key, attachment) | {"ETag": f'"{info.etag}"'}
        return Response(data, media_type=attachment.media_type, headers=headers)
    attachment = Served(None, "application/octet-stream", inline=False)
    headers = object_headers(key, attachment) | {"ETag": f'"{info.etag}"', "Content-Length": str(info.size)}
    return StreamingResponse(_stream(reader), media_type=attachment.media_type, headers=headers)


@router.put("/api/buckets/{bucket}/objects/{key:path}", response_model=ObjectOut, status_code=201)
async def put_object(
    bucket: BUCKET,
    key: KEY,
    request: Request,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> ObjectOut:
    """Upload the request body as the object (it notifies like any other put); ``buckets.write`` in the
    bucket's project. Spooled to a temporary file beyond 8 MiB, never held whole in memory."""
    import tempfile

    may(principal, portal, "bucket", bucket, Action.BUCKETS_WRITE)
    content_type = request.headers.get("content-type") or None
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as spool:
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
        info = await run_in_threadpool(portal.store.store.put, bucket, key, spool, content_type=content_type)
    return _object_out(info)


@router.delete("/api/buckets/{bucket}/objects/{key:path}", status_code=204)
def delete_object(
    bucket: BUCKET,
    key: KEY,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> None:
    may(principal, portal, "bucket", bucket, Action.BUCKETS_WRITE)
    portal.store.store.delete(bucket, key)


@router.get(
    "/api/thumbnails/{bucket}/{key:path}",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "a PNG thumbnail"},
        415: {"description": "the object is not an image"},
    },
)
def thumbnail(
    bucket: BUCKET,
    key: KEY,
    size: Annotated[int, Query(ge=16, le=512)] = 160,
    principal: Principal = Depends(require(Action.VIEW)),
    portal: Portal = Depends(get_portal),
) -> Response:
    may_read_bucket(principal, portal, bucket)
    try:
        data, media_type = portal.store.thumbnail(bucket, key, size)
    except KawaError as exc:
        if type(exc) is not KawaError:  # not found, unavailable, ...: the usual mapping
            raise
        return Response(str(exc), status_code=415, media_type="text/plain")
    return Response(data, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})
