"""A small OpenAI-compatible server over our own KV-cache `generate` - for development and tests on CPU.

    LMFORGE_API_KEY=... python -m serving.local ckpt=<checkpoint|run dir|export dir> [port=8000]
    python -m serving.local ckpt=... api_key_file=~/.config/lmforge/key   # a mode-600 file

Endpoints: GET /health (no key), GET /v1/models, POST /v1/completions, POST /v1/chat/completions.
Everything but /health needs `Authorization: Bearer <api_key>`, checked before the body is read.
The key never comes from the command line (`serving.api_key`). This is the reference engine
clients and tests talk to, not a production server; SGLang (`serving.launch`) is.

Hostile-client limits: a request may carry at most `max_prompts_per_request` sequences (prompts x n)
and `max_tokens_per_request` tokens (prompt tokens + sequences x max_tokens), a body of at most
`max_body_bytes`, and at most `max_queued_requests` requests wait at once (429 beyond). The model runs
`batch_size` sequences per call and requests take turns per call (`FairQueue`), so a large
request cannot hold the model while a small one waits. Every invalid field gets a 400 that names it.
"""

from __future__ import annotations

import json
import logging
import secrets
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from lmforge.checkpoint import LoadedModel
from lmforge.generate import SamplingConfig, generate
from serving.api_key import key_was_given, refuse_key_on_argv, resolve_api_key

log = logging.getLogger(__name__)

INT64 = 2**63


@dataclass
class LocalServerConfig:
    ckpt: str | None = None  # checkpoint, run dir, dense or compressed-tensors export (required)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # Python callers only; the CLI refuses it (argv is world-readable)
    api_key_file: str | None = None  # file holding the key (mode 600); else $LMFORGE_API_KEY, else random (printed)
    served_model_name: str | None = None
    max_new_tokens_limit: int = 1024  # largest max_tokens a request may ask for
    max_prompts_per_request: int = 16  # sequences per request: prompts x n
    max_tokens_per_request: int = 16384  # prompt tokens + sequences x max_tokens, per request
    max_queued_requests: int = 16  # requests admitted at once (running or waiting); 429 beyond
    batch_size: int = 4  # sequences per model call; requests take turns between calls
    max_body_bytes: int = 1 << 20  # request body, counted on the bytes actually received
    openapi: bool = False  # serve /openapi.json (behind the key); never /docs or /redoc
    threads: int = 2


@dataclass(frozen=True)
class Limits:
    max_new_tokens: int
    max_prompts: int
    max_tokens: int
    max_queued: int
    batch_size: int
    max_body_bytes: int

    @classmethod
    def from_config(cls, cfg: LocalServerConfig) -> Limits:
        return cls(
            cfg.max_new_tokens_limit,
            cfg.max_prompts_per_request,
            cfg.max_tokens_per_request,
            cfg.max_queued_requests,
            cfg.batch_size,
            cfg.max_body_bytes,
        )


# ----------------------------------------------------------------------------- request schema
# Strict types and no unknown fields: `"temperature": NaN`, `"n": true` or a misspelt field is a
# 400 naming that field, never a 500 or a silently ignored option.
Temperature = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)  # OpenAI's range


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """Fields both endpoints share (OpenAI names and defaults)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    model: str | None = None  # any name is accepted: this server serves one model
    temperature: float = Temperature
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int = Field(0, ge=0)  # not OpenAI's; SGLang and vLLM take it too
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    stop: str | list[str] | None = Field(None, max_length=4)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # an end-user id for abuse tracking; recorded nowhere here
    # Accepted only at their no-op values: anything else would be silently ignored.
    presence_penalty: float = Field(0.0, ge=0.0, le=0.0)
    frequency_penalty: float = Field(0.0, ge=0.0, le=0.0)
    logit_bias: dict[str, float] | None = Field(None, max_length=0)


class CompletionRequest(SamplingRequest):
    prompt: str | list[str]
    max_tokens: int = Field(16, ge=0)
    echo: bool = False
    logprobs: None = None  # refused: this engine does not return log-probabilities
    best_of: int | None = Field(None, ge=1, le=1)
    suffix: None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    role: Literal["system", "user", "assistant"]  # the roles our chat template renders
    content: str


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)  # OpenAI's newer name for max_tokens
    logprobs: Literal[False] | None = None  # refused when true
    top_logprobs: None = None


# OpenAI fields this engine cannot honour: accepted only at their no-op value, else a 400 saying so.
UNSUPPORTED = {
    "logprobs": "null or false",
    "top_logprobs": "null",
    "suffix": "null",
    "best_of": "1",
    "presence_penalty": "0",
    "frequency_penalty": "0",
    "logit_bias": "empty",
}


def openai_error(status: int, message: str, param: str | None = None) -> JSONResponse:
    kind = {401: "authentication_error", 413: "invalid_request_error", 429: "rate_limit_error"}.get(status)
    body = {"error": {"message": message, "type": kind or "invalid_request_error", "param": param, "code": None}}
    return JSONResponse(body, status_code=status)


class RequestError(Exception):
    """A 4xx with the field it is about (OpenAI's `param`)."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def _stop_strings(stop: str | list[str] | None) -> list[str]:
    return [s for s in ([stop] if isinstance(stop, str) else list(stop or [])) if s]


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cuts = [text.index(s) for s in stops if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


# ----------------------------------------------------------------------------- fair scheduling
class FairQueue:
    """Turns on the model in arrival order. A request needing several model calls takes one turn
    per call and queues again behind everyone who arrived meanwhile, so concurrent requests
    alternate call by call instead of the first one holding the model to the end."""

    def __init__(self, max_admitted: int):
        self._cond = threading.Condition()
        self._turns: deque[object] = deque()
        self._admitted = 0
        self.max_admitted = max_admitted

    @contextmanager
    def admitted(self) -> Iterator[None]:
        with self._cond:
            if self._admitted >= self.max_admitted:
                raise RequestError(429, f"server busy: {self._admitted} requests queued; retry later")
            self._admitted += 1
        try:
            yield
        finally:
            with self._cond:
                self._admitted -= 1

    @contextmanager
    def turn(self) -> Iterator[None]:
        ticket = object()
        with self._cond:
            self._turns.append(ticket)
            self._cond.wait_for(lambda: self._turns[0] is ticket)
        try:
            yield
        finally:
            with self._cond:
                self._turns.popleft()
                self._cond.notify_all()


class LocalEngine:
    """Our model + tokenizer behind a fair queue, speaking token ids in and text out."""

    def __init__(self, loaded: LoadedModel, name: str, limits: Limits):
        if loaded.tokenizer is None:
            raise ValueError("serving.local needs a tokenizer next to the model")
        self.model, self.tokenizer, self.name = loaded.model.eval(), loaded.tokenizer, name
        self.limits = limits
        self.queue = FairQueue(limits.max_queued)

    def check_count(self, prompts: int, n: int) -> None:
        """Refuse too many sequences before tokenizing anything."""
        if prompts == 0:
            raise RequestError(400, "prompt: must not be empty", "prompt")
        if prompts * n > self.limits.max_prompts:
            raise RequestError(
                400,
                f"{prompts} prompt(s) x n={n} = {prompts * n} sequences; at most {self.limits.max_prompts} per request",
                "n" if n > 1 else "prompt",
            )

    def check(self, prompts: list[list[int]], n: int, max_tokens: int) -> None:
        """Refuse a request over any limit, before it takes a turn on the model."""
        limits, context = self.limits, self.model.config.max_seq_len
        if max_tokens > limits.max_new_tokens:
            raise RequestError(
                400, f"max_tokens={max_tokens} exceeds this server's limit {limits.max_new_tokens}", "max_tokens"
            )
        self.check_count(len(prompts), n)
        sequences = len(prompts) * n
        longest = max(map(len, prompts))
        if longest + max_tokens > context:
            raise RequestError(
                400,
                f"prompt ({longest} tokens) + max_tokens ({max_tokens}) exceeds the context length {context}",
                "max_tokens",
            )
        total = n * sum(map(len, prompts)) + sequences * max_tokens
        if total > limits.max_tokens:
            raise RequestError(
                400,
                f"prompt tokens x n + sequences x max_tokens = {total} tokens; at most {limits.max_tokens} per request",
                "max_tokens",
            )

    def complete(
        self, prompts: list[list[int]], n: int, max_tokens: int, req: SamplingRequest, stop_token_ids: tuple[int, ...]
    ) -> tuple[list[list[int]], list[bool]]:
        """Completions of each prompt n times (prompt-major, as OpenAI orders choices)."""
        self.check(prompts, n, max_tokens)
        sequences = [p for p in prompts for _ in range(n)]
        size = self.limits.batch_size
        completions: list[list[int]] = []
        finished: list[bool] = []
        with self.queue.admitted():
            for start in range(0, len(sequences), size):
                # Each call has its own seed, derived from the request's: one seed for every call
                # would give copies of a prompt in different calls the same sample.
                seed = None if req.seed is None else (req.seed + start) % 2**64
                cfg = SamplingConfig(
                    max_new_tokens=max_tokens,
                    temperature=req.temperature,
                    top_k=req.top_k,
                    top_p=req.top_p,
                    stop_token_ids=stop_token_ids,
                    seed=seed,
                )
                with self.queue.turn():
                    out = generate(self.model, sequences[start : start + size], cfg, pad_id=self.tokenizer.pad_id)
                completions += out.completions
                finished += out.finished
        return completions, finished


def _usage(prompts: list[list[int]], n: int, completions: list[list[int]]) -> dict[str, int]:
    # OpenAI counts each prompt once however many choices it has.
    prompt_tokens, completion_tokens = sum(map(len, prompts)), sum(map(len, completions))
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def text_deltas(tokenizer: Any, ids: list[int], final: str) -> list[str]:
    """Pieces of `final` at token boundaries (what a stream sends), concatenating to `final`: a
    piece ends where decoding a token prefix stops being an incomplete UTF-8 sequence."""
    pieces, sent = [], 0
    for k in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:k])
        if text.endswith("\ufffd"):
            continue
        upto = min(len(text), len(final))
        if upto > sent and text[:upto] == final[:upto]:
            pieces.append(final[sent:upto])
            sent = upto
    if sent < len(final):
        pieces.append(final[sent:])
    return pieces


def sse(chunks: list[dict]) -> StreamingResponse:
    """Server-sent events as OpenAI sends them: `data: <json>` per chunk, then `data: [DONE]`."""

    def events() -> Iterator[str]:
        for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


class Guard:
    """ASGI middleware run before FastAPI reads anything: the key (all but /health), then the
    body size, counted on the bytes received (a forged or absent Content-Length does not help)."""

    def __init__(self, app: Any, api_key: str, max_body_bytes: int):
        self.app, self.expected, self.max_body_bytes = app, f"Bearer {api_key}".encode(), max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if not secrets.compare_digest(headers.get(b"authorization", b""), self.expected):
            await openai_error(401, "invalid or missing API key")(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None and not (declared.isdigit() and int(declared) <= self.max_body_bytes):
            await openai_error(413, f"request body over {self.max_body_bytes} bytes")(scope, receive, send)
            return
        received = 0
        limit = self.max_body_bytes

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise HTTPException(413, f"request body over {limit} bytes")
            return message

        await self.app(scope, counted, send)


def _field(loc: tuple) -> str:
    """`messages.0.role` from pydantic's loc, without "body" and union-member tags like `list[str]`."""
    parts = [str(p) for p in loc[1:] if isinstance(p, int) or str(p).isidentifier()]
    parts = [p for p in parts if p not in ("str", "int", "float", "bool", "list", "dict", "none")]
    return ".".join(parts) or "body"


def create_app(engine: LocalEngine, api_key: str, openapi: bool = False) -> FastAPI:
    app = FastAPI(
        title="lmforge local OpenAI-compatible server",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if openapi else None,  # behind the key like everything but /health
    )
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=engine.limits.max_body_bytes)
    app.state.engine = engine

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0]
        name = _field(tuple(first["loc"]))
        if first["type"] == "json_invalid":
            return openai_error(400, "body: not valid JSON", "body")
        if name in UNSUPPORTED:
            return openai_error(400, f"{name}: not supported by serving.local (only {UNSUPPORTED[name]})", name)
        return openai_error(400, f"{name}: {first['msg']}", name)

    @app.exception_handler(RequestError)
    async def refused(_: Request, error: RequestError) -> JSONResponse:
        return openai_error(error.status, error.message, error.param)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        return openai_error(error.status_code, str(error.detail))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "owned_by": "lmforge"}]}

    def check_stream_options(req: SamplingRequest) -> bool:
        if req.stream_options is not None and not req.stream:
            raise RequestError(400, "stream_options: only allowed with stream=true", "stream_options")
        return bool(req.stream_options and req.stream_options.include_usage)

    @app.post("/v1/completions")
    def completions(req: CompletionRequest) -> Any:
        include_usage = check_stream_options(req)
        texts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        engine.check_count(len(texts), req.n)
        tokenizer = engine.tokenizer
        prompts = [tokenizer.encode(text, add_bos=True) for text in texts]
        ids, finished = engine.complete(prompts, req.n, req.max_tokens, req, stop_token_ids=(tokenizer.eos_id,))
        common = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": engine.name}
        choices = []
        for index, (tokens, done) in enumerate(zip(ids, finished)):
            text, stopped = _cut_at_stop(tokenizer.decode(tokens), _stop_strings(req.stop))
            head = texts[index // req.n] if req.echo else ""
            choices.append((index, head, text, tokens, "stop" if done or stopped else "length"))
        usage = _usage(prompts, req.n, ids)
        if not req.stream:
            return {
                **common,
                "object": "text_completion",
                "choices": [
                    {"index": i, "text": head + text, "logprobs": None, "finish_reason": reason}
                    for i, head, text, _, reason in choices
                ],
                "usage": usage,
            }
        chunks = []
        extra = {"usage": None} if include_usage else {}
        for i, head, text, tokens, reason in choices:
            pieces = ([head] if head else []) + text_deltas(tokenizer, tokens, text)
            for piece in pieces:
                choice = {"index": i, "text": piece, "logprobs": None, "finish_reason": None}
                chunks.append({**common, "object": "text_completion", "choices": [choice], **extra})
            done = {"index": i, "text": "", "logprobs": None, "finish_reason": reason}
            chunks.append({**common, "object": "text_completion", "choices": [done], **extra})
        if include_usage:
            chunks.append({**common, "object": "text_completion", "choices": [], "usage": usage})
        return sse(chunks)

    @app.post("/v1/chat/completions")
    def chat(req: ChatRequest) -> Any:
        include_usage = check_stream_options(req)
        if req.max_tokens is not None and req.max_completion_tokens is not None:
            raise RequestError(400, "max_tokens: give max_tokens or max_completion_tokens, not both", "max_tokens")
        max_tokens = next((m for m in (req.max_completion_tokens, req.max_tokens) if m is not None), 128)
        tokenizer = engine.tokenizer
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        prompt = tokenizer.encode_chat(messages, add_generation_prompt=True)[0]  # typed markers stay text
        ids, finished = engine.complete([prompt], req.n, max_tokens, req, stop_token_ids=tuple(tokenizer.stop_ids))
        common = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": engine.name}
        choices = []
        for index, (tokens, done) in enumerate(zip(ids, finished)):
            text, stopped = _cut_at_stop(tokenizer.decode(tokens), _stop_strings(req.stop))
            choices.append((index, text, tokens, "stop" if done or stopped else "length"))
        usage = _usage([prompt], req.n, ids)
        if not req.stream:
            return {
                **common,
                "object": "chat.completion",
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": None,
                        "finish_reason": reason,
                    }
                    for i, text, _, reason in choices
                ],
                "usage": usage,
            }
        chunks = []
        extra = {"usage": None} if include_usage else {}

        def chunk(i: int, delta: dict, reason: str | None) -> dict:
            choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": reason}
            return {**common, "object": "chat.completion.chunk", "choices": [choice], **extra}

        for i, text, tokens, reason in choices:
            chunks.append(chunk(i, {"role": "assistant", "content": ""}, None))
            chunks += [chunk(i, {"content": piece}, None) for piece in text_deltas(tokenizer, tokens, text)]
            chunks.append(chunk(i, {}, reason))
        if include_usage:
            chunks.append({**common, "object": "chat.completion.chunk", "choices": [], "usage": usage})
        return sse(chunks)

    return app


def build_app(cfg: LocalServerConfig) -> tuple[FastAPI, str]:
    """The app and its API key for `cfg` (model loaded here)."""
    from pathlib import Path

    from serving.loading import load_served_model

    if cfg.ckpt is None:
        raise ValueError("ckpt is required: python -m serving.local ckpt=<checkpoint|export dir>")
    for name in ("max_prompts_per_request", "max_tokens_per_request", "max_queued_requests", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}={getattr(cfg, name)} must be >= 1")
    api_key = resolve_api_key(cfg)  # before the model loads: a bad key file fails fast
    torch.set_num_threads(cfg.threads)
    loaded = load_served_model(cfg.ckpt)
    name = cfg.served_model_name or Path(cfg.ckpt).name
    engine = LocalEngine(loaded, name, Limits.from_config(cfg))
    return create_app(engine, api_key, openapi=cfg.openapi), api_key


def main() -> None:
    import hydra
    import uvicorn
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="local", node=LocalServerConfig)

    @hydra.main(config_path=None, config_name="local", version_base="1.3")
    def _main(raw) -> None:
        cfg = LocalServerConfig(**OmegaConf.to_container(raw, resolve=True))
        try:
            app, api_key = build_app(cfg)
        except ValueError as error:
            raise SystemExit(f"serving.local: {error}") from None
        shown = "(as given)" if key_was_given(cfg) else api_key
        print(
            f"lmforge local server for {cfg.ckpt}\n  OpenAI endpoint: http://{cfg.host}:{cfg.port}/v1\n"
            f"  api key: {shown}"
        )
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")

    refuse_key_on_argv(sys.argv[1:])
    sys.argv += ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]
    _main()


if __name__ == "__main__":
    main()
