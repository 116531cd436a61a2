"""The HTTP side of `tinyggml-cli serve`: OpenAI's completions and chat completions (streamed as
server-sent events), models, health, Prometheus metrics, and llama-server's tokenize /
detokenize.

Built on Starlette (routing, requests, responses), sse-starlette (the event-stream framing and
disconnect detection), pydantic (request bodies: types, ranges, which fields exist) and
prometheus_client (the metrics text format); uvicorn serves it. Every refusal is a JSON error
in OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with a 4xx status.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..chat import ChatTemplate
from ..errors import TinyGGMLError
from ..sampling import SamplerParams
from .engine import Engine, EngineFailed, Job, QueueFull


@dataclass
class ServerConfig:
    model_id: str
    ctx_size: int = 8192               # prompt + max_tokens, per request
    max_tokens: int = 1024             # the largest max_tokens a request may ask for
    api_key: str | None = None
    max_body: int = 4 << 20            # bytes of a request body
    max_n: int = 4                     # choices per request (the engine's sequences)


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, kind: str = "invalid_request_error", headers=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind, self.headers = kind, headers

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.kind,
                                       "param": self.param, "code": self.code}},
                            status_code=self.status, headers=self.headers)


# ---- request bodies ---------------------------------------------------------------------------
class _Sampling(BaseModel):
    """Fields both endpoints take. Strict: "5" is not a number, 1.5 is not an integer."""
    model_config = ConfigDict(strict=True, extra="allow")

    model: Optional[str] = None
    max_tokens: Optional[int] = Field(None, ge=0)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    repeat_penalty: float = Field(1.0, gt=0.0, le=10.0)
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = Field(None, validate_default=True)
    stream: bool = False
    stream_options: Optional[dict] = None
    n: int = Field(1, ge=1, le=128)
    user: Optional[str] = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        v = [v] if isinstance(v, str) else (v or [])
        if len(v) > 16 or any(not s for s in v):
            raise ValueError("stop takes up to 16 non-empty strings")
        return v

    @field_validator("stream_options")
    @classmethod
    def _stream_options(cls, v):
        if v is not None and not isinstance(v.get("include_usage", False), bool):
            raise ValueError("stream_options.include_usage must be a boolean")
        return v


class CompletionRequest(_Sampling):
    prompt: Union[str, list[int], list[str]]
    logprobs: Optional[int] = Field(None, ge=0, le=20)
    echo: bool = False
    suffix: Optional[str] = None
    best_of: Optional[int] = Field(None, ge=1, le=1)


class Message(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: Union[str, list[dict], None] = None


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    max_completion_tokens: Optional[int] = Field(None, ge=0)


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    content: str
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")
    tokens: list[int]


UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "logit_bias")


def _validation_error(e: ValidationError) -> ApiError:
    err = e.errors()[0]
    param = ".".join(str(x) for x in err["loc"]) or None
    return ApiError(400, f"{param}: {err['msg']}" if param else err["msg"], param=param,
                    code="invalid_value")


# ---- the app ----------------------------------------------------------------------------------
class Server:
    def __init__(self, engine: Engine, template: ChatTemplate, config: ServerConfig, metrics):
        self.engine, self.template, self.cfg, self.metrics = engine, template, config, metrics
        self.model = engine.model
        self.created = int(time.time())

    # -- plumbing
    async def _body(self, request: Request, kind):
        if self.cfg.api_key is not None:
            auth = request.headers.get("authorization", "")
            if not secrets.compare_digest(auth.encode(), f"Bearer {self.cfg.api_key}".encode()):
                raise ApiError(401, "invalid or missing API key (Authorization: Bearer KEY)",
                               kind="authentication_error", code="invalid_api_key")
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > self.cfg.max_body):
            raise ApiError(413, f"request body over {self.cfg.max_body} bytes", code="too_large")
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > self.cfg.max_body:
                raise ApiError(413, f"request body over {self.cfg.max_body} bytes", code="too_large")
        if kind is None:
            return None
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not valid JSON ({e})", code="invalid_json") from None
        except RecursionError:
            raise ApiError(400, "the body nests too deeply", code="invalid_json") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object", code="invalid_json")
        for k in UNSUPPORTED:
            if data.get(k) not in (None, [], {}):
                raise ApiError(400, f"{k} is not supported by this server", param=k,
                               code="unsupported_parameter")
        try:
            req = kind.model_validate(data)
        except ValidationError as e:
            raise _validation_error(e) from None
        if getattr(req, "model", None) not in (None, self.cfg.model_id):
            raise ApiError(404, f"the model '{req.model}' does not exist (this server has "
                                f"'{self.cfg.model_id}')", param="model", code="model_not_found")
        return req

    def _count(self, endpoint: str, status: int):
        self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()

    async def _handle(self, request: Request, endpoint: str, fn):
        try:
            resp = await fn(request)
        except ApiError as e:
            resp = e.response()
        except TinyGGMLError as e:
            resp = ApiError(400, str(e)).response()
        except Exception as e:        # a bug: the client gets OpenAI's shape, the log the trace
            import traceback
            traceback.print_exc()
            resp = ApiError(500, f"internal error: {type(e).__name__}: {e}", kind="server_error",
                            code="internal_error").response()
        self._count(endpoint, resp.status_code)
        return resp

    # -- simple endpoints
    async def health(self, request: Request):
        if self.engine.error:
            return JSONResponse({"status": "error", "error": self.engine.error}, status_code=500)
        return JSONResponse({"status": "ok", "slots_idle": self.engine.parallel - self.engine.active,
                             "slots_processing": self.engine.active})

    async def models(self, request: Request):
        async def fn(request):
            await self._body(request, None)
            return JSONResponse({"object": "list", "data": [{
                "id": self.cfg.model_id, "object": "model", "created": self.created,
                "owned_by": "tinyggml", "meta": {"n_vocab": self.model.n_vocab,
                                                "arch": self.model.arch}}]})
        return await self._handle(request, "models", fn)

    async def metrics_text(self, request: Request):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        self.metrics.queue_depth.set(self.engine.queue_depth)
        self.metrics.active_sequences.set(self.engine.active)
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def tokenize(self, request: Request):
        async def fn(request):
            req = await self._body(request, TokenizeRequest)
            ids = self.model.tokenize(req.content, add_bos=req.add_special,
                                      parse_special=req.parse_special)
            if req.with_pieces:
                tok = self.model.tokenizer
                return JSONResponse({"tokens": [
                    {"id": i, "piece": tok.token_to_piece(i).decode("utf-8", "replace")} for i in ids]})
            return JSONResponse({"tokens": ids})
        return await self._handle(request, "tokenize", fn)

    async def detokenize(self, request: Request):
        async def fn(request):
            req = await self._body(request, DetokenizeRequest)
            bad = [t for t in req.tokens if not 0 <= t < self.model.n_vocab]
            if bad:
                raise ApiError(400, f"token id {bad[0]} out of range (vocabulary of "
                                    f"{self.model.n_vocab})", param="tokens")
            return JSONResponse({"content": self.model.detokenize(req.tokens)})
        return await self._handle(request, "detokenize", fn)

    # -- generation
    def _job(self, req, prompt: list, stop: list, logprobs) -> Job:
        if not prompt:
            bos = self.model.tokenizer.bos_id
            if bos is None:
                raise ApiError(400, "empty prompt", param="prompt")
            prompt = [bos]
        max_tokens = req.max_tokens
        if getattr(req, "max_completion_tokens", None) is not None:
            max_tokens = req.max_completion_tokens
        if max_tokens is not None and max_tokens > self.cfg.max_tokens:
            raise ApiError(400, f"max_tokens is {max_tokens}, this server allows at most "
                                f"{self.cfg.max_tokens} (--max-tokens)", param="max_tokens",
                           code="invalid_value")
        room = self.cfg.ctx_size - len(prompt)
        if room <= 0 or (max_tokens is not None and max_tokens > room):
            raise ApiError(400, f"the prompt is {len(prompt)} tokens and max_tokens "
                                f"{max_tokens or 0}; the context limit is {self.cfg.ctx_size} "
                                f"tokens (--ctx-size)", param="messages" if hasattr(req, "messages")
                           else "prompt", code="context_length_exceeded")
        if max_tokens is None:
            max_tokens = min(self.cfg.max_tokens, room)
        if req.n > self.cfg.max_n:
            raise ApiError(400, f"n is {req.n}; this server runs at most {self.cfg.max_n} "
                                f"sequences at once (--parallel)", param="n")
        seed = None if req.seed is None else req.seed & 0xFFFFFFFFFFFF
        params = SamplerParams(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p,
                               min_p=req.min_p, repeat_penalty=req.repeat_penalty,
                               presence_penalty=req.presence_penalty,
                               frequency_penalty=req.frequency_penalty, seed=seed)
        return Job(prompt=[int(t) for t in prompt], params=params, max_tokens=max_tokens, n=req.n,
                   stop=stop, logprobs=logprobs)

    async def completions(self, request: Request):
        async def fn(request):
            req = await self._body(request, CompletionRequest)
            if req.echo or req.suffix:
                raise ApiError(400, "echo and suffix are not supported", param="echo" if req.echo
                               else "suffix", code="unsupported_parameter")
            p = req.prompt
            if isinstance(p, list) and p and isinstance(p[0], str):
                if len(p) != 1:
                    raise ApiError(400, "one prompt per request (send several requests: they "
                                        "are batched)", param="prompt")
                p = p[0]
            if isinstance(p, str):
                ids = self.model.tokenize(p)
            else:
                bad = [t for t in p if not 0 <= t < self.model.n_vocab]
                if bad:
                    raise ApiError(400, f"token id {bad[0]} out of range", param="prompt")
                ids = list(p)
            job = self._job(req, ids, req.stop, req.logprobs)
            return await self._run(request, job, req, chat=False)
        return await self._handle(request, "completions", fn)

    async def chat(self, request: Request):
        async def fn(request):
            req = await self._body(request, ChatRequest)
            msgs = [{**m.model_dump(exclude_none=True),
                     "role": "system" if m.role == "developer" else m.role} for m in req.messages]
            try:
                text = self.template.render(msgs, add_generation_prompt=True)
            except TinyGGMLError as e:
                raise ApiError(400, str(e), param="messages") from None
            ids = self.template.tokenize(self.model, text, first=True)
            k = (req.top_logprobs or 0) if req.logprobs else None
            job = self._job(req, ids, req.stop + self.template.stop, k)
            return await self._run(request, job, req, chat=True)
        return await self._handle(request, "chat", fn)

    async def _run(self, request: Request, job: Job, req, chat: bool):
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def emit(ev):
            try:
                loop.call_soon_threadsafe(q.put_nowait, ev)
            except RuntimeError:           # the loop is gone (shutdown): nobody is listening
                job.cancel()
        job.emit = emit
        try:
            self.engine.submit(job)
        except QueueFull as e:
            raise ApiError(503, str(e), kind="server_error", code="queue_full",
                           headers={"Retry-After": "1"}) from None
        except EngineFailed as e:
            raise ApiError(503, str(e), kind="server_error", code="unavailable") from None
        rid = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        out = _Output(self, job, rid, chat, int(time.time()))
        if req.stream:
            from sse_starlette.sse import EventSourceResponse
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return EventSourceResponse(out.stream(q, include_usage), ping=15,
                                       headers={"Cache-Control": "no-cache"})
        return await out.whole(q, request)


class _Output:
    """Events of one job -> OpenAI response objects."""

    def __init__(self, server: Server, job: Job, rid: str, chat: bool, created: int):
        self.s, self.job, self.id, self.chat, self.created = server, job, rid, chat, created
        self.tok = server.model.tokenizer
        self.texts = [""] * job.n
        self.lps = [[] for _ in range(job.n)]
        self.finish = [None] * job.n
        self.n_gen = [0] * job.n
        self.cached = 0

    def _piece(self, t: int) -> str:
        return self.tok.token_to_piece(t).decode("utf-8", "replace")

    def _logprobs(self, entries: list):
        if self.job.logprobs is None:
            return None
        if self.chat:
            return {"content": [
                {"token": self._piece(t), "logprob": lp, "bytes": list(self.tok.token_to_piece(t)),
                 "top_logprobs": [{"token": self._piece(i), "logprob": v,
                                   "bytes": list(self.tok.token_to_piece(i))} for i, v in top]}
                for t, (lp, top) in entries]}
        return {"tokens": [self._piece(t) for t, _ in entries],
                "token_logprobs": [lp for _, (lp, _) in entries],
                "top_logprobs": [{self._piece(i): v for i, v in top} for _, (_, top) in entries],
                "text_offset": []}

    def usage(self) -> dict:
        p, g = len(self.job.prompt), sum(self.n_gen)
        return {"prompt_tokens": p, "completion_tokens": g, "total_tokens": p + g,
                "prompt_tokens_details": {"cached_tokens": self.cached}}

    def _apply(self, ev) -> tuple:
        """Record an event; returns (kind, index, text, logprob entries)."""
        kind = ev[0]
        if kind == "error":
            status = ev[2] if len(ev) > 2 else 503
            raise ApiError(status, ev[1], kind="server_error" if status >= 500 else
                           "invalid_request_error", code="unavailable" if status >= 500 else None)
        if kind == "started":
            self.cached = ev[1]
            return kind, None, "", []
        if kind == "token":
            _, i, text, t, lp = ev
            self.texts[i] += text
            entries = [(t, lp)] if lp is not None and t is not None else []
            self.lps[i] += entries
            return kind, i, text, entries
        _, i, reason, n = ev
        self.finish[i], self.n_gen[i] = reason, n
        return kind, i, "", []

    def _done(self) -> bool:
        return all(f is not None for f in self.finish)

    async def whole(self, q: asyncio.Queue, request: Request) -> JSONResponse:
        """Wait for every choice to finish. Every 0.25 s, however busy the stream of events, ask
        whether the client is still there: one that left cancels the job."""
        loop = asyncio.get_running_loop()
        next_check = loop.time() + 0.25
        try:
            while not self._done():
                try:
                    ev = await asyncio.wait_for(q.get(), max(0.0, next_check - loop.time()))
                    self._apply(ev)
                except asyncio.TimeoutError:
                    pass
                if loop.time() >= next_check:
                    next_check = loop.time() + 0.25
                    if await request.is_disconnected():
                        self.job.cancel()
                        self.s.engine.wake()
                        return JSONResponse({}, status_code=499)
                    if self.s.engine.error:
                        raise ApiError(503, f"the engine stopped: {self.s.engine.error}",
                                       kind="server_error", code="unavailable")
        except BaseException:
            self.job.cancel()
            raise
        if self.chat:
            choices = [{"index": i, "message": {"role": "assistant", "content": self.texts[i]},
                        "logprobs": self._logprobs(self.lps[i]), "finish_reason": self.finish[i]}
                       for i in range(self.job.n)]
            obj = "chat.completion"
        else:
            choices = [{"index": i, "text": self.texts[i], "logprobs": self._logprobs(self.lps[i]),
                        "finish_reason": self.finish[i]} for i in range(self.job.n)]
            obj = "text_completion"
        return JSONResponse({"id": self.id, "object": obj, "created": self.created,
                             "model": self.s.cfg.model_id, "choices": choices,
                             "usage": self.usage(), "system_fingerprint": "tinyggml"})

    def _chunk(self, i: int, text: str | None, entries: list, finish=None, role=False) -> str:
        if self.chat:
            delta = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice = {"index": i, "delta": delta, "logprobs": self._logprobs(entries) if entries
                      else None, "finish_reason": finish}
            obj = "chat.completion.chunk"
        else:
            choice = {"index": i, "text": text or "", "logprobs": self._logprobs(entries) if entries
                      else None, "finish_reason": finish}
            obj = "text_completion"
        return json.dumps({"id": self.id, "object": obj, "created": self.created,
                           "model": self.s.cfg.model_id, "choices": [choice],
                           "system_fingerprint": "tinyggml"}, ensure_ascii=False)

    async def stream(self, q: asyncio.Queue, include_usage: bool):
        """Server-sent events; a client that goes away cancels the job (sse-starlette cancels
        this generator, and the engine frees the sequences at its next step)."""
        try:
            if self.chat:
                for i in range(self.job.n):
                    yield {"data": self._chunk(i, "", [], role=True)}
            while not self._done():
                ev = await q.get()
                try:
                    kind, i, text, entries = self._apply(ev)
                except ApiError as e:
                    yield {"data": json.dumps({"error": {"message": e.message, "type": e.kind,
                                                         "param": None, "code": e.code}})}
                    return
                if kind == "token" and (text or entries):
                    yield {"data": self._chunk(i, text, entries)}
                elif kind == "done":
                    yield {"data": self._chunk(i, None if self.chat else "", [],
                                               finish=self.finish[i])}
            if include_usage:
                obj = "chat.completion.chunk" if self.chat else "text_completion"
                yield {"data": json.dumps({"id": self.id, "object": obj, "created": self.created,
                                           "model": self.s.cfg.model_id, "choices": [],
                                           "usage": self.usage()})}
            yield {"data": "[DONE]"}
        finally:
            if not self._done():
                self.job.cancel()
                self.s.engine.wake()


def create_app(server: Server, on_shutdown=None) -> Starlette:
    s = server

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if on_shutdown is not None:
            on_shutdown()

    async def not_found(request: Request, exc):
        return ApiError(404, f"no endpoint {request.method} {request.url.path}",
                        code="not_found").response()

    async def bad_method(request: Request, exc):
        return ApiError(405, f"{request.method} is not allowed on {request.url.path}",
                        code="method_not_allowed").response()

    routes = [
        Route("/health", s.health, methods=["GET"]),
        Route("/v1/health", s.health, methods=["GET"]),
        Route("/metrics", s.metrics_text, methods=["GET"]),
        Route("/v1/models", s.models, methods=["GET"]),
        Route("/models", s.models, methods=["GET"]),
        Route("/v1/completions", s.completions, methods=["POST"]),
        Route("/completions", s.completions, methods=["POST"]),
        Route("/v1/chat/completions", s.chat, methods=["POST"]),
        Route("/chat/completions", s.chat, methods=["POST"]),
        Route("/tokenize", s.tokenize, methods=["POST"]),
        Route("/detokenize", s.detokenize, methods=["POST"]),
    ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: bad_method},
                     lifespan=lifespan)
