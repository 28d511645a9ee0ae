"""Quantized exports judged on the task: a tiny model that has learned a few held-out tasks by heart
is exported, and each export's task accuracy, chat perplexity and greedy agreement are compared
with the same weights in bf16. A deliberately damaged export must be reported as not within one point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmforge.data.tasks import make_tasks
from lmforge.hf import export_hf
from lmforge.model import ModelConfig, build_model
from lmforge.tokenizer import Tokenizer
from serving.export import ExportConfig, run_export
from serving.task_quality import TaskQualityConfig, run

N = 12
REPO = Path(__file__).resolve().parents[2]
NO_GATE = {"gate": "skip", "gate_reason": "task-quality test on a fixture model"}


@pytest.fixture(scope="module")
def task_checkpoint(task_tokenizer_dir, tmp_path_factory) -> Path:
    """HF dir of a model that answers the first N held-out tasks (fit on their chat transcripts)."""
    torch.manual_seed(0)
    tokenizer = Tokenizer.load(task_tokenizer_dir)
    config = ModelConfig(
        vocab_size=tokenizer.vocab_size, d_model=128, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=256, max_seq_len=96
    )
    model = build_model(config, device="cpu")
    encoded = [
        tokenizer.encode_chat([{"role": "user", "content": t.prompt}, {"role": "assistant", "content": t.response()}])
        for t in make_tasks("mix", N, 0, split="heldout")
    ]
    length = max(len(ids) for ids, _ in encoded)
    ids = torch.full((N, length), tokenizer.pad_id)
    mask = torch.zeros(N, length, dtype=torch.bool)
    for row, (seq, trained) in enumerate(encoded):
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = torch.tensor(trained)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(200):
        logits = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits[mask[:, 1:]], ids[:, 1:][mask[:, 1:]])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05, f"fixture did not learn its tasks (loss {loss.item():.3f})"
    path = tmp_path_factory.mktemp("task_ckpt") / "hf"
    export_hf(model.eval(), path, tokenizer, dtype=torch.float32, manifest={"parent": "tests/serving task fixture"})
    return path


@pytest.fixture(scope="module")
def exports(task_checkpoint, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("task_exports")
    for quant in ("int8wo", "none"):
        run_export(ExportConfig(ckpt=str(task_checkpoint), **NO_GATE, quant=quant, out=str(out / quant), report=False))
    # A damaged copy of the dense export: every linear weight's noise is as large as the weight itself.
    damaged = out / "damaged"
    damaged.mkdir()
    for f in (out / "none").iterdir():
        if f.suffix == ".safetensors":
            tensors = load_file(f)
            gen = torch.Generator().manual_seed(0)
            tensors = {
                k: v + v.std() * torch.randn(v.shape, generator=gen).to(v.dtype) if "proj" in k else v
                for k, v in tensors.items()
            }
            save_file(tensors, damaged / f.name, metadata={"format": "pt"})
        else:
            (damaged / f.name).write_bytes(f.read_bytes())
    return {"int8wo": out / "int8wo", "none": out / "none", "damaged": damaged}


def test_int8wo_keeps_the_task_and_a_damaged_export_is_flagged(task_checkpoint, exports):
    result = run(
        TaskQualityConfig(
            ckpt=str(task_checkpoint), exports=[str(exports[k]) for k in ("none", "int8wo", "damaged")], n=N
        )
    )
    assert result["reference"]["accuracy"] >= 0.75, result["reference"]
    rows = {Path(r["name"]).name: r for r in result["exports"]}
    dense, int8, damaged = rows["none"], rows["int8wo"], rows["damaged"]
    assert dense["greedy_agreement"] == 1.0 and dense["accuracy_delta"] == 0.0  # bf16 export == bf16 weights
    assert int8["within_max_drop"] and int8["greedy_agreement"] >= 0.75
    assert int8["size_bytes"] < dense["size_bytes"]
    assert not damaged["within_max_drop"] and damaged["accuracy_delta"] < -0.25
    assert int8["chat_perplexity"] < 1.05 * int8["chat_perplexity_bf16"]
    assert damaged["chat_perplexity"] > 1.1 * damaged["chat_perplexity_bf16"]
    assert all(r["n"] == N for r in rows.values())


def test_cli_writes_task_quality_json(task_checkpoint, exports, tmp_path):
    proc = subprocess.run(
        [
            sys.executable, "-m", "serving.task_quality", f"ckpt={task_checkpoint}",
            f"exports=[{exports['int8wo']}]", f"n={N}", f"out={tmp_path}",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "task_quality.json").read_text())
    assert data["exports"][0]["n"] == N and "within" in proc.stdout
