"""The live view's control API over a run's `StreamControl`: list, add and remove streams while it runs.

Each call answers `(status, body)` for the handler to send as one JSON line; a bad request changes nothing.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from runtime.errors import UserError
from runtime.stream.stats import Control

MAX_BODY = 16 * 1024  # bytes of a request body: a source and a name
FIELDS = ("source", "name")

Answer = tuple[HTTPStatus, dict[str, Any]]


def error(status: HTTPStatus, message: str) -> Answer:
    return status, {"error": message}


def list_streams(control: Control) -> Answer:
    """`GET /streams`: `{"streams": [{"name", "source", "state"}, ...]}`."""
    return HTTPStatus.OK, {"streams": control.list()}


def add_stream(control: Control, body: bytes) -> Answer:
    """`POST /streams` with `{"source": ..., "name": ...}` (name optional): 202 once the control accepted it, 409
    for the name of a stream that has not ended, 400 for anything else wrong (the control's message)."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deep
        return error(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {exc}")
    if not isinstance(request, dict):
        return error(HTTPStatus.BAD_REQUEST, 'the body must be a JSON object: {"source": ..., "name": ...}')
    if unknown := sorted(set(request) - set(FIELDS)):
        return error(HTTPStatus.BAD_REQUEST, f"unknown field {', '.join(unknown)} (fields: {', '.join(FIELDS)})")
    source, name = request.get("source"), request.get("name")
    if not isinstance(source, str) or not source.strip():
        return error(HTTPStatus.BAD_REQUEST, "source: a video file, camera index or URL is needed (a string)")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        return error(HTTPStatus.BAD_REQUEST, "name: a non-empty string, or no name (one is made from the source)")
    if name is not None and any(s["name"] == name and s["state"] != "ended" for s in control.list()):
        return error(HTTPStatus.CONFLICT, f"a stream named {name} is running: remove it first or choose another name")
    try:
        added = control.add(source, name)
    except UserError as exc:
        return error(HTTPStatus.BAD_REQUEST, str(exc))
    return HTTPStatus.ACCEPTED, {"name": added, "source": source}


def remove_stream(control: Control, name: str) -> Answer:
    """`DELETE /streams/NAME`: 202 once the control accepted it (the stream ends, its outputs finalised), 404 for
    a name it does not list, 409 where it refuses (a stream already ended)."""
    if all(s["name"] != name for s in control.list()):
        return error(HTTPStatus.NOT_FOUND, f"unknown stream: {name}")
    try:
        control.remove(name)
    except UserError as exc:
        return error(HTTPStatus.CONFLICT, str(exc))
    return HTTPStatus.ACCEPTED, {"name": name}
