"""One uploaded clip: a multipart/form-data body streamed into a private folder, refused as soon as
it is too large.

The body is parsed as it arrives (python-multipart's streaming parser), never held whole in
memory; a declared Content-Length over the limit is refused before a byte of the body is read,
and a body that grows past it (chunked, or lying about its length) is refused at that byte.
The client's file name is only reported back: on disk the upload is ``upload`` plus the name's
suffix (checked against the video and image types dfd reads), in a folder made for the request
(mode 0700) that the caller deletes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from deepfake_cli.errors import DfdError
from deepfake_cli.data.video import IMAGE_SUFFIXES, VIDEO_SUFFIXES

FIELD = "file"  # the form field that carries the clip: curl -F file=@clip.mp4
ACCEPTED_SUFFIXES = frozenset(VIDEO_SUFFIXES) | frozenset(IMAGE_SUFFIXES)
MAX_NAME = 200  # characters of the client's file name kept (for the result's path)


class UploadError(DfdError):
    """An upload refused: ``status`` is the HTTP status to answer with, the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    path: Path  # where it was written (in the request's private folder)
    filename: str  # the client's name for it, cleaned: for the result only, never a path on this server
    size: int  # bytes


def client_filename(raw: str) -> str:
    """The last part of a client's file name (either slash), printable characters only, shortened."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:MAX_NAME].strip()
    return name if name not in ("", ".", "..") else "upload"


def accepted_types() -> str:
    return " ".join(sorted(ACCEPTED_SUFFIXES))


def check_declared_size(headers, limit: int) -> None:
    """A 413 when the request says its body is larger than ``limit`` (nothing read yet)."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise UploadError(413, f"the upload is {int(declared)} bytes; this server takes at most {limit} "
                               f"({limit / 1024 / 1024:.0f} MB)")


class _Receiver:
    """The parser's callbacks: the one ``file`` part written to disk, every other part ignored."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.fields: list[str] = []  # names of the parts seen
        self.current: IO | None = None
        self.upload: Upload | None = None

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value_part, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end}

    def part_begin(self) -> None:
        self.disposition = b""

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def header_value_part(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        self.fields.append(name)
        if name != FIELD:
            return
        if self.upload is not None:
            raise UploadError(400, f"send one clip per request: the form has two {FIELD!r} fields")
        if b"filename" not in options:
            raise UploadError(400, f"the {FIELD!r} field is not a file: send it as curl -F {FIELD}=@clip.mp4")
        filename = client_filename(options[b"filename"].decode("utf-8", "replace"))
        suffix = Path(filename).suffix.lower()
        if suffix not in ACCEPTED_SUFFIXES:
            raise UploadError(415, f"{filename!r} is not a video or image type dfd reads (by its name); "
                                   f"send one of: {accepted_types()}")
        path = self.folder / f"upload{suffix}"
        self.current = open(path, "wb")
        self.upload = Upload(path=path, filename=filename, size=0)

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.current is not None:
            self.current.write(data[start:end])
            self.upload.size += end - start

    def part_end(self) -> None:
        self.close()

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None


async def receive_upload(request, folder: Path, limit: int) -> Upload:
    """The request's clip (the ``file`` field of a multipart/form-data body), written into ``folder``.

    An UploadError for: a body that is not multipart/form-data (415), larger than ``limit`` bytes
    (413), without a ``file`` field or with an empty one (400), of a type dfd does not read (415).
    Client disconnects (starlette's ClientDisconnect) pass through: the caller deletes the folder.
    """
    mime, params = parse_options_header(request.headers.get("content-type", ""))
    if mime != b"multipart/form-data" or not params.get(b"boundary"):
        raise UploadError(415, f"send the clip as multipart/form-data in a {FIELD!r} field "
                               f"(curl -F {FIELD}=@clip.mp4 ...), not {mime.decode('latin-1') or 'no content type'}")
    check_declared_size(request.headers, limit)
    receiver = _Receiver(folder)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise UploadError(413, f"the upload is larger than this server takes ({limit} bytes, "
                                       f"{limit / 1024 / 1024:.0f} MB)")
            parser.write(chunk)
        parser.finalize()
    except (UploadError, ClientDisconnect):
        raise
    except Exception as exc:  # python-multipart's parse errors: a malformed body
        raise UploadError(400, f"the multipart body cannot be parsed: {exc}") from None
    finally:
        receiver.close()
    if receiver.upload is None:
        seen = ", ".join(repr(f) for f in receiver.fields) or "none"
        raise UploadError(400, f"no {FIELD!r} field in the form (fields: {seen}); send curl -F {FIELD}=@clip.mp4")
    if receiver.upload.size == 0:
        raise UploadError(400, f"{receiver.upload.filename!r} is empty")
    return receiver.upload
