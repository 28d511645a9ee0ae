"""Train the byte-level BPE tokenizer: `python src/train_tokenizer.py [key=value ...]`.

Composes conf/tokenizer.yaml against its typed schema (a misspelt key fails at once), runs
`lmforge.data.tokenizer_job.run_tokenizer_job` and prints a summary. All logic lives in `lmforge`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from lmforge.config_paths import conf_dir
from lmforge.config_precheck import register_help_resolver
from lmforge.data.tokenizer_job import TokenizerJobConfig, run_tokenizer_job


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="tokenizer")
def main(cfg: DictConfig) -> None:
    job = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TokenizerJobConfig), cfg))
    summary = run_tokenizer_job(job)
    print(
        f"tokenizer  {summary.out_dir}\n"
        f"vocab      {summary.vocab_size} (asked {summary.requested_vocab_size})\n"
        f"sample     {summary.train_docs} docs / {summary.train_bytes / 1e6:.2f} MB trained on, "
        f"{summary.heldout_docs} docs / {summary.heldout_bytes / 1e6:.2f} MB held out\n"
        f"bytes/tok  {summary.bytes_per_token:.3f} (held-out sample)\n"
        f"time       {summary.seconds:.1f} s\n"
        f"sha256     {summary.fingerprint}"
    )


if __name__ == "__main__":
    register_help_resolver()  # `--help` lists only the groups this config composes
    main()
