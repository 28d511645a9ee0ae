"""`python src/train.py stage=dpo peft=lora|qlora` writes standard peft adapters (callbacks/adapter_export.py)
that peft loads onto the HF base, reproducing lmforge's logits and its merged export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TorchAoConfig

from lmforge.checkpoint import load_for_inference
from lmforge.hf import export_hf
from lmforge.lora import ALL_LINEAR
from lmforge.lora.quantize import torchao_config
from lmforge.model import ModelConfig, build_model
from lmforge.tokenizer import Tokenizer
from serving.export import ExportConfig, run_export
from tests.lmforge.test_training import run_train
from tests.support.compose import MICRO_MODEL

# Micro shapes at the tiny config's context length (the preference data is cut at model.max_seq_len).
SHAPE = {**{o.split("=")[0].split(".")[1]: int(o.split("=")[1]) for o in MICRO_MODEL}, "max_seq_len": 256}


def small_dpo_run(tmp_path: Path, tokenizer_dir: str, peft: str, extra: list[str]) -> Path:
    run_train(
        [
            "stage=dpo",
            f"peft={peft}",
            *extra,
            f"tokenizer.path={tokenizer_dir}",
            "trainer=cpu",
            "logger=csv",
            "trainer.max_steps=2",
            "trainer.val_check_interval=2",
            "trainer.limit_val_batches=1",
            "datamodule.tasks.n_train=8",
            "datamodule.tasks.n_val=4",
            "datamodule.batch_size=4",
            "callbacks.last_checkpoint.every_n_train_steps=1",
            "callbacks.progress_bar.refresh_rate=0",
            "optim.lr=1e-2",  # the adapter must move in two steps (lora_B starts at zero)
            "optim.warmup_steps=1",
            f"output_root={tmp_path}/runs",
        ]
    )
    (run_dir,) = (tmp_path / "runs" / "dpo").iterdir()
    return run_dir


@pytest.fixture(scope="module")
def hf_parent(tmp_path_factory, task_tokenizer_dir) -> Path:
    """An HF Llama directory with the task tokenizer: the `init_from` of the QLoRA run."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SHAPE, name="micro"))
    return export_hf(model, tmp_path_factory.mktemp("hf_parent"), Tokenizer.load(task_tokenizer_dir))


@pytest.mark.slow  # two training subprocesses (~30 s each); the in-process parity is test_lora_peft_parity
@pytest.mark.parametrize("peft", ["lora", "qlora"])
def test_dpo_with_peft_writes_adapters_peft_loads(peft, tmp_path, task_tokenizer_dir, hf_parent):
    # lora starts from scratch, so the run writes its base; qlora starts from an HF dir and names it.
    extra = [f"model.{k}={v}" for k, v in SHAPE.items()] if peft == "lora" else [f"init_from={hf_parent}"]
    run_dir = small_dpo_run(tmp_path, task_tokenizer_dir, peft, extra)
    adapters = run_dir / "adapters"
    step_dirs = sorted(p.name for p in adapters.iterdir() if p.name.startswith("step-"))
    assert step_dirs == ["step-000001", "step-000002"]
    for name in (*step_dirs, "final"):
        assert {p.name for p in (adapters / name).iterdir()} == {"adapter_config.json", "adapter_model.safetensors"}
    final = load_file(adapters / "final" / "adapter_model.safetensors")
    assert final.keys() == load_file(adapters / "step-000002" / "adapter_model.safetensors").keys()
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in final

    config = json.loads((adapters / "final" / "adapter_config.json").read_text())
    expected_base = adapters / "base" if peft == "lora" else hf_parent
    assert Path(config["base_model_name_or_path"]) == expected_base.resolve()
    assert (adapters / "base").exists() is (peft == "lora")
    assert (config["task_type"], config["peft_type"], config["r"], config["lora_alpha"]) == ("CAUSAL_LM", "LORA", 8, 16)
    assert set(config["target_modules"]) == set(ALL_LINEAR)

    # peft's side: the HF base named in the config (int8 through transformers' torchao for QLoRA).
    quant = {}
    if peft == "qlora":
        quant["quantization_config"] = TorchAoConfig(torchao_config("int8"), modules_to_not_convert=["lm_head"])
    hf_base = AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"], dtype=torch.float32, **quant)
    ids = torch.randint(0, 512, (2, 24))
    with torch.no_grad():
        base_logits = hf_base(ids).logits
        peft_model = PeftModel.from_pretrained(hf_base, adapters / "final").eval()
        theirs = peft_model(ids).logits
        ours = load_for_inference(run_dir / "checkpoints" / "last.ckpt").model(ids)  # LoRA merged
    assert (ours - theirs).abs().max().item() <= 1e-5
    assert (theirs - base_logits).abs().max().item() > 1e-3  # two steps moved the adapter

    if peft == "lora":  # QLoRA's merge parity (peft re-quantizes) is test_lora_peft_parity's
        merged_dir = run_export(
            ExportConfig(
                ckpt=str(run_dir),
                out=str(tmp_path / "merged"),
                dtype="float32",
                report=False,
                gate="skip",
                gate_reason="parity test of the merge, not a release",
            )
        )
        ours_state = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).state_dict()
        theirs_state = peft_model.merge_and_unload().state_dict()
        assert ours_state.keys() == theirs_state.keys()
        for name, tensor in theirs_state.items():
            torch.testing.assert_close(ours_state[name], tensor, rtol=0, atol=1e-6)
