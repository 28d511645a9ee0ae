"""lmforge.client.OpenAIClient against a small OpenAI-style server started on 127.0.0.1 in the
test: chat and completions bodies, the API key header, Retry-After and backoff, giving up,
failing fast on a non-retryable status, timeouts, and input order under the concurrency limit."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lmforge.client import OpenAIClient, OpenAIError


class Server:
    """Records every request; `script` maps a prompt to a list of (status, headers) to answer
    before the real reply; `hold` keeps a request open until released (to force a timeout);
    `peak` is the most requests in flight at once."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: dict[str, list[tuple[int, dict]]] = {}
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
                with owner.lock:
                    owner.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    scripted = owner.script.get(text, [])
                    status, headers = scripted.pop(0) if scripted else (200, {})
                    owner.in_flight += 1
                    owner.peak = max(owner.peak, owner.in_flight)
                try:
                    if text == "hold":
                        owner.release.wait(10)
                    elif text.startswith("slow"):
                        threading.Event().wait(0.05)  # overlap concurrent requests
                finally:
                    # leave the count before the client sees the reply, so its next request never overlaps this one
                    with owner.lock:
                        owner.in_flight -= 1
                if status != 200:
                    return self.send(status, {"error": {"message": f"scripted {status}"}}, headers)
                if self.path.endswith("/chat/completions"):
                    choice = {"index": 0, "message": {"role": "assistant", "content": f"chat:{text}"}}
                else:
                    choice = {"index": 0, "text": f"completion:{text}"}
                self.send(200, {"object": "x", "choices": [choice]}, {})

            def send(self, status, payload, headers):
                data = json.dumps(payload).encode()
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture()
def server():
    s = Server()
    s.thread.start()
    yield s
    s.release.set()
    s.httpd.shutdown()


def test_chat_and_completion_bodies_and_api_key(server):
    client = OpenAIClient(server.url, api_key="sk-test", model="judge-1")
    assert client.chat([{"role": "user", "content": "hi"}], max_tokens=5, temperature=0.3) == "chat:hi"
    assert client.complete("def f():", max_tokens=7) == "completion:def f():"
    chat, completion = server.requests
    assert chat["path"] == "/v1/chat/completions" and completion["path"] == "/v1/completions"
    assert chat["auth"] == completion["auth"] == "Bearer sk-test"
    assert chat["body"] == {
        "model": "judge-1",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.3,
        "max_tokens": 5,
    }
    assert completion["body"]["prompt"] == "def f():" and completion["body"]["max_tokens"] == 7
    OpenAIClient(server.url).complete("x")
    assert server.requests[-1]["auth"] is None  # no key, no header


def test_retry_after_and_exponential_backoff(server, monkeypatch):
    import lmforge.client as client_module

    delays: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", delays.append)  # record the waits, do not wait
    server.script["busy"] = [(429, {"Retry-After": "2"}), (503, {}), (500, {}), (429, {"Retry-After": "100"})]
    client = OpenAIClient(server.url, max_retries=4, backoff_s=0.5, max_backoff_s=5.0)
    assert client.chat([{"role": "user", "content": "busy"}]) == "chat:busy"
    assert len(server.requests) == 5
    # server's Retry-After, then 0.5 * 2^(attempt-1), then Retry-After capped at max_backoff_s
    assert delays == [2.0, 1.0, 2.0, 5.0]


def test_non_retryable_error_fails_at_once_with_url_and_status(server):
    server.script["bad"] = [(400, {})]
    client = OpenAIClient(server.url, max_retries=5, backoff_s=0.001)
    with pytest.raises(OpenAIError, match=r"POST http://127\.0\.0\.1:\d+/v1/completions -> HTTP 400") as err:
        client.complete("bad")
    assert err.value.status == 400 and len(server.requests) == 1


def test_gives_up_after_max_retries(server):
    server.script["busy"] = [(503, {})] * 5
    client = OpenAIClient(server.url, max_retries=1, backoff_s=0.001)
    with pytest.raises(OpenAIError, match="failed after 2 tries: HTTP 503"):
        client.chat([{"role": "user", "content": "busy"}])
    assert len(server.requests) == 2


def test_wrong_key_fails_at_once_naming_the_status(server):
    server.script["hi"] = [(401, {})]
    client = OpenAIClient(server.url, api_key="wrong", max_retries=3, backoff_s=0.001)
    with pytest.raises(OpenAIError, match="HTTP 401") as err:
        client.chat([{"role": "user", "content": "hi"}])
    assert err.value.status == 401 and len(server.requests) == 1


def test_timeout_is_retried_then_reported(server):
    client = OpenAIClient(server.url, timeout=0.2, max_retries=1, backoff_s=0.001)
    with pytest.raises(OpenAIError, match="failed after 2 tries: ReadTimeout"):
        client.complete("hold")
    assert len(server.requests) == 2


def test_many_requests_come_back_in_input_order(server):
    client = OpenAIClient(server.url, max_concurrency=3)
    prompts = [f"slow{i}" for i in range(12)]
    assert client.complete_many(prompts) == [f"completion:{p}" for p in prompts]
    assert client.chat_many([[{"role": "user", "content": p}] for p in prompts]) == [f"chat:{p}" for p in prompts]
    assert 2 <= server.peak <= 3  # concurrent, but never past the limit
    with pytest.raises(ValueError, match="max_concurrency"):
        OpenAIClient(server.url, max_concurrency=0)
