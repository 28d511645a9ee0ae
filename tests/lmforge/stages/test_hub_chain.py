"""Starting from a Hub folder as `python src/train.py init_from=<dir>` does: model=auto takes its
config.json, the run inherits its tokenizer and chat template, SFT -> DPO -> RL train through it
and the export carries the same tokenizer files. An explicit model= of another shape, or a
sequence past max_seq_len, is an error, never a warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from lmforge.checkpoint import ShapeMismatchError
from lmforge.data.chat import ChatDataModule
from lmforge.data.labels import IGNORE_INDEX
from lmforge.init_from import InitFromError, default_model_auto, resolve_init_from
from lmforge.model import ModelConfig, build_model
from lmforge.stages.sft import SFTStage
from lmforge.tokenizer import Tokenizer
from tests.support.compose import REPO, TRAIN_SCRIPT, compose_job

FAST = [
    "trainer=cpu",
    "logger=csv",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=1",
    "callbacks.progress_bar.refresh_rate=0",
    "datamodule.batch_size=2",
    "datamodule.tasks.n_train=8",
    "datamodule.tasks.n_val=2",
]
HUB_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")


def train(overrides: list[str], run_dir: Path) -> dict:
    """What src/train.py does with a command line: model=auto by default, init_from resolved, fit."""
    from lmforge.training import fit_from_config

    overrides = default_model_auto(overrides)
    cfg = compose_job(overrides, run_dir)
    resolve_init_from(cfg, overrides)
    return fit_from_config(cfg)


@pytest.mark.slow
def test_llama3_standin_trains_sft_dpo_rl_through_its_template_and_exports_its_files(llama3_dir, tmp_path):
    from serving.export import ExportConfig, run_export

    source = Tokenizer.load(llama3_dir)
    sft = train(["stage=sft", f"init_from={llama3_dir}", *FAST], tmp_path / "sft")
    parent_shape = json.loads((llama3_dir / "config.json").read_text())
    assert sft["model_config"]["d_model"] == parent_shape["hidden_size"]
    assert sft["model_config"]["rope_scaling"]["rope_type"] == "llama3" and sft["model_config"]["max_seq_len"] == 256
    assert sft["tokenizer_fingerprint"] == source.fingerprint and sft["tokenizer_path"] == str(llama3_dir)
    # The data side takes its length from the imported model.
    assert sft["config"]["datamodule"]["max_seq_len"] == 256 and sft["final_metrics"]["train/assistant_tokens"] > 0
    # The run dir keeps the Hub files as they came, so every later stage inherits them.
    for name in HUB_FILES:
        assert (tmp_path / "sft" / "tokenizer" / name).read_bytes() == (llama3_dir / name).read_bytes()

    dpo = train(["stage=dpo", f"init_from={tmp_path / 'sft'}", *FAST], tmp_path / "dpo")
    assert dpo["status"] == "completed" and dpo["tokenizer_fingerprint"] == source.fingerprint
    rl = train(
        [
            "stage=rl",
            f"init_from={tmp_path / 'dpo'}",
            *[o for o in FAST if not o.startswith("datamodule.batch_size")],
            "datamodule.batch_size=1",
            "module.group_size=2",
            "module.sampling.max_new_tokens=4",
        ],
        tmp_path / "rl",
    )
    assert rl["status"] == "completed" and rl["model_config"] == sft["model_config"]

    export = ExportConfig(ckpt=str(tmp_path / "rl"), out=str(tmp_path / "export"), report=False)
    export.gate, export.gate_reason = "skip", "unit test of the tokenizer files"
    out = run_export(export)
    for name in HUB_FILES:
        assert (out / name).read_bytes() == (llama3_dir / name).read_bytes(), name
    assert json.loads((out / "config.json").read_text())["rope_scaling"]["rope_type"] == "llama3"


def test_sft_labels_cover_the_imported_templates_assistant_turns_only(llama2_dir):
    tokenizer = Tokenizer.load(llama2_dir)
    datamodule = ChatDataModule(str(llama2_dir), tasks={"n_train": 4, "n_val": 2}, max_seq_len=128, batch_size=2)
    datamodule.setup()
    conversation = datamodule.conversations("train")[0]
    example = datamodule.train_set[0]
    trained = [label for label in example.labels if label != IGNORE_INDEX]
    reply = conversation[-1]["content"].strip()
    assert tokenizer.decode(trained, skip_special_tokens=False) == f"{reply} </s>"
    assert trained[-1] == tokenizer.end_of_turn_id == 2


def test_dpo_labels_cover_the_reply_and_its_eot_id_only(llama3_dir):
    from lmforge.data.preference import encode_completion

    tokenizer = Tokenizer.load(llama3_dir)
    prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 3 + 4?"}]
    for reply in ("Answer: 7", " Answer: 8 "):
        encoded = encode_completion(tokenizer, prompt, [{"role": "assistant", "content": reply}], 256)
        trained = [label for label in encoded.labels if label != IGNORE_INDEX]
        assert tokenizer.decode(trained, skip_special_tokens=False) == reply.strip() + "<|eot_id|>"


def test_explicit_model_of_another_shape_is_an_error_naming_both(llama3_dir, tmp_path):
    overrides = default_model_auto(["stage=sft", "model=tiny", f"init_from={llama3_dir}"])
    assert "model=auto" not in overrides
    cfg = compose_job(overrides, tmp_path)
    with pytest.raises(InitFromError) as err:
        resolve_init_from(cfg, overrides)
    message = str(err.value)
    assert "model=tiny" in message and "d_model=128" in message and "d_model=64" in message and "\n" not in message
    # The stage itself refuses too (a config composed without src/train.py).
    with pytest.raises(ShapeMismatchError, match="d_model=128 vs 64"):
        SFTStage(model=dict(cfg.model), optim={}, tokenizer_path=str(llama3_dir), init_from=str(llama3_dir))


def test_cli_refuses_a_mismatched_model_in_one_line(llama3_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    # memory_check=false: the preflight would otherwise refuse 125m's budget on this machine first.
    args = ["stage=sft", "model=125m", f"init_from={llama3_dir}", f"hydra.run.dir={tmp_path}", "memory_check=false"]
    proc = subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model=125m is 125m (d_model=768") and "d_model=64" in last, proc.stderr[-2000:]


def test_model_auto_needs_init_from(tmp_path):
    cfg = compose_job(["model=auto"], tmp_path)
    with pytest.raises(InitFromError, match="init_from"):
        resolve_init_from(cfg, ["model=auto"])


def test_forward_refuses_sequences_longer_than_max_seq_len():
    model = build_model(ModelConfig(max_seq_len=16, name="t"))
    model(torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="longer than model.max_seq_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = model.new_kv_cache(1, 32)
    model(torch.zeros(1, 10, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="17 positions"):
        model(torch.zeros(1, 7, dtype=torch.long), kv_cache=cache)


@pytest.mark.parametrize("model_choice", [["model=7b"], []], ids=["model=7b", "model=auto"])
def test_7b_dpo_from_a_7b_config_builds_on_meta_with_the_right_count(model_choice, llama2_dir, tmp_path):
    """`model=7b stage=dpo init_from=<7B folder>` composes and builds on meta: nothing allocated."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.support.hub_standins import llama2_7b_config_dir

    folder = llama2_7b_config_dir(tmp_path / "llama-2-7b", llama2_dir)
    overrides = default_model_auto(["stage=dpo", *model_choice, f"init_from={folder}"])
    cfg = compose_job(overrides, tmp_path / "run")
    resolve_init_from(cfg, overrides)
    assert cfg.tokenizer.path == str(folder) and cfg.datamodule.max_seq_len == 4096
    module = instantiate(cfg.module, _convert_="all")
    assert module.model is None and module.model_config.name == ("7b" if model_choice else "llama-2-7b")
    model = build_model(module.model_config, device="meta")
    count = sum(p.numel() for p in model.parameters())
    with torch.device("meta"):
        reference = LlamaForCausalLM(LlamaConfig(**json.loads((folder / "config.json").read_text())))
    assert count == 6_738_415_616 == module.model_config.num_params() == sum(p.numel() for p in reference.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("standin", ["llama3_dir", "llama2_dir"])
def test_hub_standin_sft_then_dpo_with_lora_then_export(standin, request, tmp_path):
    """The issue's done-means chain: stage=sft, stage=dpo peft=lora, export; the adapter the DPO
    run wrote loads in peft on its base with the logits of the merged export."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from serving.export import ExportConfig, run_export

    source = request.getfixturevalue(standin)
    train(["stage=sft", f"init_from={source}", *FAST], tmp_path / "sft")
    dpo = train(["stage=dpo", "peft=lora", f"init_from={tmp_path / 'sft'}", *FAST], tmp_path / "dpo")
    assert dpo["status"] == "completed" and dpo["config"]["peft"]["name"] == "lora"
    export = ExportConfig(ckpt=str(tmp_path / "dpo"), out=str(tmp_path / "export"), report=False, dtype="float32")
    export.gate, export.gate_reason = "skip", "unit test of the done-means chain"
    out = run_export(export)
    for name in HUB_FILES:
        assert (out / name).read_bytes() == (source / name).read_bytes(), name

    adapter = tmp_path / "dpo" / "adapters" / "final"
    base_dir = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, adapter).eval()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.tensor([Tokenizer.load(source).encode_chat([{"role": "user", "content": "What is 3 + 4?"}], True)[0]])
    with torch.no_grad():
        assert (with_adapter(ids).logits - merged(ids).logits).abs().max().item() <= 1e-4
