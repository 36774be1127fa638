"""An uploaded photo from an HTTP request: the body read up to a limit (413 past it), and the image taken
from a multipart form parsed in memory (never spooled to disk) or from a raw image body."""

from __future__ import annotations

from fastapi import HTTPException, Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import File as MultipartFile
from python_multipart.multipart import FormParser, parse_options_header

MIB = 1024 * 1024


def size_text(n: int) -> str:
    """`n` bytes for people: MiB from one MiB up, else KiB."""
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.0f} KiB"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it grows past `limit` bytes."""
    too_big = HTTPException(413, f"upload too large: the limit is {size_text(limit)}; send a smaller photo")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def image_from_body(body: bytes, content_type: str, limit: int) -> bytes:
    """The uploaded image bytes: the first file of a multipart form (parsed in memory), or a raw image body."""
    kind = content_type.split(";")[0].strip().lower()
    if kind.startswith("image/") or kind == "application/octet-stream":
        return body
    if kind != "multipart/form-data":
        raise HTTPException(
            422, f"unsupported content type {kind or '(none)'!r}: send the photo as multipart/form-data "
            "field 'file' (curl -F file=@photo.jpg) or as a raw image/* body",
        )
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise HTTPException(400, "malformed multipart upload: the Content-Type has no boundary")
    files: list[MultipartFile] = []
    config = {"MAX_MEMORY_FILE_SIZE": limit + 1}  # the body is at most `limit` bytes: files stay in memory
    parser = FormParser("multipart/form-data", lambda field: None, files.append, boundary=boundary, config=config)
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise HTTPException(400, f"malformed multipart upload: {exc}") from exc
    if not files:
        raise HTTPException(422, "no file in the form: send the photo as multipart field 'file' (curl -F file=@photo.jpg)")
    upload = files[0]
    upload.file_object.seek(0)
    return upload.file_object.read()


UPLOAD_BODY = {  # POST /predict's request body in the OpenAPI schema
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"], "properties": {"file": {"type": "string", "format": "binary"}}}
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
