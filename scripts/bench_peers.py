"""lmforge against its peers, in lockstep, on token-identical batches, in one process.

Each task builds one random-init Llama shape twice from the same weights (lmforge's
`Transformer` and HF's `LlamaForCausalLM`, via `lmforge.hf.hf_state_dict`), then alternates
one lmforge step and one peer step on the same token ids (the order flips every step, so load
from other processes hits both alike). Same optimiser (torch AdamW, same lr/betas/eps, no
weight decay) and precision on both sides. Printed per task: parity (abs diff of the step-0
loss, and the largest over all steps; GRPO: on TRL's step-0 batch, loss and completion log-probs;
generation: whether the greedy tokens are identical) and the speed ratio
peer time / lmforge time (>1: lmforge faster) as median with min-max over the timed steps.

  pretrain  lmforge forward + cross-entropy + AdamW   vs a plain HF LlamaForCausalLM loop,
                                                      and vs litgpt's GPT in the same loop
  sft       lmforge masked cross-entropy step         vs TRL SFTTrainer.training_step
  dpo       lmforge dpo_loss (frozen reference)       vs TRL DPOTrainer.training_step (sigmoid)
  grpo      lmforge sample + policy_loss step         vs TRL GRPOTrainer.training_step (beta 0)
  generate  lmforge.generate greedy (batch 1 and 8)   vs HF generate (greedy, no stop token)

With --compile, give --warmup enough steps to compile every decode bucket (batch and cache
rounded up to powers of two) or compile time lands in the timed steps. Generation then also sets
`freeze_weights` (its weights are fixed, as in eval and serving); GRPO does not, since its
policy changes every step.

The peers live in their own environment, made on first use: `.venv-peers`, a venv that sees the
project's .venv (torch, transformers, lmforge) through a .pth file and adds TRL and litgpt
(without its dependencies: its huggingface_hub pin is older than transformers needs). The
project's .venv is never modified.

    python scripts/bench_peers.py                         # default shape (d_model 256, seq 512)
    python scripts/bench_peers.py --tiny                  # smoke size, seconds
    python scripts/bench_peers.py --tasks pretrain generate --compile
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS_VENV = ROOT / ".venv-peers"
TRL_PIN = "trl==1.16.0"
LITGPT_PIN = "litgpt==0.5.13"
TASKS = ("pretrain", "sft", "dpo", "grpo", "generate")


# ---------------------------------------------------------------- peer environment
def ensure_peers_env() -> None:
    """Re-run this script inside .venv-peers (made here on first use) unless TRL imports already."""
    import lmforge  # noqa: F401  (before TRL: it quiets torchao's CPU-only notices, which TRL's imports trigger)

    try:
        import litgpt  # noqa: F401
        import trl  # noqa: F401

        return
    except ImportError:
        pass
    python = PEERS_VENV / "bin" / "python"
    if os.environ.get("LMFORGE_BENCH_PEERS_CHILD"):
        sys.exit(f"error: {PEERS_VENV} lacks TRL or litgpt; remove it and rerun to rebuild it")
    if not python.exists():
        print(f"making {PEERS_VENV} ({TRL_PIN} beside the project's torch)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        project = ROOT / ".venv" if (ROOT / ".venv").is_dir() else Path(sys.prefix)
        site = next(project.glob("lib/python*/site-packages"))
        peer_site = next(PEERS_VENV.glob("lib/python*/site-packages"))
        # addsitedir also runs the .venv's own .pth files (the editable lmforge install).
        (peer_site / "lmforge_project_venv.pth").write_text(f"import site; site.addsitedir({str(site)!r})\n")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", TRL_PIN], check=True)
        # litgpt's own pins would replace the huggingface_hub transformers needs; its model code
        # runs on the project's packages, so it goes in without dependencies.
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", LITGPT_PIN], check=True)
    env = {**os.environ, "LMFORGE_BENCH_PEERS_CHILD": "1"}
    sys.exit(subprocess.run([str(python), *sys.argv], env=env).returncode)


# ---------------------------------------------------------------- shared pieces
def build_pair(args):
    """(lmforge Transformer, HF LlamaForCausalLM) with identical weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lmforge.hf import hf_state_dict, to_hf_config
    from lmforge.model import ModelConfig, build_model

    cfg = ModelConfig(
        vocab_size=args.vocab,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.heads,
        n_kv_heads=args.kv_heads,
        ffn_dim=args.ffn,
        max_seq_len=max(args.seq, args.prompt_len + args.new_tokens) + 8,
    )
    torch.manual_seed(0)
    ours = build_model(cfg).to(args.device)
    hf_cfg = {k: v for k, v in to_hf_config(cfg).items() if k not in ("architectures", "lmforge_model_name")}
    peer = LlamaForCausalLM(LlamaConfig(**hf_cfg, attn_implementation="sdpa"))
    peer.load_state_dict(hf_state_dict(ours), strict=False)
    if cfg.tie_embeddings:
        peer.tie_weights()
    peer.generation_config.eos_token_id = None  # no stop token on either side: fixed-length greedy
    return ours, peer.to(args.device)


def adamw(params, args):
    import torch

    return torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def lockstep(ours_step, peer_step, steps: int, warmup: int, device: str):
    """Alternate the two steps; returns (step-0 loss diff, max loss diff over all steps,
    [peer/ours time ratios]). The later steps check that both stay in lockstep after updates
    (DPO's step-0 loss is log 2 on both sides, whatever the model)."""
    ratios, diffs = [], []
    for step in range(steps + warmup):
        order = [("ours", ours_step), ("peer", peer_step)]
        if step % 2:
            order.reverse()
        took, losses = {}, {}
        for name, fn in order:
            sync(device)
            start = time.perf_counter()
            losses[name] = fn(step)
            sync(device)
            took[name] = time.perf_counter() - start
        diffs.append(abs(losses["ours"] - losses["peer"]))
        if step >= warmup:
            ratios.append(took["peer"] / took["ours"])
    return diffs[0], max(diffs), ratios


def report(task: str, parity: str, ratios: list[float]) -> dict:
    row = {
        "task": task,
        "parity": parity,
        "ratio": statistics.median(ratios),
        "lo": min(ratios),
        "hi": max(ratios),
    }
    print(f"{task:<12} {parity:<30} {row['ratio']:>6.2f}x  ({row['lo']:.2f}-{row['hi']:.2f})", flush=True)
    return row


def token_batches(args, n: int, width: int, seed: int):
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, args.vocab, (args.batch, width), generator=gen) for _ in range(n)]


def words(ids: list[int]) -> str:
    return " ".join("<eos>" if i == 1 else f"t{i}" for i in ids)


def shift_labels(labels):
    """lmforge's labels sit at the predicting position (labels[t] = the token at t + 1)."""
    import torch

    return torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], -100)], dim=1)


def hf_tokenizer(vocab: int):
    """A word-level fast tokenizer with `vocab` ids (TRL needs a processing_class; the batches
    are token ids already, so its vocabulary is never used to encode text)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<pad>": 0, "<eos>": 1, "<bos>": 2, **{f"t{i}": i for i in range(3, vocab)}}
    tok = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>")


def compile_like_the_stage(model) -> None:
    """What `compile=true` does to a stage's model: oneDNN linears on CPU, each block compiled."""
    from lmforge.stages.base import BaseStage

    BaseStage.compile_blocks(model)


def lmforge_cross_entropy(args):
    """The pretraining stage's loss, compiled under --compile as under compile=true."""
    from lmforge.losses import token_cross_entropy

    return token_cross_entropy(args.compile)


# ---------------------------------------------------------------- tasks
def bench_pretrain(args):
    import torch.nn.functional as F

    ours, peer = build_pair(args)
    if args.compile:
        compile_like_the_stage(ours)
    ours_loss = lmforge_cross_entropy(args)
    opt_ours, opt_peer = adamw(ours.parameters(), args), adamw(peer.parameters(), args)
    batches = [b.to(args.device) for b in token_batches(args, args.steps + args.warmup, args.seq + 1, 1)]

    def ours_step(i):
        ids = batches[i]
        loss = ours_loss(ours(ids[:, :-1]), ids[:, 1:])
        loss.backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)
        return loss.item()

    def peer_step(i):  # the plain HF loop: model(...).logits, cross-entropy, AdamW
        ids = batches[i]
        logits = peer(input_ids=ids[:, :-1]).logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
        loss.backward()
        opt_peer.step()
        opt_peer.zero_grad(set_to_none=True)
        return loss.item()

    a, b, ratios = lockstep(ours_step, peer_step, args.steps, args.warmup, args.device)
    return report("pretrain", f"loss {a:.0e} (all steps {b:.0e})", ratios)


def bench_pretrain_litgpt(args):
    """The same pretraining step against litgpt's `GPT` (weights via litgpt's own HF converter)."""
    import torch.nn.functional as F
    from litgpt.config import Config
    from litgpt.model import GPT
    from litgpt.scripts.convert_hf_checkpoint import copy_weights_hf_llama

    ours, hf = build_pair(args)
    cfg = ours.config
    lit_cfg = Config(
        block_size=cfg.max_seq_len,
        vocab_size=cfg.vocab_size,
        padded_vocab_size=cfg.vocab_size,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_embd=cfg.d_model,
        n_query_groups=cfg.n_kv_heads,
        head_size=cfg.head_dim,
        rotary_percentage=1.0,
        parallel_residual=False,
        bias=False,
        norm_class_name="RMSNorm",
        norm_eps=cfg.norm_eps,
        mlp_class_name="LLaMAMLP",
        intermediate_size=cfg.ffn_dim,
        rope_base=int(cfg.rope_theta),
    )
    state: dict = {}
    copy_weights_hf_llama(lit_cfg, {}, state, {k: v.detach().cpu() for k, v in hf.state_dict().items()})
    peer = GPT(lit_cfg)
    peer.load_state_dict(state, strict=False)
    peer = peer.to(args.device)
    del hf
    if args.compile:
        compile_like_the_stage(ours)
    opt_ours, opt_peer = adamw(ours.parameters(), args), adamw(peer.parameters(), args)
    batches = [b.to(args.device) for b in token_batches(args, args.steps + args.warmup, args.seq + 1, 1)]

    def plain_loss(logits, targets):
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def step(model, opt, loss_fn, i):
        ids = batches[i]
        loss = loss_fn(model(ids[:, :-1]), ids[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    ours_loss = lmforge_cross_entropy(args)
    a, b, ratios = lockstep(
        lambda i: step(ours, opt_ours, ours_loss, i),
        lambda i: step(peer, opt_peer, plain_loss, i),
        args.steps,
        args.warmup,
        args.device,
    )
    return report("pretrain/lit", f"loss {a:.0e} (all steps {b:.0e})", ratios)


def sft_examples(args, n: int):
    """Prompt + completion token lists of varying lengths (completion_mask marks the completion)."""
    import torch

    gen = torch.Generator().manual_seed(2)
    out = []
    for _ in range(n):
        p = int(torch.randint(4, args.seq // 2, (1,), generator=gen))
        c = int(torch.randint(4, args.seq - p, (1,), generator=gen))
        ids = torch.randint(3, args.vocab, (p + c,), generator=gen).tolist()
        out.append({"input_ids": ids, "completion_mask": [0] * p + [1] * c})
    return out


def trl_args(cls, tmp: str, args, **kw):
    kw.setdefault("per_device_train_batch_size", args.batch)
    return cls(
        output_dir=tmp,
        learning_rate=args.lr,
        weight_decay=0.0,
        adam_beta2=0.999,
        lr_scheduler_type="constant",
        report_to=[],
        use_cpu=not args.device.startswith("cuda"),
        bf16=False,
        logging_strategy="no",
        save_strategy="no",
        **kw,
    )


def bench_sft(args):
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from lmforge.losses import masked_cross_entropy

    ours, peer = build_pair(args)
    n = (args.steps + args.warmup) * args.batch
    examples = sft_examples(args, n)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = SFTTrainer(
            model=peer,
            args=trl_args(SFTConfig, tmp, args, completion_only_loss=True, max_length=None),
            train_dataset=Dataset.from_list(examples),
            processing_class=hf_tokenizer(args.vocab),
        )
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(), which we bypass
        opt_ours = adamw(ours.parameters(), args)
        chunks = [examples[i * args.batch : (i + 1) * args.batch] for i in range(args.steps + args.warmup)]

        def ours_step(i):
            width = max(len(e["input_ids"]) for e in chunks[i])
            ids = torch.zeros(len(chunks[i]), width, dtype=torch.long)
            labels = torch.full_like(ids, -100)
            for row, e in enumerate(chunks[i]):  # right-padded; labels: completion tokens only
                n_tok = len(e["input_ids"])
                ids[row, :n_tok] = torch.tensor(e["input_ids"])
                keep = torch.tensor(e["completion_mask"], dtype=torch.bool)
                labels[row, :n_tok] = torch.where(keep, ids[row, :n_tok], -100)
            labels = shift_labels(labels)
            ids, labels = ids.to(args.device), labels.to(args.device)
            loss = masked_cross_entropy(ours(ids), labels)
            loss.backward()
            opt_ours.step()
            opt_ours.zero_grad(set_to_none=True)
            return loss.item()

        def peer_step(i):
            rows = list(trainer.train_dataset.select(range(i * args.batch, (i + 1) * args.batch)))
            batch = trainer._prepare_inputs(trainer.data_collator(rows))
            peer.train()
            loss = trainer.training_step(peer, batch)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            return float(loss)

        a, b, ratios = lockstep(ours_step, peer_step, args.steps, args.warmup, args.device)
    return report("sft", f"loss {a:.0e} (all steps {b:.0e})", ratios)


def bench_dpo(args):
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from lmforge.losses import dpo_loss, sequence_logps

    ours, peer = build_pair(args)
    reference = copy.deepcopy(ours).eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(3)
    n = (args.steps + args.warmup) * args.batch
    examples = []
    for _ in range(n):
        p = int(torch.randint(4, args.seq // 2, (1,), generator=gen))

        def rand(k):
            return torch.randint(3, args.vocab, (k,), generator=gen).tolist()

        c, r = (int(torch.randint(2, args.seq // 2, (1,), generator=gen)) for _ in range(2))
        # Completions end in EOS (id 1), as TRL appends it; TRL reads text, so the ids go in as words.
        examples.append({"prompt_ids": rand(p), "chosen_ids": rand(c) + [1], "rejected_ids": rand(r) + [1]})
    as_text = [
        {
            "prompt": words(e["prompt_ids"]),
            "chosen": " " + words(e["chosen_ids"]),
            "rejected": " " + words(e["rejected_ids"]),
        }
        for e in examples
    ]
    chunks = [examples[i * args.batch : (i + 1) * args.batch] for i in range(args.steps + args.warmup)]
    with tempfile.TemporaryDirectory() as tmp:
        trainer = DPOTrainer(
            model=peer,
            ref_model=copy.deepcopy(peer),
            args=trl_args(DPOConfig, tmp, args, beta=args.beta, loss_type=["sigmoid"], max_length=None),
            train_dataset=Dataset.from_list(as_text),
            processing_class=hf_tokenizer(args.vocab),
        )
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(), which we bypass
        opt_ours = adamw(ours.parameters(), args)

        def ours_step(i):
            rows = [e["prompt_ids"] + e["chosen_ids"] for e in chunks[i]]
            rows += [e["prompt_ids"] + e["rejected_ids"] for e in chunks[i]]
            prompt = [len(e["prompt_ids"]) for e in chunks[i]] * 2
            width = max(map(len, rows))
            ids = torch.zeros(len(rows), width, dtype=torch.long)
            labels = torch.full_like(ids, -100)
            for row, (tokens, p) in enumerate(zip(rows, prompt, strict=True)):
                ids[row, : len(tokens)] = torch.tensor(tokens)
                labels[row, p : len(tokens)] = ids[row, p : len(tokens)]
            labels = shift_labels(labels)
            ids, labels = ids.to(args.device), labels.to(args.device)
            policy, _ = sequence_logps(ours(ids), labels)
            with torch.no_grad():
                ref, _ = sequence_logps(reference(ids), labels)
            loss = dpo_loss(*policy.chunk(2), *ref.chunk(2), beta=args.beta).losses.mean()
            loss.backward()
            opt_ours.step()
            opt_ours.zero_grad(set_to_none=True)
            return loss.item()

        def peer_step(i):
            rows = list(trainer.train_dataset.select(range(i * args.batch, (i + 1) * args.batch)))
            batch = trainer._prepare_inputs(trainer.data_collator(rows))
            peer.train()
            loss = trainer.training_step(peer, batch)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            return float(loss)

        a, b, ratios = lockstep(ours_step, peer_step, args.steps, args.warmup, args.device)
    return report("dpo", f"loss {a:.0e} (all steps {b:.0e})", ratios)


def even_token_reward(completions, **_) -> list[float]:
    """Share of completion tokens with an even id: deterministic, cheap, varies between samples."""
    out = []
    for text in completions:
        ids = [int(w[1:]) for w in text.split() if w.startswith("t")]
        out.append(sum(i % 2 == 0 for i in ids) / max(len(ids), 1))
    return out


def bench_grpo(args):
    """Parity: TRL's step-0 batch (its own sampled completions and advantages) scored by lmforge's
    policy_loss vs TRL's compute_loss, and the completion log-probs of both. Speed: a whole step each (sampling, reward, scoring,
    backward, AdamW), same prompts, group size, completion length and temperature."""
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from lmforge.generate import SamplingConfig, generate
    from lmforge.losses import group_advantages, policy_loss
    from lmforge.stages.rl import completion_logps

    group, prompts_per_step = 4, max(args.batch // 2, 1)
    ours, peer = build_pair(args)
    gen = torch.Generator().manual_seed(5)
    steps = args.steps + args.warmup
    prompts = [
        torch.randint(3, args.vocab, (int(torch.randint(4, args.prompt_len + 1, (1,), generator=gen)),), generator=gen)
        for _ in range(steps * prompts_per_step)
    ]
    rows = [{"prompt": words(p.tolist())} for p in prompts for _ in range(group)]  # TRL repeats each prompt
    opt_ours = adamw(ours.parameters(), args)

    def score(model, prompt_ids, prompt_mask, completion_ids, completion_mask):
        """Per-token log-probs of the completions [N, C] under lmforge's padded scoring."""
        ids = torch.cat([prompt_ids, completion_ids], dim=1)
        is_real = torch.cat([prompt_mask, completion_mask], dim=1).bool()
        return completion_logps(model, ids, is_real, prompt_ids.shape[1]) * completion_mask

    with tempfile.TemporaryDirectory() as tmp:
        trainer = GRPOTrainer(
            model=peer,
            reward_funcs=even_token_reward,
            args=trl_args(
                GRPOConfig,
                tmp,
                args,
                num_generations=group,
                max_completion_length=args.new_tokens,
                beta=0.0,
                loss_type="grpo",
                scale_rewards="group",
                temperature=1.0,
                steps_per_generation=1,
                per_device_train_batch_size=group * prompts_per_step,
            ),
            train_dataset=Dataset.from_list(rows),
            processing_class=hf_tokenizer(args.vocab),
        )
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1

        # Parity on TRL's own step-0 batch.
        peer.train()
        chunk = rows[: group * prompts_per_step]
        batch = trainer._generate_and_score_completions(chunk)
        peer_loss = float(trainer.compute_loss(peer, batch))
        logps = score(
            ours, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"]
        )
        ours_loss, _ = policy_loss(
            logps, logps.detach(), None, batch["advantages"], batch["completion_mask"], loss_type="grpo"
        )
        # At step 0 the ratio is 1 and group-centred advantages make both losses ~0, so the
        # completion log-probs (what the gradient is made of) are compared too.
        with torch.no_grad():
            ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
            attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
            peer_logps = trainer._get_per_token_logps_and_entropies(
                peer, ids, attention, batch["completion_ids"].shape[1]
            )[0]
        logp_diff = float(((logps - peer_logps) * batch["completion_mask"]).abs().max())
        parity = abs(float(ours_loss) - peer_loss)
        trainer.optimizer.zero_grad(set_to_none=True)

        sampling = SamplingConfig(max_new_tokens=args.new_tokens, temperature=1.0, seed=0, compile=args.compile)

        def ours_step(i):
            chunk_prompts = [p.tolist() for p in prompts[i * prompts_per_step : (i + 1) * prompts_per_step]]
            repeated = [p for p in chunk_prompts for _ in range(group)]
            out = generate(ours, repeated, sampling, pad_id=0)
            rewards = torch.tensor(even_token_reward([words(c) for c in out.completions]))
            advantages = group_advantages(rewards, group, "group")
            width = max(map(len, repeated))
            longest = max(max(map(len, out.completions)), 1)
            prompt_ids = torch.zeros(len(repeated), width, dtype=torch.long)
            prompt_mask = torch.zeros_like(prompt_ids)
            completion_ids = torch.zeros(len(repeated), longest, dtype=torch.long)
            completion_mask = torch.zeros_like(completion_ids)
            for row, (p, c) in enumerate(zip(repeated, out.completions, strict=True)):
                prompt_ids[row, width - len(p) :], prompt_mask[row, width - len(p) :] = torch.tensor(p), 1
                if c:
                    completion_ids[row, : len(c)], completion_mask[row, : len(c)] = torch.tensor(c), 1
            ours.train()
            logps = score(ours, prompt_ids, prompt_mask, completion_ids, completion_mask)
            loss, _ = policy_loss(logps, logps.detach(), None, advantages, completion_mask, loss_type="grpo")
            loss.backward()
            opt_ours.step()
            opt_ours.zero_grad(set_to_none=True)
            return loss.item()

        def peer_step(i):
            peer.train()
            loss = trainer.training_step(
                peer, rows[i * group * prompts_per_step : (i + 1) * group * prompts_per_step], None
            )
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
            return float(loss)

        _, _, ratios = lockstep(ours_step, peer_step, args.steps, args.warmup, args.device)
    return report("grpo", f"loss {parity:.0e} logp {logp_diff:.0e}", ratios)


def bench_generate(args, batch: int):
    import torch

    from lmforge.generate import SamplingConfig, generate

    ours, peer = build_pair(args)
    ours.eval()
    peer.eval()
    gen = torch.Generator().manual_seed(4)
    prompts_per_step = []
    for _ in range(args.steps + args.warmup):
        lengths = torch.randint(args.prompt_len // 2, args.prompt_len + 1, (batch,), generator=gen).tolist()
        prompts_per_step.append([torch.randint(3, args.vocab, (n,), generator=gen).tolist() for n in lengths])
    sampling = SamplingConfig(
        max_new_tokens=args.new_tokens, temperature=0.0, compile=args.compile, freeze_weights=args.compile
    )
    outputs = {}

    def ours_step(i):
        outputs["ours", i] = generate(ours, prompts_per_step[i], sampling, pad_id=0).completions
        return 0.0

    def peer_step(i):
        prompts = prompts_per_step[i]
        width = max(map(len, prompts))
        ids = torch.zeros(len(prompts), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):  # left-padded, as HF generate expects
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        with torch.no_grad():
            out = peer.generate(
                input_ids=ids.to(args.device),
                attention_mask=mask.to(args.device),
                max_new_tokens=args.new_tokens,
                do_sample=False,
                pad_token_id=0,
            )
        outputs["peer", i] = out[:, width:].tolist()
        return 0.0

    _, _, ratios = lockstep(ours_step, peer_step, args.steps, args.warmup, args.device)
    same = all(outputs["ours", i] == outputs["peer", i] for i in range(args.steps + args.warmup))
    return report(f"generate b{batch}", f"tokens {'identical' if same else 'DIFFER'}", ratios)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--tiny", action="store_true", help="smoke size: seconds per task")
    p.add_argument("--compile", action="store_true", help="lmforge side with compile=true (pretrain, generate)")
    p.add_argument("--device", default=None)
    p.add_argument("--steps", type=int, default=10, help="timed steps per task")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=704)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    args = p.parse_args()
    if args.tiny:
        args.steps, args.warmup, args.batch, args.seq, args.vocab = 3, 1, 2, 64, 512
        args.d_model, args.layers, args.heads, args.kv_heads, args.ffn = 64, 2, 4, 2, 128
        args.prompt_len, args.new_tokens = 12, 8
    ensure_peers_env()
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    warnings.filterwarnings("ignore")
    import datasets

    datasets.disable_progress_bars()
    torch.set_float32_matmul_precision("highest")
    print(
        f"{time.strftime('%Y-%m-%d')} device={args.device} d_model={args.d_model} layers={args.layers} "
        f"seq={args.seq} batch={args.batch} steps={args.steps} compile={args.compile}"
    )
    print(f"{'task':<12} {'parity':<30} {'peer/lmforge':>8}  (min-max)")
    for task in args.tasks:
        if task == "generate":
            for batch in (1, 8):
                bench_generate(args, batch)
        else:
            {"pretrain": bench_pretrain, "sft": bench_sft, "dpo": bench_dpo, "grpo": bench_grpo}[task](args)
            if task == "pretrain":
                bench_pretrain_litgpt(args)


if __name__ == "__main__":
    main()
