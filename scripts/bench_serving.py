"""Generation throughput on CPU: our KV-cache `lmforge.generate` vs HF `generate`, same exported weights.

    .venv/bin/python scripts/bench_serving.py [--export DIR] [--new-tokens 64] [--threads 2] [--compile]

Both decode greedily for exactly `--new-tokens` tokens (no early stop) from the same random
prompts, batch 1 and batch 8, after one warm-up; the median of `--repeats` runs is reported.
Without --export, a random-init model of conf/model/tiny.yaml's shape is exported to a temp dir.
--compile decodes with the compiled, weight-frozen step (`SamplingConfig(compile=True,
freeze_weights=True)`, what a server with fixed weights would run); the warm-up pays its compile.
Target: ours / HF >= 1.5.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def tiny_export(directory: Path) -> Path:
    import yaml

    from lmforge.config_paths import conf_dir
    from lmforge.hf import export_hf
    from lmforge.model import ModelConfig, build_model

    shape = yaml.safe_load((conf_dir() / "model" / "tiny.yaml").read_text())
    torch.manual_seed(0)
    model = build_model(ModelConfig(**shape), device="cpu")
    return export_hf(model, directory, tokenizer=None, dtype=torch.float32)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, kernels, HF's first-call setup
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", type=Path, default=None, help="dense HF export dir (serving.export quant=none)")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="compiled decode step with frozen weights")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import LlamaForCausalLM

    from lmforge.generate import SamplingConfig, generate
    from lmforge.hf import load_hf

    with tempfile.TemporaryDirectory() as tmp:
        export = args.export or tiny_export(Path(tmp))
        ours, config = load_hf(export, dtype=torch.float32)
        ours.eval()
        hf = LlamaForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(0)
    sampling = SamplingConfig(
        max_new_tokens=args.new_tokens, temperature=0.0, compile=args.compile, freeze_weights=args.compile
    )
    rows = []
    for batch in args.batch_sizes:
        prompts = torch.randint(3, config.vocab_size, (batch, args.prompt_tokens), generator=generator)
        prompt_lists = prompts.tolist()

        def run_ours() -> None:
            generate(ours, prompt_lists, sampling, pad_id=0)

        @torch.no_grad()
        def run_hf() -> None:
            hf.generate(
                prompts,
                attention_mask=torch.ones_like(prompts),
                do_sample=False,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                pad_token_id=0,
            )

        tokens = batch * args.new_tokens
        ours_tps, hf_tps = tokens / timed(run_ours, args.repeats), tokens / timed(run_hf, args.repeats)
        rows.append((batch, ours_tps, hf_tps, ours_tps / hf_tps))

    print(
        f"model {config.name}: d_model {config.d_model}, {config.n_layers} layers, {config.num_params() / 1e6:.1f}M "
        f"params; prompt {args.prompt_tokens}, new {args.new_tokens} tokens, {args.threads} threads, fp32 CPU, "
        f"{'compiled + frozen' if args.compile else 'eager'}"
    )
    print("| batch | lmforge generate (tok/s) | HF generate (tok/s) | ratio |")
    print("|---|---|---|---|")
    for batch, ours_tps, hf_tps, ratio in rows:
        print(f"| {batch} | {ours_tps:.1f} | {hf_tps:.1f} | {ratio:.2f} |")
    worst = min(r[3] for r in rows)
    print(f"min ratio {worst:.2f} (target >= 1.5): {'met' if worst >= 1.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
