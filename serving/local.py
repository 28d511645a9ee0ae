"""A small OpenAI-compatible server over our own KV-cache `generate` - for development and tests on CPU.

    python -m serving.local ckpt=<checkpoint|run dir|export dir> [port=8000 api_key=...]

Endpoints: GET /health (no key), GET /v1/models, POST /v1/completions, POST /v1/chat/completions.
Every /v1 route needs `Authorization: Bearer <api_key>`. Requests are served one at a time (a lock
around the model): this is the reference engine clients and tests talk to, not a production server;
SGLang (`serving.launch`) is.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel

from lmforge.checkpoint import LoadedModel
from lmforge.generate import SamplingConfig, generate
from serving.launch import API_KEY_ENV, resolve_api_key

log = logging.getLogger(__name__)


@dataclass
class LocalServerConfig:
    ckpt: str | None = None  # checkpoint, run dir, dense or compressed-tensors export (required)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # None => $LMFORGE_API_KEY, else a random key printed at start
    served_model_name: str | None = None
    max_new_tokens_limit: int = 1024
    threads: int = 2


class SamplingRequest(BaseModel):
    """Fields both endpoints share (OpenAI names and defaults)."""

    model: str | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: str | list[str] | None = None


class CompletionRequest(SamplingRequest):
    prompt: str | list[str]
    max_tokens: int = 16


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage]
    max_tokens: int = 128


def _stop_strings(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cuts = [text.index(s) for s in stops if s and s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


class LocalEngine:
    """Our model + tokenizer behind a lock, speaking token ids in and text out."""

    def __init__(self, loaded: LoadedModel, name: str, max_new_tokens_limit: int):
        if loaded.tokenizer is None:
            raise ValueError("serving.local needs a tokenizer next to the model")
        self.model, self.tokenizer, self.name = loaded.model.eval(), loaded.tokenizer, name
        self.max_new_tokens_limit = max_new_tokens_limit
        self._lock = threading.Lock()

    def complete(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        temperature: float,
        top_p: float,
        top_k: int,
        seed: int | None,
        stop_token_ids: tuple[int, ...],
    ) -> tuple[list[list[int]], list[bool]]:
        if not 0 <= max_tokens <= self.max_new_tokens_limit:
            raise HTTPException(400, f"max_tokens={max_tokens} must be in [0, {self.max_new_tokens_limit}]")
        room = self.model.config.max_seq_len - max(map(len, prompts))
        if room < max_tokens:
            raise HTTPException(
                400,
                f"prompt ({max(map(len, prompts))} tokens) + max_tokens ({max_tokens}) exceeds "
                f"the context length {self.model.config.max_seq_len}",
            )
        try:
            cfg = SamplingConfig(
                max_new_tokens=max_tokens,
                temperature=temperature,
                top_p=top_p,
                top_k=top_k,
                stop_token_ids=stop_token_ids,
                seed=seed,
            )
        except ValueError as error:
            raise HTTPException(400, str(error)) from error
        with self._lock:
            out = generate(self.model, prompts, cfg, pad_id=self.tokenizer.pad_id)
        return out.completions, out.finished


def _usage(prompts: list[list[int]], completions: list[list[int]]) -> dict[str, int]:
    prompt_tokens, completion_tokens = sum(map(len, prompts)), sum(map(len, completions))
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def create_app(engine: LocalEngine, api_key: str) -> FastAPI:
    app = FastAPI(title="lmforge local OpenAI-compatible server")

    def require_key(request: Request) -> None:
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise HTTPException(401, "invalid or missing API key")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models", dependencies=[Depends(require_key)])
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "owned_by": "lmforge"}]}

    @app.post("/v1/completions", dependencies=[Depends(require_key)])
    def completions(req: CompletionRequest) -> dict[str, Any]:
        texts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        tokenizer = engine.tokenizer
        prompts = [tokenizer.encode(text, add_bos=True) for text in texts]
        ids, finished = engine.complete(
            prompts, req.max_tokens, req.temperature, req.top_p, req.top_k, req.seed, stop_token_ids=(tokenizer.eos_id,)
        )
        choices = []
        for index, (tokens, done) in enumerate(zip(ids, finished)):
            text, stopped = _cut_at_stop(tokenizer.decode(tokens), _stop_strings(req.stop))
            choices.append(
                {
                    "index": index,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": "stop" if done or stopped else "length",
                }
            )
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": engine.name,
            "choices": choices,
            "usage": _usage(prompts, ids),
        }

    @app.post("/v1/chat/completions", dependencies=[Depends(require_key)])
    def chat(req: ChatRequest) -> dict[str, Any]:
        tokenizer = engine.tokenizer
        messages = [m.model_dump() for m in req.messages]
        prompt = tokenizer.encode_chat(messages, add_generation_prompt=True)[0]  # typed markers stay text
        ids, finished = engine.complete(
            [prompt],
            req.max_tokens,
            req.temperature,
            req.top_p,
            req.top_k,
            req.seed,
            stop_token_ids=(tokenizer.end_of_turn_id, tokenizer.eos_id),
        )
        text, stopped = _cut_at_stop(tokenizer.decode(ids[0]), _stop_strings(req.stop))
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": engine.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop" if finished[0] or stopped else "length",
                }
            ],
            "usage": _usage([prompt], ids),
        }

    return app


def build_app(cfg: LocalServerConfig) -> tuple[FastAPI, str]:
    """The app and its API key for `cfg` (model loaded here)."""
    from pathlib import Path

    from serving.loading import load_served_model

    if cfg.ckpt is None:
        raise ValueError("ckpt is required: python -m serving.local ckpt=<checkpoint|export dir>")
    torch.set_num_threads(cfg.threads)
    loaded = load_served_model(cfg.ckpt)
    api_key = resolve_api_key(cfg)
    name = cfg.served_model_name or Path(cfg.ckpt).name
    return create_app(LocalEngine(loaded, name, cfg.max_new_tokens_limit), api_key), api_key


def main() -> None:
    import hydra
    import uvicorn
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="local", node=LocalServerConfig)

    @hydra.main(config_path=None, config_name="local", version_base="1.3")
    def _main(raw) -> None:
        cfg = LocalServerConfig(**OmegaConf.to_container(raw, resolve=True))
        app, api_key = build_app(cfg)
        shown = "(as given)" if cfg.api_key or os.environ.get(API_KEY_ENV) else api_key
        print(
            f"lmforge local server for {cfg.ckpt}\n  OpenAI endpoint: http://{cfg.host}:{cfg.port}/v1\n"
            f"  api key: {shown}"
        )
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info")

    sys.argv += ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]
    _main()


if __name__ == "__main__":
    main()
