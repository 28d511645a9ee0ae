"""OpenAI-compatible client for any chat/completions server: SGLang, vLLM, `serving.local`, an API.

    client = OpenAIClient("http://127.0.0.1:30000/v1", api_key="...", max_concurrency=8)
    client.chat([{"role": "user", "content": "Hi"}], max_tokens=64)
    client.chat_many([conversation_a, conversation_b])        # at most max_concurrency in flight
    client.complete("def fib(n):", max_tokens=64)

Retries with exponential backoff on connection errors, timeouts, 408/409/429 and 5xx (a server's
`Retry-After` seconds, when sent, replace the computed delay, capped at `max_backoff_s`); any
other HTTP error (a wrong API key: 401) fails at once with the URL, status and the server's
message. Used by the evaluation judge, Constitutional-AI generation and judging
(`lmforge.cai`) and the serving smoke test.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIError(RuntimeError):
    """A request failed for good; the message names the URL and the HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OpenAIClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        max_concurrency: int = 4,
        backoff_s: float = 0.5,
        model: str | None = None,
        max_backoff_s: float = 30.0,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.base_url = base_url.rstrip("/")
        self.max_retries, self.backoff_s, self.default_model = max_retries, backoff_s, model
        self.max_backoff_s = max_backoff_s
        self.max_concurrency = max_concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)
        # Bounds requests in flight across every thread using this client.
        self._slots = threading.BoundedSemaphore(max_concurrency)

    # ----- public API -----
    def chat(
        self,
        messages: Sequence[dict],
        model: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 256,
        **extra,
    ) -> str:
        body = {
            "model": model or self.default_model or "default",
            "messages": list(messages),
            "temperature": temperature,
            "max_tokens": max_tokens,
            **extra,
        }
        return self._post("/chat/completions", body)["choices"][0]["message"]["content"]

    def complete(
        self, prompt: str, model: str | None = None, temperature: float = 0.0, max_tokens: int = 256, **extra
    ) -> str:
        body = {
            "model": model or self.default_model or "default",
            "prompt": prompt,
            "temperature": temperature,
            "max_tokens": max_tokens,
            **extra,
        }
        return self._post("/completions", body)["choices"][0]["text"]

    def chat_many(self, conversations: Sequence[Sequence[dict]], **kwargs) -> list[str]:
        """Answers in input order; at most `max_concurrency` requests in flight."""
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(lambda messages: self.chat(messages, **kwargs), conversations))

    def complete_many(self, prompts: Sequence[str], **kwargs) -> list[str]:
        """Completions in input order; at most `max_concurrency` requests in flight."""
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(lambda prompt: self.complete(prompt, **kwargs), prompts))

    def models(self) -> list[str]:
        response = self._request("GET", "/models", None)
        return [m["id"] for m in response.get("data", [])]

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- transport -----
    def _post(self, path: str, body: dict) -> dict:
        return self._request("POST", path, body)

    def _request(self, method: str, path: str, body: dict | None) -> dict:
        url = f"{self.base_url}{path}"
        last_error, retry_after = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = retry_after if retry_after is not None else self.backoff_s * 2 ** (attempt - 1)
                delay = min(delay, self.max_backoff_s)
                log.warning("retrying %s in %.1fs (%s)", url, delay, last_error)
                time.sleep(delay)  # backoff between retries, not timing
                retry_after = None
            try:
                with self._slots:
                    response = self._http.request(method, path, json=body)
            except httpx.TransportError as err:  # connection refused/reset, timeouts
                last_error = f"{type(err).__name__}: {err}"
                continue
            if response.status_code in RETRYABLE_STATUS:
                last_error = f"HTTP {response.status_code}"
                retry_after = _retry_after_seconds(response)
                continue
            if response.status_code >= 400:
                raise OpenAIError(
                    f"{method} {url} -> HTTP {response.status_code}: {response.text[:300]}", response.status_code
                )
            return response.json()
        raise OpenAIError(f"{method} {url} failed after {self.max_retries + 1} tries: {last_error}")


def _retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After: <seconds>` (the HTTP-date form is rare for APIs and falls back to backoff)."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
