"""lm-evaluation-harness model class: run any lm-eval task on an lmforge checkpoint.

    python -m lmforge.eval.lm_eval_model run --model lmforge \\
        --model_args ckpt=runs/sft/last.ckpt,batch_size=16 --tasks hellaswag,arc_easy

(`python -m lmforge.eval.lm_eval_model` is lm-eval's own CLI after this module registered the
"lmforge" model name.) Requests are forwarded to `EvalLM`, the same code our benchmarks use.
"""

from __future__ import annotations

import logging
import sys

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from lmforge.eval.lm import EvalLM, GenParams

log = logging.getLogger(__name__)


@register_model("lmforge")
class LMForgeLM(LM):
    def __init__(
        self,
        ckpt: str | None = None,
        batch_size: int | str = 8,
        device: str = "cpu",
        eval_lm: EvalLM | None = None,
        max_gen_toks: int = 256,
        **kwargs,
    ) -> None:
        super().__init__()
        if eval_lm is None:
            if ckpt is None:
                raise ValueError("lmforge lm-eval model needs model_args ckpt=<checkpoint, run dir or HF dir>")
            from lmforge.eval.loading import load_checkpoint

            if str(device).startswith("cuda") and not torch.cuda.is_available():
                log.warning("device=%s requested (lm-eval's default) but CUDA is unavailable; using cpu", device)
                device = "cpu"
            loaded = load_checkpoint(ckpt, device=device)
            # lm-eval may pass "auto" / "auto:4"; we have no memory probe, so fall back to 8.
            size = int(batch_size) if str(batch_size).isdigit() else 8
            eval_lm = EvalLM(loaded.model, loaded.tokenizer, batch_size=size)
        self.eval_lm = eval_lm
        self.max_gen_toks = int(max_gen_toks)

    @property
    def tokenizer_name(self) -> str:
        return f"lmforge-{self.eval_lm.tokenizer.fingerprint[:12]}"

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self.eval_lm.loglikelihood([req.args for req in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        return self.eval_lm.loglikelihood_rolling([req.args[0] for req in requests])

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        batch = []
        for req in requests:
            context, kwargs = req.args
            kwargs = dict(kwargs or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            do_sample = kwargs.pop("do_sample", False)
            temperature = float(kwargs.pop("temperature", 0.0)) if do_sample else 0.0
            params = GenParams(
                until=until,
                max_new_tokens=int(kwargs.pop("max_gen_toks", self.max_gen_toks)),
                temperature=temperature,
                top_p=float(kwargs.pop("top_p", 1.0) or 1.0),
            )
            batch.append((context, params))
        return self.eval_lm.generate_until(batch)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.eval_lm.tokenizer.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)


def main() -> None:
    from lm_eval.__main__ import cli_evaluate

    sys.exit(cli_evaluate())


if __name__ == "__main__":
    main()
