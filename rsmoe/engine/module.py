"""The Lightning module: one training step = ``model.loss(batch)``, per-step poly LR, per-domain confusion matrices.

It depends only on the :class:`rsmoe.models.protocol.SegModel` contract: whatever the model, a batch goes in,
``loss`` is back-propagated and every other ``loss_*`` term is logged; evaluation calls ``model.predict(batch)``.
"""
from __future__ import annotations

import lightning as L
import torch

from ..config import Config
from ..errors import TrainingError
from ..models.protocol import SegModel
from .data import target_names
from .inference import slide_inference
from .metrics import mean_over_domains, metrics_from_confusion, update_confusion
from .optim import build_optimizer


class SegmentationModule(L.LightningModule):
    """Wraps a :class:`SegModel`. ``eval_domains``: the name of each validation dataloader, in order."""

    def __init__(self, cfg: Config, model: SegModel, class_names: list[str], eval_domains: list[str],
                 ignore_index: int = 255):
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.class_names = class_names
        self.eval_domains = list(eval_domains)
        self.ignore_index = ignore_index
        self.strict_loading = False  # Lightning checkpoints hold only the trainable tensors
        self.confusions: dict[int, torch.Tensor] = {}
        self.last_metrics: dict = {}

    # --------------------------------------------------------------------------------------------------- train
    def training_step(self, batch, batch_idx):
        terms = self.model.loss(batch)
        check_finite_loss(terms["loss"], self.global_step + 1, batch.get("tile"))
        size = batch["image"].shape[0]
        self.log("train/loss", terms["loss"].detach(), prog_bar=True, batch_size=size)
        for key, value in terms.items():
            if key != "loss":
                self.log(f"train/{key}", value, batch_size=size, prog_bar=key in ("loss_task", "loss_router"))
        return terms["loss"]

    def configure_optimizers(self):
        optimizer, scheduler = build_optimizer(self.model, self.cfg.train)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        frozen = tuple(f"model.{p}" for p in self.model.frozen_prefixes)
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith(frozen)}
        checkpoint["rsmoe"] = {"config": self.cfg.to_dict()}  # what `train.resume` compares a new config with

    # ---------------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        k = len(self.class_names)
        self.confusions = {i: torch.zeros(k, k, dtype=torch.int64, device=self.device)
                           for i in range(len(self.eval_domains))}

    def predict_scores(self, batch: dict) -> torch.Tensor:
        """Class scores B×K×H×W as ``cfg.eval`` says: one forward (``whole``) or averaged windows (``slide``)."""
        ev = self.cfg.eval
        if ev.mode == "whole":
            return self.model.predict(batch)
        return slide_inference(lambda x: self.model.predict({**batch, "image": x}), batch["image"], ev.window,
                               ev.stride, len(self.class_names))

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        scores = self.predict_scores(batch)
        update_confusion(self.confusions[dataloader_idx], scores.argmax(1), batch["mask"], self.ignore_index)

    def on_validation_epoch_end(self) -> None:
        per_domain = {}
        for i, name in enumerate(self.eval_domains):
            cm = self.trainer.strategy.reduce(self.confusions[i], reduce_op="sum")
            per_domain[name] = metrics_from_confusion(cm, self.class_names, self.cfg.eval.exclude_from_means)
            per_domain[name]["confusion"] = cm.cpu().tolist()
            self.log(f"val/{name}/mIoU", per_domain[name]["mIoU"], sync_dist=False)
        targets = target_names(self.cfg, self.eval_domains)
        self.last_metrics = {
            "domains": per_domain,
            "target_mean": mean_over_domains({d: per_domain[d] for d in targets}) if targets else {},
        }


def check_finite_loss(loss: torch.Tensor, step: int, tiles: list | None) -> None:
    """Stop at the first non-finite loss with one line naming the step and the batch's tiles (before the update,
    so no weights are touched and nothing more is saved)."""
    if not bool(torch.isfinite(loss.detach()).all()):
        raise TrainingError(f"step {step}: the loss is {float(loss.detach().float().mean())} for the batch of tiles "
                            f"{list(tiles or [])}; training stopped before updating the weights (check those tiles "
                            "or lower train.lr)")


__all__ = ["SegmentationModule", "check_finite_loss"]
