"""The file parts of a multipart/form-data body, parsed by python-multipart.

The same parser Starlette's ``Request.form()`` drives, fed the already size-checked body in
one call: the replica has the bytes in hand (it measured them against ``max_body_bytes``),
and a synchronous parse keeps the request checks callable without an event loop. Parts are
counted as they arrive, so a body with more files than a batch may hold is refused (413)
before the rest of it is parsed.
"""

from __future__ import annotations

from fastapi import HTTPException
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header


class _FileParts:
    """python-multipart callbacks collecting ``(filename, content)`` of each file part."""

    def __init__(self, max_files: int) -> None:
        self.max_files = max_files
        self.files: list[tuple[str, bytes]] = []
        self.ended = False
        self._header = [b"", b""]
        self._disposition = b""
        self._data = bytearray()
        self._filename: str | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._begin,
            "on_part_data": self._part_data,
            "on_part_end": self._end_part,
            "on_header_field": lambda data, start, end: self._add(0, data[start:end]),
            "on_header_value": lambda data, start, end: self._add(1, data[start:end]),
            "on_header_end": self._end_header,
            "on_headers_finished": self._headers_finished,
            "on_end": self._end,
        }

    def _add(self, index: int, chunk: bytes) -> None:
        self._header[index] += chunk

    def _begin(self) -> None:
        self._disposition, self._filename, self._data = b"", None, bytearray()

    def _end_header(self) -> None:
        name, value = self._header
        if name.strip().lower() == b"content-disposition":
            self._disposition = value
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        filename = options.get(b"filename")
        self._filename = filename.decode("utf-8", "replace") if filename else None
        if self._filename and len(self.files) >= self.max_files:
            raise HTTPException(
                413,
                f"over {self.max_files} inputs exceed the largest accepted batch "
                f"({self.max_files})",
            )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._filename:  # plain form fields are not inputs
            self._data += data[start:end]

    def _end_part(self) -> None:
        if self._filename:
            self.files.append((self._filename, bytes(self._data)))

    def _end(self) -> None:
        self.ended = True


def multipart_files(content_type: str, body: bytes, max_files: int) -> list[tuple[str, bytes]]:
    """``(filename, content)`` of every file part; 400 for a body that is not multipart."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "multipart/form-data without a boundary")
    parts = _FileParts(max_files)
    try:
        parser = MultipartParser(boundary, parts.callbacks())
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise HTTPException(400, f"malformed multipart body: {exc}") from None
    if not parts.ended:
        raise HTTPException(400, "malformed multipart body: it ends before its closing boundary")
    return parts.files
