"""GPU check of the exports on a real SGLang server (run by scripts/gpu_check.sh on a GPU machine).

    python -m serving.sglang_check --sglang-python <deploy venv python> --out <dir> EXPORT_DIR...

For each export: `serving.launch` starts SGLang (quantization auto-detected), then one chat and one
completion request go through the OpenAI API, then `--requests` concurrent completions of exactly
`--new-tokens` tokens (ignore_eos) measure output tokens/s. Results: <out>/sglang_check.json + a table.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from serving.launch import LaunchConfig, launch_server, stop_server


def check_export(export: Path, sglang_python: str, port: int, requests: int, new_tokens: int) -> dict:
    cfg = LaunchConfig(
        export=str(export),
        python=sglang_python,
        port=port,
        api_key="gpu-check",
        mem_fraction_static=0.5,
        health_timeout_s=900,
    )
    started = time.perf_counter()
    result: dict = {"export": str(export), "startup_s": None}
    try:
        process, endpoint, api_key = launch_server(cfg)
    except (RuntimeError, TimeoutError) as error:  # recorded so the other exports are still checked
        return {**result, "ok": False, "error": f"launch failed: {error}"}
    result["startup_s"] = round(time.perf_counter() - started, 1)
    try:
        http = httpx.Client(base_url=endpoint, headers={"Authorization": f"Bearer {api_key}"}, timeout=300)
        model = http.get("/models").json()["data"][0]["id"]
        chat = http.post(
            "/chat/completions",
            json={
                "model": model,
                "max_tokens": 16,
                "temperature": 0,
                "messages": [{"role": "user", "content": "Hello, who are you?"}],
            },
        )
        chat.raise_for_status()
        result["chat_reply"] = chat.json()["choices"][0]["message"]["content"]
        completion = http.post(
            "/completions", json={"model": model, "prompt": "The history of", "max_tokens": 16, "temperature": 0}
        )
        completion.raise_for_status()
        result["completion"] = completion.json()["choices"][0]["text"]
        result["wrong_key_status"] = httpx.get(f"{endpoint}/models", headers={"Authorization": "Bearer no"}).status_code

        def one(i: int) -> int:
            body = {
                "model": model,
                "prompt": f"Request {i}: once upon a time",
                "max_tokens": new_tokens,
                "temperature": 0,
                "ignore_eos": True,
            }
            response = http.post("/completions", json=body)
            response.raise_for_status()
            return response.json()["usage"]["completion_tokens"]

        one(-1)  # warm-up (CUDA graphs, kernels)
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=requests) as pool:
            tokens = sum(pool.map(one, range(requests)))
        seconds = time.perf_counter() - start
        result.update(
            requests=requests,
            output_tokens=tokens,
            seconds=round(seconds, 3),
            tokens_per_s=round(tokens / seconds, 1),
            ok=True,
        )
    except Exception as error:  # recorded per export so the other exports are still checked
        result.update(ok=False, error=f"{type(error).__name__}: {error}")
    finally:
        stop_server(process)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--sglang-python", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    results = [check_export(e, args.sglang_python, args.port, args.requests, args.new_tokens) for e in args.exports]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sglang_check.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| export | ok | startup (s) | output tok/s | chat reply |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {Path(r['export']).name} | {r['ok']} | {r['startup_s']} | {r.get('tokens_per_s', '-')} | "
            f"{r.get('chat_reply', r.get('error', ''))[:40]!r} |"
        )
    raise SystemExit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
