"""`BaseStage`: the LightningModule every training stage extends by adding only its loss.

The base owns what all stages share: building the `Transformer` (in `configure_model`, so FSDP2
can shard it per `DecoderLayer`, optionally from the meta device), loading `init_from`
(Lightning checkpoint, run dir or HF export) with a tokenizer-fingerprint check, LoRA wrapping,
the optimizer and LR schedule (lmforge.optimizers), the checkpoint lineage, and logging of
`{split}/loss`, the stage's metrics and the gradient norm. Tokens/s and MFU come from
`lmforge.callbacks.ThroughputMFU`, which asks the stage for `batch_tokens` / `flops_per_token`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor

from lmforge.checkpoint import AUTO_MODEL, LMFORGE_KEY, check_same_shape, load_for_inference, read_metadata
from lmforge.cpu_linear import use_onednn_linears
from lmforge.losses import token_cross_entropy
from lmforge.model import DecoderLayer, ModelConfig, Transformer, build_model
from lmforge.optimizers import build_optimizer, is_no_decay, lr_multiplier  # noqa: F401 (re-exported)
from lmforge.tokenizer import Tokenizer, check_fingerprint

log = logging.getLogger(__name__)


@dataclass
class OptimConfig:
    """`name` (adamw | muon) + linear warmup + `schedule` (cosine | wsd | constant) down to
    `min_lr_ratio * lr` at `decay_steps`; see lmforge.optimizers."""

    name: str = "adamw"
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    decay_steps: int | None = None  # None: the trainer's estimated number of optimizer steps
    schedule: str = "cosine"
    decay_fraction: float = 0.2  # wsd: share of decay_steps spent cooling down
    momentum: float = 0.95  # muon only
    fused: bool | None = None  # AdamW's fused kernel; None: torch's default (foreach)


def to_plain(value: Any) -> Any:
    """DictConfig/ListConfig -> dict/list (Hydra hands nested configs over as DictConfig)."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    return value


def model_config_from(value: dict | ModelConfig | DictConfig) -> ModelConfig:
    if isinstance(value, ModelConfig):
        return value
    known = {f.name for f in fields(ModelConfig)}
    value = to_plain(value)
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; ModelConfig fields are {sorted(known)}")
    return ModelConfig(**value)


def run_seed() -> int:
    """The seed `lightning.seed_everything` set for this run (0 outside a seeded run)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class BaseStage(L.LightningModule):
    """Subclasses implement `compute_loss(batch, split) -> (loss, metrics)` and nothing else."""

    stage_name: ClassVar[str] = "base"
    # Stages whose loss is a mean token NLL also log perplexity.
    loss_is_token_nll: ClassVar[bool] = False

    def __init__(
        self,
        model: dict | ModelConfig,
        optim: dict,
        tokenizer_path: str,
        init_from: str | None = None,
        peft: dict | None = None,
        activation_checkpointing: bool = False,
        meta_init: bool = False,
        compile: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__()
        if kw:
            raise TypeError(f"{type(self).__name__} got unknown config keys under module: {sorted(kw)}")
        self.save_hyperparameters(logger=True)
        # Plain containers: checkpoints then load with torch.load(weights_only=True).
        self.hparams.update({k: to_plain(v) for k, v in self.hparams.items()})
        self.tokenizer_path = str(tokenizer_path)
        self.tokenizer = Tokenizer.load(tokenizer_path)
        self.optim_config = OptimConfig(**(to_plain(optim) or {}))
        self.peft_config = to_plain(peft) or None
        self.activation_checkpointing = activation_checkpointing
        self.meta_init = meta_init
        self.compile = compile
        self.init_from = str(init_from) if init_from else None
        self.model_config = model_config_from(model)
        if self.model_config.name == AUTO_MODEL and not self.init_from:
            raise ValueError("model=auto takes the shape from init_from; set init_from=<checkpoint, run dir or HF dir>")
        if self.init_from:
            self.model_config = self._adopt_parent(self.model_config, read_metadata(self.init_from))
        if self.tokenizer.vocab_size > self.model_config.vocab_size:
            raise ValueError(
                f"tokenizer at {tokenizer_path} has {self.tokenizer.vocab_size} tokens but "
                f"model.vocab_size={self.model_config.vocab_size}"
            )
        self.model: Transformer | None = None  # built in configure_model

    # ----- model -----
    def _adopt_parent(self, configured: ModelConfig, parent: dict[str, Any]) -> ModelConfig:
        """The parent's shape: taken as is under model=auto, else it must equal the configured one
        (`ShapeMismatchError` names both); the tokenizer must be the same."""
        if parent.get("tokenizer_fingerprint"):
            check_fingerprint(
                parent["tokenizer_fingerprint"], self.tokenizer.fingerprint, f"init_from={self.init_from}"
            )
        else:
            log.warning("init_from=%s records no tokenizer fingerprint; cannot verify it", self.init_from)
        adopted = ModelConfig(**parent["model_config"])
        if configured.name == AUTO_MODEL:
            return adopted
        check_same_shape(configured, adopted, self.init_from)
        return configured

    def configure_model(self) -> None:
        if self.model is not None:  # Lightning calls this hook again for validate/test after fit
            return
        mesh = self.device_mesh if getattr(self, "_device_mesh", None) is not None else None
        on_meta = mesh is not None and self.meta_init
        if on_meta and self.peft_config:
            raise ValueError("module.meta_init=true with peft is not supported; set module.meta_init=false")
        # Seeded here, not by whatever RNG state the strategy's setup left: a model built by
        # 1 process, by each DDP/FSDP rank, or after a resume starts from the same weights.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(run_seed())
            model = build_model(self.model_config, device="meta" if on_meta else None)
        if self.init_from and not on_meta:
            model.load_state_dict(load_for_inference(self.init_from).model.state_dict())
        if self.peft_config:
            from lmforge.lora import apply_lora

            model = apply_lora(model, self.peft_config)
        if self.activation_checkpointing:
            from torch.distributed._composable import checkpoint

            # The composable API keeps parameter names intact, unlike checkpoint_wrapper.
            for layer in self._decoder_layers(model):
                checkpoint(layer)
        if self.compile:
            self.compile_blocks(model)
        if mesh is not None:
            self._shard(model, mesh)
        if on_meta:
            self._materialize(model)
        self.model = model

    @staticmethod
    def compile_blocks(model: torch.nn.Module) -> None:
        """`compile=true`: torch.compile each decoder block in place (after activation
        checkpointing, before FSDP), so blocks stay the unit both wrap and parameter names do not
        change. Recompiles are logged with their reason; dynamo's recompile_limit bounds them
        (past it a block runs eagerly). scripts/bench_peers.py calls this too."""
        torch._logging.set_logs(recompiles=True)
        # fp32 GEMMs on CPU through oneDNN instead of MKL (lmforge.cpu_linear); CUDA is untouched.
        use_onednn_linears(model)
        for layer in BaseStage._decoder_layers(model):
            layer.compile()

    def cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the unmasked labels; compiled with the blocks (`compile=true`)."""
        return token_cross_entropy(self.compile)(logits, labels)

    # ----- frozen reference (DPO, RL) -----
    def set_frozen_reference(self, network: torch.nn.Module) -> None:
        """Keep `network` as a frozen reference policy: eval mode, no gradients, and stored as a
        plain attribute rather than a submodule, so it stays out of the checkpoint, the optimizer,
        FSDP wrapping and `LightningModule.train()`."""
        self.__dict__["_reference_model"] = network.eval().requires_grad_(False)

    def frozen_reference(self) -> torch.nn.Module | None:
        """The network set by `set_frozen_reference` (None if none), moved to the policy's device:
        Lightning moves only registered submodules."""
        reference = self.__dict__.get("_reference_model")
        if reference is not None:
            device = next(self.model.parameters()).device
            if next(reference.parameters()).device != device:
                reference.to(device)
        return reference

    @staticmethod
    def _decoder_layers(model: torch.nn.Module) -> list[DecoderLayer]:
        return [m for m in model.modules() if isinstance(m, DecoderLayer)]

    def _shard(self, model: torch.nn.Module, mesh) -> None:
        """FSDP2: one shard group per decoder layer, then the root (embeddings, norm, head)."""
        from torch.distributed.fsdp import fully_shard

        dp_mesh = mesh["data_parallel"]
        layers = self._decoder_layers(model)
        for i, layer in enumerate(layers):
            # The last layer's params are needed again right away by backward: keep them gathered.
            fully_shard(layer, mesh=dp_mesh, reshard_after_forward=i < len(layers) - 1)
        fully_shard(model, mesh=dp_mesh)

    def _materialize(self, model: Transformer) -> None:
        """Allocate only the local shards, then initialise (or load init_from into) them."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        model.to_empty(device=self.trainer.strategy.root_device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(run_seed())
            model.init_weights()
        if self.init_from:
            full = load_for_inference(self.init_from).model.state_dict()
            set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True))

    # ----- the one method a stage implements -----
    def compute_loss(self, batch: Any, split: str) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    # ----- loop -----
    def batch_tokens(self, batch: Any) -> int:
        """Tokens processed per batch, for tokens/s and MFU."""
        return int(batch["input_ids"].numel())

    def batch_size_of(self, batch: Any) -> int:
        return int(batch["input_ids"].shape[0])

    def flops_per_token(self, batch: Any) -> float:
        return self.model_config.flops_per_token(int(batch["input_ids"].shape[-1]))

    def _log_step(self, split: str, loss: Tensor, metrics: dict[str, Tensor], batch: Any) -> None:
        on_step = split == "train"
        opts = dict(on_step=on_step, on_epoch=not on_step, sync_dist=not on_step, batch_size=self.batch_size_of(batch))
        self.log(f"{split}/loss", loss.detach(), prog_bar=True, **opts)
        if self.loss_is_token_nll:
            self.log(f"{split}/ppl", torch.exp(loss.detach().float()), **opts)
        for name, value in metrics.items():
            self.log(f"{split}/{name}", value, **opts)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss, metrics = self.compute_loss(batch, "train")
        self._log_step("train", loss, metrics, batch)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss, metrics = self.compute_loss(batch, "val")
        self._log_step("val", loss, metrics, batch)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Gradients are unscaled here (AMP) and not yet clipped: this is the true norm. It costs a
        # pass over every gradient (~3% of a 125m CPU step), so only steps that write logs pay it.
        # (Lightning-internal; if it ever goes away, the norm is simply computed every step.)
        connector = getattr(self._trainer, "_logger_connector", None) if self._trainer is not None else None
        if not getattr(connector, "should_update_logs", True):
            return
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads)
            if hasattr(norm, "full_tensor"):  # FSDP2 DTensor
                norm = norm.full_tensor()
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)

    # ----- optimizer -----
    def configure_optimizers(self):
        cfg = self.optim_config
        optimizer = build_optimizer(self.named_parameters(), cfg)
        decay_steps = cfg.decay_steps or int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda step: lr_multiplier(
                step, cfg.warmup_steps, decay_steps, cfg.min_lr_ratio, cfg.schedule, cfg.decay_fraction
            ),
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ----- lineage -----
    def lineage(self) -> dict[str, Any]:
        return {
            "model_config": self.model_config.to_dict(),
            "tokenizer_fingerprint": self.tokenizer.fingerprint,
            "tokenizer_path": self.tokenizer_path,
            "stage": self.stage_name,
            "parent": str(Path(self.init_from).resolve()) if self.init_from else None,
            "peft": self.peft_config,
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[LMFORGE_KEY] = self.lineage()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(LMFORGE_KEY) or {}
        if saved.get("tokenizer_fingerprint"):
            check_fingerprint(
                saved["tokenizer_fingerprint"], self.tokenizer.fingerprint, "the checkpoint being resumed"
            )
