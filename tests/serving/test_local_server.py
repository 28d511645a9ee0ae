"""serving.local over real HTTP on 127.0.0.1: OpenAI response shapes, API-key refusal, and greedy
completions equal to our `generate` called directly on the same weights."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn

from lmforge.generate import SamplingConfig, generate
from serving.local import LocalServerConfig, build_app
from tests.support.memorised import MEMORISED

API_KEY = "test-key-123"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(memorised_checkpoint):
    port = _free_port()
    app, key = build_app(LocalServerConfig(ckpt=str(memorised_checkpoint.path), port=port, api_key=API_KEY))
    assert key == API_KEY
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not uv.started:  # wait for the socket to be bound, not a timing measurement
        if time.monotonic() > deadline:
            raise TimeoutError("uvicorn did not start")
        time.sleep(0.05)
    yield base, app
    uv.should_exit = True
    thread.join(timeout=10)


def _auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_health_and_models(server):
    base, _ = server
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    models = httpx.get(f"{base}/v1/models", headers=_auth()).json()
    assert models["data"][0]["id"] == "memorised"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}])
def test_wrong_or_missing_key_is_refused(server, headers):
    base, _ = server
    for method, path, body in [
        ("GET", "/v1/models", None),
        ("POST", "/v1/completions", {"prompt": "x"}),
        ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ]:
        assert httpx.request(method, f"{base}{path}", json=body, headers=headers).status_code == 401


@pytest.mark.parity
def test_greedy_completion_equals_direct_generate(server, memorised_checkpoint):
    from serving.loading import load_served_model

    base, _ = server
    prompt = "The quick brown fox"
    response = httpx.post(
        f"{base}/v1/completions",
        headers=_auth(),
        timeout=60,
        json={"prompt": [prompt, "Serving a model"], "max_tokens": 12, "temperature": 0},
    )
    body = response.json()
    assert response.status_code == 200 and body["object"] == "text_completion"
    loaded = load_served_model(memorised_checkpoint.path)
    tokenizer = loaded.tokenizer
    prompts = [tokenizer.encode(prompt, add_bos=True), tokenizer.encode("Serving a model", add_bos=True)]
    direct = generate(
        loaded.model,
        prompts,
        SamplingConfig(max_new_tokens=12, temperature=0.0, stop_token_ids=(tokenizer.eos_id,)),
        tokenizer.pad_id,
    )
    assert [c["text"] for c in body["choices"]] == [tokenizer.decode(ids) for ids in direct.completions]
    assert (prompt + body["choices"][0]["text"]).startswith(MEMORISED[0][:40])  # the memorised sentence
    assert body["usage"]["prompt_tokens"] == sum(map(len, prompts))
    assert body["usage"]["completion_tokens"] == sum(map(len, direct.completions))


def test_chat_completion_shape_and_stop_string(server):
    base, _ = server
    body = httpx.post(
        f"{base}/v1/chat/completions",
        headers=_auth(),
        timeout=60,
        json={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, "temperature": 0},
    ).json()
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant" and isinstance(message["content"], str)
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] <= 8


def test_bad_request_is_400(server):
    base, _ = server
    response = httpx.post(f"{base}/v1/completions", headers=_auth(), json={"prompt": "x", "max_tokens": 10_000})
    assert response.status_code == 400
    response = httpx.post(f"{base}/v1/completions", headers=_auth(), json={"prompt": "x", "top_p": 0})
    assert response.status_code == 400


def test_project_client_against_local_server(server):
    """`lmforge.client.OpenAIClient` (as lmforge.eval.judge calls it) talks to serving.local."""
    import lmforge.client as client_module

    base, _ = server
    client = client_module.OpenAIClient(base_url=f"{base}/v1", api_key=API_KEY, timeout=60, max_retries=0)
    reply = client.chat([{"role": "user", "content": "hello"}], temperature=0.0, max_tokens=8)
    expected = httpx.post(
        f"{base}/v1/chat/completions",
        headers=_auth(),
        timeout=60,
        json={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8, "temperature": 0},
    ).json()["choices"][0]["message"]["content"]
    assert reply == expected  # greedy: the client returns exactly the server's message
    wrong = client_module.OpenAIClient(base_url=f"{base}/v1", api_key="wrong", timeout=60, max_retries=0)
    with pytest.raises(Exception, match="401"):
        wrong.chat([{"role": "user", "content": "hello"}], temperature=0.0, max_tokens=8)
