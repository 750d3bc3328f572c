"""The OpenAI-compatible HTTP API of a U-SAM model.

    POST /v1/chat/completions   OpenAI chat completions; content parts `text` and `input_audio` (base64 wav, flac,
                                ogg, mp3); multi-turn; `stream: true` sends server-sent events
    GET  /v1/models             the one model served (its folder name, or --model-name)
    GET  /health                liveness, queue length and batching counters

Every error is an OpenAI-style body {"error": {"message", "type", "param", "code"}}: 400 malformed JSON, schema
or audio (with the decoder's reason), 401 bad API key, 404 unknown model or route, 413 audio too long or body
too large, 503 queue full. Requests never make the server read a file or fetch a URL.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from usam.serving.batcher import Batcher, Generation, GenerationRequest
from usam.serving.errors import APIError, Overloaded, error_body
from usam.serving.schemas import (AssistantMessage, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest,
                                  Choice, ChunkChoice, Delta, ModelCard, ModelList, Usage, new_id)

log = logging.getLogger("usam.serving")


@dataclass
class ServeSettings:
    model_name: str
    api_key: str | None = None
    max_audio_seconds: float = 60.0
    max_body_mb: float = 25.0
    default_max_tokens: int = 256
    max_tokens_limit: int = 2048
    batch_window_ms: float = 10.0
    max_batch: int = 8
    max_queue: int = 64


# -- ASGI middleware: API key and body size, before FastAPI reads anything -------------------------------------
class _BodyTooLarge(Exception):
    pass


class GuardMiddleware:
    """Checks the API key (`Authorization: Bearer K`) on every request, and refuses bodies over the size limit:
    from Content-Length before reading, or while reading a chunked body (never buffering more than the limit)."""

    def __init__(self, app, settings: ServeSettings):
        self.app, self.settings = app, settings
        self.max_bytes = int(settings.max_body_mb * 1024 * 1024)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.settings.api_key is not None:
            given = headers.get("authorization", "")
            token = given[7:].strip() if given[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(token.encode(), self.settings.api_key.encode()):
                return await _send_error(send, APIError(401, "Incorrect or missing API key: send "
                                                        "'Authorization: Bearer <key>'", "invalid_request_error",
                                                        code="invalid_api_key"))
        too_large = APIError(413, f"the request body is larger than the limit of {self.settings.max_body_mb:g} MB",
                             "invalid_request_error", code="request_too_large")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _send_error(send, too_large)
        received, started, overflow, replaced = 0, False, False, False

        async def counting_receive():
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    overflow = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message):
            # FastAPI turns an exception raised while reading the body into its own 400: answer 413 instead
            nonlocal started, replaced
            if message["type"] == "http.response.start" and overflow and not started:
                replaced = started = True
                return await _send_error(send, too_large)
            if replaced:
                return None
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLarge:
            if not started:
                await _send_error(send, too_large)


async def _send_error(send, err: APIError) -> None:
    body = json.dumps(err.body()).encode()
    await send({"type": "http.response.start", "status": err.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# -- request -> conversation -------------------------------------------------------------------------------------
def _decode_audio(data: str, param: str, max_seconds: float, rate: int):
    """base64 -> bytes -> float32 at `rate`, the model's input rate (usam.data.audio). Only bytes reach the
    decoder, never a path."""
    from usam.data.audio import load_audio
    from usam.errors import DataError

    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param}: not valid base64 (send the encoded audio file itself; the server never "
                       "reads files or fetches URLs)", param=param, code="invalid_audio") from None
    try:
        return load_audio(raw, target_sr=rate, max_seconds=max_seconds)
    except DataError as err:
        if err.reason == "too_long":
            raise APIError(413, f"{param}: the audio is too long: {err.message}", param=param,
                           code="audio_too_long") from None
        raise APIError(400, f"{param}: the audio does not decode: {err.reason}: {err.message}", param=param,
                       code="invalid_audio") from None


def to_conversation(request: ChatCompletionRequest, max_seconds: float, rate: int) -> list[dict]:
    """OpenAI messages -> USAMProcessor chat format (runs in a worker thread: audio decoding takes time)."""
    conversation = []
    for i, message in enumerate(request.messages):
        role = "system" if message.role == "developer" else message.role
        if isinstance(message.content, str):
            conversation.append({"role": role, "content": message.content})
            continue
        parts = []
        for j, part in enumerate(message.content):
            param = f"messages[{i}].content[{j}]"
            if part.type == "text":
                parts.append({"type": "text", "text": part.text})
            elif role != "user":
                raise APIError(400, f"{param}: audio is only allowed in user messages", param=param)
            else:
                parts.append({"type": "audio", "audio": _decode_audio(part.input_audio.data, param, max_seconds,
                                                                          rate)})
        if role != "user":  # system / assistant: plain text
            conversation.append({"role": role, "content": "".join(p["text"] for p in parts)})
        else:
            conversation.append({"role": role, "content": parts})
    if conversation[-1]["role"] != "user":
        raise APIError(400, "the last message must be a user message", param="messages")
    return conversation


def _parse_request(raw: bytes) -> ChatCompletionRequest:
    """Parsed here rather than by FastAPI, so that any content type is read as JSON (as OpenAI does) and each
    failure gets an OpenAI-style 400 that names the field."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(400, f"the body is not valid JSON: {err}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object", code="invalid_json")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as err:
        raise APIError(400, _validation_message(err.errors()), param=_validation_param(err.errors()),
                       code="invalid_request") from None


def _validation_param(errors) -> str | None:
    if not errors:
        return None
    loc = [str(p) for p in errors[0].get("loc", ()) if p != "body"]
    return ".".join(loc) or None


def _validation_message(errors) -> str:
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return "invalid request: " + "; ".join(parts)


# -- the app -------------------------------------------------------------------------------------------------------
def create_app(model, processor, settings: ServeSettings) -> FastAPI:
    batcher = Batcher(model, processor, max_batch=settings.max_batch, window_ms=settings.batch_window_ms,
                      max_queue=settings.max_queue)
    created = int(time.time())
    max_positions = getattr(getattr(model.llm, "config", None), "max_position_embeddings", None)

    @asynccontextmanager
    async def lifespan(_app):
        batcher.start()
        yield
        await run_in_threadpool(batcher.close)

    app = FastAPI(title="U-SAM", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher = batcher
    app.state.settings = settings

    @app.exception_handler(APIError)
    async def _api_error(_request, err: APIError):
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, err: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return JSONResponse(error_body(str(err.detail), "invalid_request_error", None, code),
                            status_code=err.status_code)

    @app.exception_handler(Exception)
    async def _internal(_request, err: Exception):
        log.exception("unhandled error")
        return JSONResponse(error_body(f"internal error: {type(err).__name__}: {err}", "server_error"), 500)

    @app.get("/health")
    async def health():
        body = {"status": "ok" if batcher.alive else "down", "model": settings.model_name, "queued": batcher.queued,
                "batches": batcher.batches, "requests": batcher.requests}
        return JSONResponse(body, status_code=200 if batcher.alive else 503)

    @app.get("/v1/models")
    async def models():
        return ModelList(data=[ModelCard(id=settings.model_name, created=created)]).model_dump()

    @app.post("/v1/chat/completions")
    async def chat_completions(http_request: Request):
        body = _parse_request(await http_request.body())
        if body.model != settings.model_name:
            raise APIError(404, f"The model '{body.model}' does not exist; this server serves "
                           f"'{settings.model_name}'", param="model", code="model_not_found")
        max_tokens = body.max_completion_tokens or body.max_tokens or settings.default_max_tokens
        if max_tokens > settings.max_tokens_limit:
            raise APIError(400, f"max_tokens {max_tokens} is over this server's limit of {settings.max_tokens_limit}",
                           param="max_tokens")
        conversation = await run_in_threadpool(to_conversation, body, settings.max_audio_seconds,
                                                 processor.sampling_rate)
        try:  # the processor checks the conversation (roles, template) before it is queued
            encoded, _ = await run_in_threadpool(processor.encode_conversation, conversation, True)
        except ValueError as err:
            raise APIError(400, f"messages: {err}", param="messages") from None
        if max_positions and len(encoded["ids"]) + max_tokens > max_positions:
            raise APIError(400, f"the prompt ({len(encoded['ids'])} tokens with the audio) plus max_tokens "
                           f"({max_tokens}) exceeds the model's context of {max_positions} tokens",
                           param="messages", code="context_length_exceeded")
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        request = GenerationRequest(
            conversation=conversation, max_tokens=max_tokens,
            temperature=0.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p, stop=list(body.stop or []), seed=body.seed,
            on_delta=(lambda text: loop.call_soon_threadsafe(events.put_nowait, text)) if body.stream else None,
            on_done=lambda result: loop.call_soon_threadsafe(events.put_nowait, result))
        try:
            batcher.submit(request)
        except Overloaded as err:
            raise APIError(503, f"the server is overloaded: {err}; retry later", "server_overloaded",
                           code="queue_full", headers={"Retry-After": "1"}) from None
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_sse(request, events, settings.model_name, include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            result = await events.get()
        except asyncio.CancelledError:  # the client went away
            request.cancelled.set()
            raise
        if isinstance(result, BaseException):
            raise APIError(500, f"generation failed: {type(result).__name__}: {result}", "server_error")
        return ChatCompletion(model=settings.model_name, usage=_usage(result), choices=[Choice(
            message=AssistantMessage(content=result.text), finish_reason=result.finish_reason)]).model_dump()

    app.add_middleware(GuardMiddleware, settings=settings)
    return app


def _usage(result: Generation) -> Usage:
    return Usage(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                 total_tokens=result.prompt_tokens + result.completion_tokens)


async def _sse(request: GenerationRequest, events: asyncio.Queue, model_name: str, include_usage: bool):
    chunk_id, created = new_id(), int(time.time())

    def chunk(delta: Delta, finish=None, usage=None, choices=True) -> str:
        data = ChatCompletionChunk(id=chunk_id, created=created, model=model_name, usage=usage,
                                   choices=[ChunkChoice(delta=delta, finish_reason=finish)] if choices else [])
        return f"data: {data.model_dump_json()}\n\n"

    try:
        yield chunk(Delta(role="assistant", content=""))
        while True:
            item = await events.get()
            if isinstance(item, str):
                yield chunk(Delta(content=item))
                continue
            if isinstance(item, BaseException):
                body = error_body(f"generation failed: {type(item).__name__}: {item}", "server_error")
                yield f"data: {json.dumps(body)}\n\n"
            else:
                yield chunk(Delta(), finish=item.finish_reason)
                if include_usage:
                    yield chunk(Delta(), usage=_usage(item), choices=False)
            break
        yield "data: [DONE]\n\n"
    finally:
        request.cancelled.set()  # a client that leaves early stops its row of the batch
