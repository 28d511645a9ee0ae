"""serving.local against a hostile client, over real HTTP on 127.0.0.1: each attack from the
red-team pass (issue #16) is refused with a 4xx naming the field, never a 500, and never by
doing the work first. Streaming, `n` and `echo` behave as OpenAI defines them."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

import serving.local as local
from serving.local import LocalServerConfig, create_app
from tests.serving.local_server_run import running_server, sse_events

API_KEY = "attack-test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
LIMITS = {
    "max_prompts_per_request": 4,
    "max_tokens_per_request": 160,
    "max_queued_requests": 2,
    "batch_size": 1,
    "max_body_bytes": 4096,
    "max_new_tokens_limit": 32,
}
CHAT = '"messages":[{"role":"user","content":"hi"}]'


@pytest.fixture(scope="module")
def server(memorised_checkpoint):
    cfg = LocalServerConfig(ckpt=str(memorised_checkpoint.path), api_key=API_KEY, **LIMITS)
    with running_server(cfg) as (base, app):
        yield base, app


@pytest.fixture
def calls(monkeypatch):
    """Every model call the server makes during a test: the prompts of each `generate`."""
    seen: list[list[list[int]]] = []
    real = local.generate

    def recording(model, prompts, cfg, pad_id):
        seen.append(prompts)
        return real(model, prompts, cfg, pad_id)

    monkeypatch.setattr(local, "generate", recording)
    return seen


def _post(base: str, path: str, raw: str | bytes, headers=AUTH, **kwargs) -> httpx.Response:
    return httpx.post(f"{base}{path}", content=raw, headers=headers, timeout=60, **kwargs)


INVALID = [
    # (path, raw JSON body, the field the 400 must name). Raw text: NaN/Infinity are what a
    # hostile client sends, and httpx's own encoder refuses to write them.
    ("/v1/completions", '{"prompt":"x","temperature":NaN}', "temperature"),
    ("/v1/completions", '{"prompt":"x","temperature":Infinity}', "temperature"),
    ("/v1/completions", '{"prompt":"x","temperature":2.5}', "temperature"),
    ("/v1/completions", '{"prompt":"x","seed":1180591620717411303424}', "seed"),  # 2**70
    ("/v1/completions", '{"prompt":[]}', "prompt"),
    ("/v1/completions", '{"prompt":[17, 18]}', "prompt"),
    ("/v1/completions", '{"prompt":"x","n":0}', "n"),
    ("/v1/completions", '{"prompt":"x","n":true}', "n"),
    ("/v1/completions", '{"prompt":"x","max_tokens":-1}', "max_tokens"),
    ("/v1/completions", '{"prompt":"x","max_tokens":"8"}', "max_tokens"),
    ("/v1/completions", '{"prompt":"x","top_p":0}', "top_p"),
    ("/v1/completions", '{"prompt":"x","top_k":-1}', "top_k"),
    ("/v1/completions", '{"prompt":"x","stop":["a","b","c","d","e"]}', "stop"),
    ("/v1/completions", '{"prompt":"x","logprobs":1}', "logprobs"),
    ("/v1/completions", '{"prompt":"x","best_of":2}', "best_of"),
    ("/v1/completions", '{"prompt":"x","suffix":"y"}', "suffix"),
    ("/v1/completions", '{"prompt":"x","presence_penalty":0.5}', "presence_penalty"),
    ("/v1/completions", '{"prompt":"x","logit_bias":{"5":100}}', "logit_bias"),
    ("/v1/completions", '{"prompt":"x","stream_options":{"include_usage":true}}', "stream_options"),
    ("/v1/completions", '{"prompt":"x","frobnicate":1}', "frobnicate"),
    ("/v1/completions", "not json", "body"),
    ("/v1/completions", "[]", "body"),
    ("/v1/chat/completions", '{"messages":[{"role":"wizard","content":"hi"}]}', "messages.0.role"),
    ("/v1/chat/completions", '{"messages":[{"role":"user","content":[{"type":"text"}]}]}', "messages.0.content"),
    ("/v1/chat/completions", '{"messages":[]}', "messages"),
    ("/v1/chat/completions", "{" + CHAT + ',"logprobs":true}', "logprobs"),
    ("/v1/chat/completions", "{" + CHAT + ',"top_logprobs":2}', "top_logprobs"),
    ("/v1/chat/completions", "{" + CHAT + ',"echo":true}', "echo"),
    ("/v1/chat/completions", "{" + CHAT + ',"max_tokens":4,"max_completion_tokens":4}', "max_tokens"),
    ("/v1/chat/completions", "{" + CHAT + ',"temperature":NaN}', "temperature"),
]


@pytest.mark.parametrize(("path", "raw", "param"), INVALID, ids=[f"{p[4:]}:{f}" for p, _, f in INVALID])
def test_every_invalid_field_is_a_400_naming_it(server, calls, path, raw, param):
    base, _ = server
    response = _post(base, path, raw)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and param in error["message"]
    assert calls == []  # refused before the model ran


def test_thousand_prompts_are_refused_before_tokenizing_or_generating(server, calls, monkeypatch):
    base, app = server
    encoded = []
    engine = app.state.engine
    real_encode = engine.tokenizer.encode
    monkeypatch.setattr(engine.tokenizer, "encode", lambda *a, **k: encoded.append(1) or real_encode(*a, **k))
    # 3 kB: under the body limit, so the prompt count is what refuses it
    response = _post(base, "/v1/completions", json.dumps({"prompt": [""] * 1000, "max_tokens": 4}))
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"
    assert "1000 prompt(s)" in response.json()["error"]["message"]
    assert encoded == [] and calls == []
    # n multiplies: 1 prompt x n=5 is 5 sequences, over the limit of 4.
    response = _post(base, "/v1/completions", json.dumps({"prompt": "hello", "n": 5, "max_tokens": 4}))
    assert response.status_code == 400 and response.json()["error"]["param"] == "n"


def test_total_tokens_per_request_is_capped(server, calls):
    base, _ = server
    # 4 prompts x 32 new tokens = 128, plus the prompt tokens: over the 160-token budget.
    body = {"prompt": ["The quick brown fox jumps"] * 4, "max_tokens": 32}
    response = _post(base, "/v1/completions", json.dumps(body))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "max_tokens" and "160" in response.json()["error"]["message"]
    assert calls == []
    body["max_tokens"] = 8  # within budget: served, one sequence per model call (batch_size=1)
    response = _post(base, "/v1/completions", json.dumps(body))
    assert response.status_code == 200 and len(response.json()["choices"]) == 4
    assert [len(batch) for batch in calls] == [1, 1, 1, 1]


def test_requests_take_turns_and_the_queue_is_bounded(server, monkeypatch):
    """A 3-prompt request A holds the model in its first call while B (1 prompt) arrives: B runs
    second, not after all of A; a third concurrent request C is turned away with 429."""
    base, app = server
    engine = app.state.engine
    order: list[str] = []
    release = threading.Event()
    started = threading.Event()
    real = local.generate

    def gated(model, prompts, cfg, pad_id):
        who = engine.tokenizer.decode(prompts[0][1:])
        order.append(who)
        if who == "first" and not started.is_set():
            started.set()
            assert release.wait(30)
        return real(model, prompts, cfg, pad_id)

    monkeypatch.setattr(local, "generate", gated)
    results = {}

    def send(name, body):
        results[name] = _post(base, "/v1/completions", json.dumps(body))

    a = threading.Thread(target=send, args=("A", {"prompt": ["first"] * 3, "max_tokens": 2, "temperature": 0}))
    a.start()
    assert started.wait(30)
    b = threading.Thread(target=send, args=("B", {"prompt": "second", "max_tokens": 2, "temperature": 0}))
    b.start()
    deadline = time.monotonic() + 30
    while len(engine.queue._turns) < 2:  # B is queued behind A's running call
        assert time.monotonic() < deadline, "B never queued"
        time.sleep(0.01)
    send("C", {"prompt": "third", "max_tokens": 2})
    assert results["C"].status_code == 429 and results["C"].json()["error"]["type"] == "rate_limit_error"
    release.set()
    a.join(60)
    b.join(60)
    assert results["A"].status_code == results["B"].status_code == 200
    assert order == ["first", "second", "first", "first"]


def _raw_status(port: int, head: bytes) -> bytes:
    """Status of a request whose headers alone must get it refused: no body is sent (the server
    would leave it unread, and closing on unread bytes resets the connection, dropping the reply)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        return sock.makefile("rb").readline().split(b" ", 2)[1]


def test_body_limit_holds_on_bytes_received(server, calls):
    base, _ = server
    port = int(base.rsplit(":", 1)[1])
    big = json.dumps({"prompt": "x" * 10_000}).encode()
    head = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n".encode()
    # Content-Length: -1 (the bypass of the old check) and an honest but too large length: refused
    # on the headers. A chunked body, with no length at all: refused on the bytes received.
    assert _raw_status(port, head + b"Content-Length: -1\r\n\r\n") in (b"400", b"413")
    assert _raw_status(port, head + f"Content-Length: {len(big)}\r\n\r\n".encode()) == b"413"

    def chunks():
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    response = httpx.post(f"{base}/v1/completions", content=chunks(), headers=AUTH, timeout=60)
    assert response.status_code == 413 and "4096" in response.json()["error"]["message"]
    assert calls == []


def test_docs_and_schema_are_off_and_behind_the_key(server):
    base, app = server
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(f"{base}{path}").status_code == 401  # no key: nothing, not even a 404
        assert httpx.get(f"{base}{path}", headers=AUTH).status_code == 404  # off by default
    with TestClient(create_app(app.state.engine, API_KEY, openapi=True)) as client:
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/openapi.json", headers=AUTH).json()["info"]["title"].startswith("lmforge")
        assert client.get("/docs", headers=AUTH).status_code == 404
        assert client.get("/health").json() == {"status": "ok"}


def _stream(base: str, path: str, body: dict) -> tuple[httpx.Response, list[str]]:
    with httpx.stream("POST", f"{base}{path}", json=body, headers=AUTH, timeout=60) as response:
        return response, sse_events(response.iter_lines())


def test_chat_stream_is_openai_sse_and_equals_the_plain_reply(server):
    base, _ = server
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 12, "temperature": 0}
    plain = _post(base, "/v1/chat/completions", json.dumps(body)).json()
    response, events = _stream(
        base, "/v1/chat/completions", body | {"stream": True, "stream_options": {"include_usage": True}}
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    choices = [c["choices"][0] for c in chunks if c["choices"]]
    assert choices[0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["finish_reason"] for c in choices[:-1]] == [None] * (len(choices) - 1)
    assert choices[-1]["finish_reason"] == plain["choices"][0]["finish_reason"]
    streamed = "".join(c["delta"].get("content", "") for c in choices)
    assert streamed == plain["choices"][0]["message"]["content"] and len(choices) > 3  # several deltas
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
    assert all(c["usage"] is None for c in chunks[:-1])


def test_completion_stream_n_and_echo(server):
    base, _ = server
    prompts = ["The quick brown fox", "Serving a model"]
    body = {"prompt": prompts, "max_tokens": 6, "temperature": 0, "n": 2}
    plain = _post(base, "/v1/completions", json.dumps(body)).json()
    texts = [c["text"] for c in plain["choices"]]
    assert [c["index"] for c in plain["choices"]] == [0, 1, 2, 3]
    assert texts[0] == texts[1] and texts[2] == texts[3] and texts[0] != texts[2]  # prompt-major, greedy copies
    assert plain["usage"]["completion_tokens"] >= 4 and plain["usage"]["prompt_tokens"] < 20  # prompts counted once
    echoed = _post(base, "/v1/completions", json.dumps(body | {"echo": True})).json()
    assert [c["text"] for c in echoed["choices"]] == [prompts[i // 2] + texts[i] for i in range(4)]
    response, events = _stream(base, "/v1/completions", body | {"stream": True})
    assert events[-1] == "[DONE]"
    streamed = ["", "", "", ""]
    for event in events[:-1]:
        chunk = json.loads(event)
        assert chunk["object"] == "text_completion" and "usage" not in chunk
        streamed[chunk["choices"][0]["index"]] += chunk["choices"][0]["text"]
    assert streamed == texts


def test_seeded_sampling_is_reproducible_and_each_call_has_its_own_seed(server, monkeypatch):
    base, _ = server
    seeds = []
    real = local.generate
    monkeypatch.setattr(local, "generate", lambda m, p, cfg, pad_id: seeds.append(cfg.seed) or real(m, p, cfg, pad_id))
    body = {"prompt": "The", "max_tokens": 12, "temperature": 1.0, "n": 4, "seed": 2**63 - 1}
    first = _post(base, "/v1/completions", json.dumps(body)).json()
    again = _post(base, "/v1/completions", json.dumps(body)).json()
    assert [c["text"] for c in first["choices"]] == [c["text"] for c in again["choices"]]
    # One seed for every call would give the n copies (one per call at batch_size=1) one sample.
    assert seeds[:4] == [2**63 - 1, 2**63, 2**63 + 1, 2**63 + 2] and seeds[4:] == seeds[:4]
