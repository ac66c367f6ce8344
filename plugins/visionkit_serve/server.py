"""The LitServe server: a LitAPI over :class:`~visionkit_serve.model.Served` and a request gate.

The gate (an ASGI middleware in the HTTP process) turns every ``POST /predict`` into one plain
JSON document for the workers, ``{"images": [[name, base64], ...], "options": {...}}``, and
answers what is wrong with a request itself (415 wrong content type, 413 too large, 400 bad
JSON, no image, bad base64, bad option), so a bad request never reaches a batch. A file that is
not an image is found by the task's own decoder in the worker and answered 400 alone: in a
batch, the other requests still get their predictions.

(No ``from __future__ import annotations`` here: LitServe reads ``decode_request``'s annotation as a
class to decide how to parse the request.)
"""

import base64
import binascii
import json
import re
from pathlib import Path
from typing import Any

import litserve as ls
from starlette.requests import Request
from starlette.responses import JSONResponse

from visionkit_serve.model import Job, Served

#: most images one request may carry
MAX_IMAGES = 64


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _name(raw: str | None, index: int) -> str:
    """A safe file name for an uploaded image (no folders, no odd characters)."""
    base = Path(raw or "").name
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._")
    return base[:100] or f"image_{index}"


def _options(raw: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    try:
        if raw.get("topk") not in (None, ""):
            options["topk"] = int(raw["topk"])
            if options["topk"] < 1:
                raise ValueError
        if raw.get("threshold") not in (None, ""):
            options["threshold"] = float(raw["threshold"])
            if not 0.0 <= options["threshold"] <= 1.0:
                raise ValueError
    except (TypeError, ValueError):
        raise BadRequest(400, "topk must be an integer >= 1 and threshold a number in [0, 1]") from None
    return options


class RequestGate:
    """ASGI middleware: validate ``POST /predict`` and hand the workers one plain JSON body."""

    def __init__(self, app: Any, max_bytes: int, info: dict[str, Any], path: str = "/predict") -> None:
        self.app, self.max_bytes, self.info, self.path = app, max_bytes, info, path

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/info" and scope["method"] == "GET":
            await JSONResponse(self.info)(scope, receive, send)  # the model's description, top level
            return
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            if scope["method"] != "POST":
                raise BadRequest(405, f"use POST {self.path}")
            payload = await self._payload(request)
        except BadRequest as err:
            await JSONResponse({"error": err.message}, status_code=err.status)(scope, receive, send)
            return
        body = json.dumps(payload).encode()
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        done = False

        async def replay() -> dict[str, Any]:
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # type: ignore[no-any-return]

        await self.app({**scope, "headers": headers}, replay, send)

    async def _body(self, request: Request) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_bytes:
                raise BadRequest(413, f"request body over the {self.max_bytes} byte limit (--max-request-mb)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _payload(self, request: Request) -> dict[str, Any]:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            raise BadRequest(413, f"request body over the {self.max_bytes} byte limit (--max-request-mb)")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            images, options = await self._multipart(request)
        elif kind == "application/json":
            images, options = self._json(await self._body(request))
        else:
            raise BadRequest(
                415,
                f"content type {kind or '(none)'!r}: send multipart/form-data with 'image' files, "
                'or application/json {"image": "<base64>"} / {"images": [...]}',
            )
        if not images:
            raise BadRequest(400, "no image in the request: send one or more 'image' files or base64 images")
        if len(images) > MAX_IMAGES:
            raise BadRequest(413, f"{len(images)} images in one request; at most {MAX_IMAGES}")
        return {"images": images, "options": options}

    async def _multipart(self, request: Request) -> tuple[list[list[str]], dict[str, Any]]:
        body = await self._body(request)  # size-checked before the form parser sees it
        done = False

        async def again() -> dict[str, Any]:
            nonlocal done
            if done:
                return {"type": "http.disconnect"}
            done = True
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, again).form(
                max_files=MAX_IMAGES, max_part_size=self.max_bytes
            )
        except Exception as err:  # malformed multipart: the parser's own words
            raise BadRequest(400, f"malformed multipart body: {err}") from None
        images = []
        for i, item in enumerate(form.getlist("image")):
            if isinstance(item, str) or not hasattr(item, "read"):
                raise BadRequest(400, "'image' must be a file part (multipart/form-data upload)")
            data = await item.read()
            images.append([_name(item.filename, i), base64.b64encode(data).decode()])
        options = _options({k: form.get(k) for k in ("topk", "threshold")})
        await form.close()
        return images, options

    def _json(self, body: bytes) -> tuple[list[list[str]], dict[str, Any]]:
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise BadRequest(400, "the body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise BadRequest(400, 'send a JSON object: {"image": "<base64>"} or {"images": [...]}')
        raw = [doc["image"]] if "image" in doc else doc.get("images")
        if not isinstance(raw, list):
            raise BadRequest(400, 'no "image" (base64 string) or "images" (list) in the JSON body')
        images = []
        for i, item in enumerate(raw):
            name, data = (item.get("name"), item.get("data")) if isinstance(item, dict) else (None, item)
            if not isinstance(data, str):
                raise BadRequest(400, f"image {i}: expected a base64 string")
            try:
                decoded = base64.b64decode(
                    data.split(",", 1)[-1] if data.startswith("data:") else data, validate=True
                )
            except (binascii.Error, ValueError):
                raise BadRequest(400, f"image {i}: not valid base64") from None
            images.append([_name(name, i), base64.b64encode(decoded).decode()])
        return images, _options(doc)


class VisionAPI(ls.LitAPI):  # type: ignore[misc]
    """Decode (the dataset's predict samples), batch, predict (the task), encode (predict's writer)."""

    def __init__(self, ckpt: Path | None, model: Path | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ckpt, self.model_path = ckpt, model

    def setup(self, device: str) -> None:
        self.served = Served(self.ckpt, self.model_path)

    def decode_request(self, request: Request) -> Job:
        images = [(name, base64.b64decode(data)) for name, data in request["images"]]  # the gate's JSON
        job = Job(images, dict(request.get("options") or {}))
        try:
            return self.served.decode(job)
        except Exception as err:  # the dataset could not build a sample: this request only fails
            job.error = f"could not read the images: {err}"
            return job

    def batch(self, inputs: list[Job]) -> list[Job]:
        return list(inputs)

    def predict(self, x: Any) -> Any:
        self.served.predict(x if isinstance(x, list) else [x])
        return x

    def unbatch(self, output: list[Job]) -> list[Job]:
        return list(output)

    def encode_response(self, output: Job) -> Any:
        if output.error is not None:
            if output.folder is not None:
                output.folder.cleanup()
            return JSONResponse({"error": output.error}, status_code=400)
        return self.served.answer(output)


def run(
    *,
    ckpt: Path | None,
    model: Path | None,
    host: str,
    port: int,
    max_batch_size: int,
    batch_timeout: float,
    workers: int,
    max_bytes: int,
    timeout: float,
) -> None:
    """Load the model once here (errors before any worker starts, and /info), then serve."""
    info = Served(ckpt, model).info()
    info["server"] = {
        "max_batch_size": max_batch_size,
        "batch_timeout": batch_timeout,
        "workers": workers,
        "max_request_bytes": max_bytes,
        "timeout": timeout,
    }
    api = VisionAPI(ckpt, model, max_batch_size=max_batch_size, batch_timeout=batch_timeout)
    server = ls.LitServer(
        api,
        accelerator="cpu",
        devices=1,
        workers_per_device=workers,
        timeout=timeout,
        model_metadata=info,
        middlewares=[(RequestGate, {"max_bytes": max_bytes, "info": info})],
    )
    print(f"visionkit serve: {info['task']} on http://{host}:{port} (POST /predict, GET /health, GET /info)")
    server.run(host=host, port=port, generate_client_file=False, log_level="warning")
