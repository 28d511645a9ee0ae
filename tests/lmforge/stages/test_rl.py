"""stage=rl beyond the pure formulas: rollout reuse for num_iterations > 1 (ratio leaves 1, clip
active), the reward-model plug against a direct head computation, and a short Lightning fit of
the composed `stage=rl` config."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.data.prompts import PromptDataModule, RepeatBatchSampler
from lmforge.model import ModelConfig, build_model
from lmforge.rewards import build_reward
from lmforge.stages.rl import RLStage, completion_logps, pack_rollout
from lmforge.tokenizer import Tokenizer


def make_stage(rl_tokenizer_dir, rl_model_cfg, **kw) -> RLStage:
    stage = RLStage(
        model=rl_model_cfg,
        optim={},
        tokenizer_path=rl_tokenizer_dir,
        reward={"task_answer": 1.0, "math_answer": 0.5},
        sampling={"max_new_tokens": 6, "temperature": 1.0, "seed": 0},
        **kw,
    )
    stage.configure_model()
    return stage.train()


def first_batch(rl_tokenizer_dir, batch_size=2):
    data = PromptDataModule(
        rl_tokenizer_dir, tasks={"kind": "mix", "n_train": 4, "n_val": 2, "seed": 0}, batch_size=batch_size
    )
    data.setup()
    return data, next(iter(data.train_dataloader()))


def test_repeat_batch_sampler_yields_each_batch_num_iterations_times():
    batches = list(RepeatBatchSampler(range(5), batch_size=2, drop_last=False, repeats=3))
    assert batches == [[0, 1]] * 3 + [[2, 3]] * 3 + [[4]] * 3
    assert len(RepeatBatchSampler(range(5), batch_size=2, drop_last=False, repeats=3)) == 9


def test_second_iteration_reuses_the_rollout_and_clips(rl_tokenizer_dir, rl_model_cfg):
    stage = make_stage(rl_tokenizer_dir, rl_model_cfg, group_size=4, num_iterations=2, eps_low=0.01, eps_high=0.01)
    _, batch = first_batch(rl_tokenizer_dir)
    # make sure the group has reward variance so the advantages (and the update) are non-zero
    stage.reward_fn = lambda texts, samples: ([float(i % 2) for i in range(len(texts))], {"alt": [0.0] * len(texts)})
    optimizer = torch.optim.SGD(stage.model.parameters(), lr=1.0)
    loss, metrics = stage.compute_loss(batch, "train")
    assert "generation_tokens_per_s" in metrics and metrics["clip_fraction"] == 0 and metrics["ratio_max"] == 1
    first = stage._rollout
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    loss, metrics = stage.compute_loss(batch, "train")
    assert stage._rollout is first and "generation_tokens_per_s" not in metrics  # no new generation
    assert metrics["ratio_max"] != 1 and metrics["clip_fraction"] > 0
    # the ratio is against the log-probs from before the first update
    with torch.no_grad():
        now = completion_logps(stage.model, first.input_ids, first.attn, first.prompt_len)
    assert not torch.allclose(now, first.old_logps)
    stage.compute_loss(batch, "train")
    assert stage._rollout is not first  # used num_iterations times: the next batch generates again


def test_reward_model_plug_scores_like_the_head_on_the_last_token(tmp_path, rl_tokenizer_dir, rl_model_cfg):
    """A stage=reward-shaped checkpoint (backbone + reward_head) scored by the plug, in padded
    batches, equals head(final hidden state of the last token) computed one sequence at a time."""
    tokenizer = Tokenizer.load(rl_tokenizer_dir)
    config = ModelConfig(**rl_model_cfg)
    backbone = build_model(config).eval()
    head = torch.nn.Linear(config.d_model, 1)
    state = {f"model.{k}": v for k, v in backbone.state_dict().items()}
    state |= {"reward_head.weight": head.weight.detach(), "reward_head.bias": head.bias.detach()}
    lineage = {
        "model_config": config.to_dict(),
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "tokenizer_path": rl_tokenizer_dir,
        "stage": "reward",
        "parent": None,
        "peft": None,
    }
    ckpt = tmp_path / "reward.ckpt"
    torch.save({"state_dict": state, "lmforge": lineage}, ckpt)

    reward = build_reward({"reward_model": {"weight": 2.0, "path": str(ckpt), "batch_size": 2}})
    prompts = ["Convert 3 km to m.", "Reverse the letters of: abc", "Sort 3, 1, 2"]
    completions = ["Answer: 3000", "Answer: cba and more words here", "1"]
    total, parts = reward(completions, [{"prompt": p} for p in prompts])
    for prompt, completion, got, weighted in zip(prompts, completions, parts["reward_model"], total):
        ids, _ = tokenizer.encode_chat(
            [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
        )
        with torch.no_grad():
            hidden = backbone(torch.tensor([ids]), return_hidden=True)[0, -1]
            want = float(hidden @ head.weight[0] + head.bias[0])
        assert got == pytest.approx(want, abs=1e-4) and weighted == pytest.approx(2.0 * want, abs=1e-4)


def test_pack_rollout_places_prompts_left_and_completions_right():
    ids, attn, completion_mask, width = pack_rollout([[5, 6, 7], [8]], [[1], [2, 3]], pad_id=0)
    assert width == 3
    assert ids.tolist() == [[5, 6, 7, 1, 0], [0, 0, 8, 2, 3]]
    assert attn.tolist() == [[True, True, True, True, False], [False, False, True, True, True]]
    assert completion_mask.tolist() == [[True, False], [True, True]]


@pytest.mark.slow
def test_stage_rl_fits_from_the_composed_config(tmp_path, rl_tokenizer_dir, rl_model_cfg, compose_train_job):
    from lmforge.training import fit_from_config

    shape = [f"model.{k}={v}" for k, v in rl_model_cfg.items() if k != "name"]
    overrides = [
        "stage=rl",
        "trainer=cpu",
        "logger=csv",
        f"tokenizer.path={rl_tokenizer_dir}",
        "trainer.max_steps=4",
        "trainer.val_check_interval=4",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",
        "module.group_size=4",
        "module.num_iterations=2",
        "module.beta=0.05",
        "module.sampling.max_new_tokens=6",
        "datamodule.batch_size=2",
        "datamodule.tasks.n_train=8",
        "datamodule.tasks.n_val=2",
        "callbacks.progress_bar.refresh_rate=0",
        *shape,
    ]
    manifest = fit_from_config(compose_train_job(overrides, tmp_path))
    assert manifest["status"] == "completed" and manifest["global_step"] == 4 and manifest["stage"] == "rl"
    metrics = manifest["final_metrics"]
    assert {"train/reward", "train/kl", "train/clip_fraction", "train/completion_len", "val/reward"} <= set(metrics)
    assert 0.0 <= metrics["val/accuracy"] <= 1.0  # generated tasks carry their verifier
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/generation_tokens_per_s", "train/train_tokens_per_s", "train/reward_std"} <= set(header)
    assert json.loads((tmp_path / "manifest.json").read_text())["config"]["datamodule"]["repeat_batches"] == 2


def test_val_accuracy_is_the_verifiers_verdict_not_the_reward(rl_tokenizer_dir, rl_model_cfg):
    """A format-only reward gives every well-formed answer 1.0; `val/accuracy` still counts only
    the answers the task's verifier accepts."""
    stage = make_stage(rl_tokenizer_dir, rl_model_cfg)
    stage.reward_fn = build_reward({"reasoning_format": 1.0})
    data = PromptDataModule(rl_tokenizer_dir, tasks={"kind": "mix", "n_train": 4, "n_val": 6, "seed": 0}, batch_size=6)
    data.setup()
    batch = next(iter(data.val_dataloader()))
    right = [i % 3 == 0 for i in range(len(batch))]  # the test decides which answers are correct
    texts = [
        f"<think>work</think>\nAnswer: {s['task']['answer'] if ok else s['task']['answer'] + ' 7'}"
        for s, ok in zip(batch, right, strict=True)
    ]
    stage.sample = lambda batch, sampling, group_size: (None, None, texts, batch, 0.0)
    _, metrics = stage.validation_reward(batch)
    assert metrics["reward"] == 1.0  # every answer is well formed
    assert metrics["accuracy"].item() == pytest.approx(sum(right) / len(right))
    # free-form prompts (a reward model's data) have no verifier: no accuracy, rather than a made-up one
    stage.sample = lambda batch, sampling, group_size: (None, None, texts, [{"prompt": "hi"}] * len(texts), 0.0)
    assert "accuracy" not in stage.validation_reward(batch)[1]


def test_gsm8k_prompt_file_feeds_math_answer(tmp_path, rl_tokenizer_dir):
    lines = [
        json.dumps(
            {"question": "Tom has 3 boxes of 4 pens. How many pens?", "answer": "3 * 4 = <<3*4=12>>12\n#### 12"}
        ),
        "{not json",
        json.dumps({"question": "A shop sells 1,200 cups a day. How many in 2 days?", "answer": "#### 2,400"}),
    ]
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("\n".join(lines) + "\n")
    data = PromptDataModule(rl_tokenizer_dir, train_path=str(path), val_path=str(path), batch_size=2)
    data.setup()
    assert [s["answer"] for s in data.train_set] == ["12", "2,400"]  # the corrupt line is skipped
    reward = build_reward({"math_answer": 1.0})
    total, _ = reward(
        ["3 x 4 = 12\n#### 12", "The answer is 2400.", "#### 2401"],
        [data.train_set[0], data.train_set[1], data.train_set[1]],
    )
    assert total == [1.0, 1.0, 0.0]


def test_finished_completions_are_trained_with_their_stop_token(rl_tokenizer_dir, rl_model_cfg, monkeypatch):
    """generate() drops the stop token; the stage puts <|end|> back for rows that stopped, so
    the policy gradient also reaches the decision to stop. Rewards see the text without it."""
    import lmforge.stages.rl as rl
    from lmforge.generate import GenerationOutput

    stage = make_stage(rl_tokenizer_dir, rl_model_cfg, group_size=2)
    _, batch = first_batch(rl_tokenizer_dir, batch_size=1)
    tokenizer = Tokenizer.load(rl_tokenizer_dir)
    answer = tokenizer.encode("Answer: 7")
    monkeypatch.setattr(rl, "generate", lambda *a, **k: GenerationOutput([answer, answer], [True, False]))
    prompts, completions, texts, _, _ = stage.sample(batch, stage.sampling, 2)
    assert completions == [answer + [tokenizer.end_of_turn_id], answer]
    assert texts == ["Answer: 7", "Answer: 7"]
    assert stage.sampling.stop_token_ids == (tokenizer.end_of_turn_id,)
    with pytest.raises(ValueError, match="stop_token_ids"):
        RLStage(model=rl_model_cfg, optim={}, tokenizer_path=rl_tokenizer_dir, sampling={"stop_token_ids": [1]})


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parity
def test_completion_logps_of_a_padded_batch_equal_each_sequence_alone(rl_model_cfg, temperature):
    model = build_model(ModelConfig(**rl_model_cfg)).eval()
    prompts, completions = [[5, 6, 7, 8], [9, 10], [11]], [[1, 2, 3], [4], [12, 13]]
    ids, attn, completion_mask, width = pack_rollout(prompts, completions, pad_id=0)
    with torch.no_grad():
        got = completion_logps(model, ids, attn, width, temperature)
        for row, (p, c) in enumerate(zip(prompts, completions)):
            logps = torch.log_softmax(model(torch.tensor([p + c]))[0].float() / temperature, -1)
            want = [logps[len(p) - 1 + j, token].item() for j, token in enumerate(c)]
            torch.testing.assert_close(got[row, : len(c)], torch.tensor(want), atol=1e-5, rtol=1e-5)
    assert completion_mask.sum().item() == sum(map(len, completions))


def test_real_gsm8k_test_file_gold_solutions_earn_math_answer(tmp_path, rl_tokenizer_dir, benchmarks):
    """All 1319 real GSM8K test items load as RL prompts; each gold solution, given as the
    completion, earns math_answer 1.0, and the same solution with its final number changed earns 0."""
    path = benchmarks / "gsm8k" / "test.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    data = PromptDataModule(rl_tokenizer_dir, train_path=str(path), val_path=str(path), batch_size=8)
    data.setup()
    assert len(data.train_set) == len(records) == 1319
    reward = build_reward({"math_answer": 1.0})
    gold = [r["answer"] for r in records]
    total, _ = reward(gold, list(data.train_set))
    assert total == [1.0] * len(records)
    wrong = [g.rsplit("#### ", 1)[0] + "#### " + str(int(g.rsplit("#### ", 1)[1].replace(",", "")) + 1) for g in gold]
    total, _ = reward(wrong, list(data.train_set))
    assert total == [0.0] * len(records)


def test_completion_logps_builds_no_dense_mask(rl_model_cfg, monkeypatch):
    """Scoring a left-padded rollout calls SDPA's causal kernel with no [N, 1, T, T] mask."""
    import torch.nn.functional as F

    calls = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, **kw):
        calls.append((attn_mask, is_causal))
        return sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    model = build_model(ModelConfig(**rl_model_cfg)).eval()
    ids, attn, _, width = pack_rollout([[5, 6, 7, 8], [9]], [[1, 2], [3, 4, 5]], pad_id=0)
    with torch.no_grad():
        completion_logps(model, ids, attn, width)
    assert calls and all(mask is None and causal for mask, causal in calls)
