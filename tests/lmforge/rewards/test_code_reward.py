"""`code_tests` (rewards/code.py), the RL reward for code problems, is the eval's own scorer: on
real HumanEval problems read as RL prompts, the canonical solutions earn 1.0 and every completion
in the eval's attack corpus (tests/lmforge/eval/test_humaneval_forgery.py) earns 0.0, so a policy
cannot be rewarded for forging a pass. `val/accuracy` (`verified_correct`) gives the same verdict,
and a composed `stage=rl` run trains on HumanEval with this reward from the command line's overrides."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lmforge.data.prompts import PromptDataModule, read_prompt_jsonl
from lmforge.rewards import build_reward, verified_correct
from lmforge.sandbox import available_isolation
from tests.lmforge.eval.test_humaneval_forgery import ATTACKS

# The five problems whose tests call prompt helpers or the entry point by name, plus two plain ones.
PROBLEMS = [0, 32, 33, 38, 50, 53, 120]


@pytest.fixture(scope="module")
def humaneval_path(benchmarks):
    return benchmarks / "humaneval" / "HumanEval.jsonl.gz"


@pytest.fixture(scope="module")
def samples(humaneval_path, rl_tokenizer_dir):
    data = PromptDataModule(rl_tokenizer_dir, train_path=str(humaneval_path), val_path=str(humaneval_path))
    data.setup()
    assert len(data.train_set) == 164 and {s["task"]["kind"] for s in data.train_set} == {"code"}
    return [data.train_set[i] for i in PROBLEMS]


def test_canonical_solutions_earn_1_and_every_attack_earns_0(samples, humaneval_path):
    canonical = [s["answer"] for s in samples]  # the reader keeps canonical_solution as the reference
    reward = build_reward({"code_tests": {"weight": 1.0, "timeout_s": 10}})
    assert reward(canonical, samples)[0] == [1.0] * len(samples)
    assert verified_correct(canonical, samples) == [1.0] * len(samples)
    names = list(ATTACKS)
    completions = [ATTACKS[name] for name in names for _ in samples]
    total, parts = reward(completions, samples * len(names))
    earned = sorted({name for name, value in zip([n for n in names for _ in samples], total) if value})
    assert earned == [], f"attacks rewarded under isolation={available_isolation()}: {earned}"
    assert parts["code_tests"] == total
    assert verified_correct(completions, samples * len(names)) == [0.0] * len(completions)


def test_a_wrong_body_earns_0_and_a_full_function_from_a_chat_model_earns_1(samples):
    """A chat model often repeats the signature: prompt + a full `def` redefines the function,
    which is how the eval scores it too."""
    problem = samples[0]["task"]
    full_function = problem["prompt"] + problem["answer"]
    wrong = "    return None\n"
    reward = build_reward({"code_tests": 1.0})
    assert reward(["\n" + full_function, wrong], [samples[0], samples[0]])[0] == [1.0, 0.0]


def test_a_non_code_sample_is_one_clear_error(samples):
    with pytest.raises(KeyError, match="HumanEval-style"):
        build_reward({"code_tests": 1.0})(["x"], [{"prompt": "2+2?", "answer": "4"}])


def test_reader_sets_aside_a_broken_code_problem(tmp_path, caplog):
    path = tmp_path / "code.jsonl"
    path.write_text(
        '{"task_id": "a", "prompt": "def f():\\n", "test": "def check(c): assert c() == 1", "entry_point": "f"}\n'
        '{"task_id": "b", "prompt": "def g():\\n", "test": 7, "entry_point": "g"}\n'
    )
    records = read_prompt_jsonl(path)
    assert [r["task_id"] for r in records] == ["a"]
    assert "skipped 1 corrupt lines (first: [2])" in caplog.text


def test_stage_rl_trains_on_humaneval_with_the_code_reward(
    tmp_path, humaneval_path, rl_tokenizer_dir, rl_model_cfg, compose_train_job
):
    from lmforge.training import fit_from_config

    shape = [f"model.{k}={v}" for k, v in rl_model_cfg.items() if k != "name"]
    overrides = [
        "stage=rl",
        "trainer=cpu",
        "logger=csv",
        f"tokenizer.path={rl_tokenizer_dir}",
        f"datamodule.train_path={humaneval_path}",
        f"datamodule.val_path={humaneval_path}",
        "module.reward={code_tests: 1.0}",  # as README.md ("Add a reward") writes it
        "trainer.max_steps=1",
        "trainer.val_check_interval=1",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",
        "module.group_size=2",
        "module.sampling.max_new_tokens=8",
        "datamodule.batch_size=2",
        "datamodule.max_prompt_len=64",
        "callbacks.progress_bar.refresh_rate=0",
        *shape,
    ]
    manifest = fit_from_config(compose_train_job(overrides, tmp_path))
    assert manifest["status"] == "completed" and manifest["global_step"] == 1
    assert manifest["config"]["module"]["reward"] == {"code_tests": 1.0}
    # an untrained policy's 8 tokens pass no tests: the verifier says so rather than the run failing
    assert manifest["final_metrics"]["val/accuracy"] == 0.0
    assert manifest["final_metrics"]["train/reward"] == 0.0


def test_module_reward_on_the_command_line_names_the_rewards(tmp_path, compose_train_job):
    """README's `module.reward='{name: w}'` composes (the node is open to registry names, empty
    means task_answer), an experiment's entries can still be changed one by one, and a misspelt
    reward name fails at validation, before any model is built."""
    from lmforge.config_schema import UnknownConfigKeyError, validate_config

    cfg = compose_train_job(["stage=rl", "module.reward={code_tests: {weight: 1.0, timeout_s: 5}}"], tmp_path)
    assert OmegaConf.to_container(cfg.module.reward) == {"code_tests": {"weight": 1.0, "timeout_s": 5}}
    validate_config(cfg)
    cfg = compose_train_job(["experiment=rl_reward_model", "module.reward.reward_model.path=runs/r"], tmp_path)
    assert cfg.module.reward.reward_model.path == "runs/r" and cfg.module.reward.task_answer == 0.0
    cfg = compose_train_job(["stage=rl", "module.reward.task_answr=1"], tmp_path)
    with pytest.raises(UnknownConfigKeyError, match="module.reward: unknown reward 'task_answr'.*known:"):
        validate_config(cfg)
    with pytest.raises(Exception, match="module.sampling.temprature|temprature"):
        compose_train_job(["stage=rl", "module.sampling.temprature=0.5"], tmp_path)  # other nodes stay closed
