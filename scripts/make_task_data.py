"""Write the generated verifiable tasks in the public formats (SFT messages, preferences).

    python scripts/make_task_data.py [out=artifacts/task_data] [kind=mix] [n_train=4000] [n_heldout=200] [seed=0]

Files: sft_{train,heldout}.jsonl ({"messages"}), preference_{train,heldout}.jsonl
({"prompt","chosen","rejected"}), tasks_heldout.jsonl (for scoring), manifest.json.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import OmegaConf

from lmforge.data.tasks import make_tasks, write_preference_jsonl, write_sft_jsonl, write_tasks_jsonl


@dataclass
class MakeTaskDataConfig:
    out: str = "artifacts/task_data"
    kind: str = "mix"
    n_train: int = 4000
    n_heldout: int = 200
    seed: int = 0


def main() -> None:
    cfg: MakeTaskDataConfig = OmegaConf.to_object(
        OmegaConf.merge(OmegaConf.structured(MakeTaskDataConfig), OmegaConf.from_cli())
    )
    out = Path(cfg.out)
    counts = {}
    for split, n in (("train", cfg.n_train), ("heldout", cfg.n_heldout)):
        tasks = make_tasks(cfg.kind, n, cfg.seed, split)
        write_sft_jsonl(tasks, out / f"sft_{split}.jsonl")
        write_preference_jsonl(tasks, out / f"preference_{split}.jsonl", seed=cfg.seed)
        if split == "heldout":
            write_tasks_jsonl(tasks, out / "tasks_heldout.jsonl")
        counts[split] = len(tasks)
    (out / "manifest.json").write_text(
        json.dumps({"kind": "task_data", "config": asdict(cfg), "counts": counts}, indent=2)
    )
    print(f"wrote {counts['train']} train / {counts['heldout']} held-out tasks to {out}")


if __name__ == "__main__":
    main()
