"""serving.client against a flaky loopback server: retries 503s, fails fast on 401, keeps
answers in order under a concurrency limit."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from serving.client import OpenAIClient, OpenAIError


class _Flaky(BaseHTTPRequestHandler):
    calls = 0
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with _Flaky.lock:
            _Flaky.calls += 1
            calls = _Flaky.calls
            _Flaky.in_flight += 1
            _Flaky.peak = max(_Flaky.peak, _Flaky.in_flight)
        try:
            status, payload = self._answer(body, calls)
        finally:
            # Leave the in-flight count before the client can see the reply, so the client's
            # next request never overlaps this one in the count.
            with _Flaky.lock:
                _Flaky.in_flight -= 1
        self._send(status, payload)

    def _answer(self, body, calls):
        if self.headers.get("Authorization") != "Bearer good":
            return 401, {"error": "bad key"}
        if body["messages"][0]["content"] == "flaky" and calls % 3 != 0:
            return 503, {"error": "busy"}
        threading.Event().wait(0.05)  # hold the request so concurrent ones overlap
        return 200, {"choices": [{"message": {"role": "assistant", "content": body["messages"][0]["content"].upper()}}]}

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def base_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Flaky.calls = _Flaky.peak = 0
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_retries_until_the_server_answers(base_url):
    client = OpenAIClient(base_url, api_key="good", max_retries=3, backoff_s=0.01)
    assert client.chat([{"role": "user", "content": "flaky"}]) == "FLAKY"
    assert _Flaky.calls == 3


def test_gives_up_after_max_retries(base_url):
    client = OpenAIClient(base_url, api_key="good", max_retries=1, backoff_s=0.01)
    with pytest.raises(OpenAIError, match="failed after 2 tries: HTTP 503"):
        client.chat([{"role": "user", "content": "flaky"}])


def test_wrong_key_fails_at_once_naming_the_status(base_url):
    client = OpenAIClient(base_url, api_key="bad", max_retries=3, backoff_s=0.01)
    with pytest.raises(OpenAIError, match="HTTP 401") as err:
        client.chat([{"role": "user", "content": "hi"}])
    assert err.value.status == 401 and _Flaky.calls == 1


def test_chat_many_keeps_order_within_the_concurrency_limit(base_url):
    client = OpenAIClient(base_url, api_key="good", max_concurrency=2)
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(8)]
    assert client.chat_many(prompts) == [f"Q{i}" for i in range(8)]
    assert 1 <= _Flaky.peak <= 2
