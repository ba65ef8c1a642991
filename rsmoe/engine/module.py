"""The Lightning module: task loss + router loss, per-step poly LR, per-domain confusion matrices."""
from __future__ import annotations

import lightning as L
import torch

from ..config import Config
from ..models.mpers.captions import CaptionInputs
from ..models.mpers.model import MPerS
from ..models.segmentor import FROZEN_PREFIXES, Segmentor
from .inference import slide_inference
from .metrics import mean_over_domains, metrics_from_confusion, update_confusion
from .optim import build_optimizer


class SegmentationModule(L.LightningModule):
    """Wraps a :class:`Segmentor`. ``eval_domains``: the name of each validation dataloader, in order."""

    def __init__(self, cfg: Config, model: Segmentor, class_names: list[str], eval_domains: list[str],
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
        # MPerS: captions per batch (store / live ground-truth statistics in training, never ground truth in eval)
        self.captions = CaptionInputs(model, cfg.mpers, cfg.data.root) if isinstance(model, MPerS) else None
        check_eval_config(cfg, class_names)

    # --------------------------------------------------------------------------------------------------- train
    def training_step(self, batch, batch_idx):
        text = self.captions.for_training(batch) if self.captions is not None else {}
        terms = self.model.loss(batch["image"], batch["wavelengths"], batch["mask"],
                                moe_weight=self.cfg.adapter.loss_weight, **text)
        self.log("train/loss", terms["loss"].detach(), prog_bar=True, batch_size=batch["image"].shape[0])
        self.log("train/loss_moe", terms["loss_moe"], batch_size=batch["image"].shape[0])
        return terms["loss"]

    def configure_optimizers(self):
        optimizer, scheduler = build_optimizer(self.model, self.cfg.train)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if not k.removeprefix("model.").startswith(FROZEN_PREFIXES)}

    # ---------------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        k = len(self.class_names)
        self.confusions = {i: torch.zeros(k, k, dtype=torch.int64, device=self.device)
                           for i in range(len(self.eval_domains))}

    def predict_scores(self, image: torch.Tensor, wavelengths: torch.Tensor, **text) -> torch.Tensor:
        """Class scores B×K×H×W as ``cfg.eval`` says: one forward (``whole``) or averaged windows (``slide``).
        MPerS predicts with its evaluation captions (``text``: image-derived store captions only)."""
        ev = self.cfg.eval

        def forward(x):
            return self.model.predict(x, wavelengths, **text)

        if ev.mode == "whole":
            return forward(image)
        if ev.mode == "slide":
            return slide_inference(forward, image, ev.window, ev.stride, len(self.class_names))
        raise ValueError(f"eval.mode: expected 'whole' or 'slide', got {ev.mode!r}")

    def validation_step(self, batch, batch_idx, dataloader_idx: int = 0):
        text = self.captions.for_eval(batch) if self.captions is not None else {}
        scores = self.predict_scores(batch["image"], batch["wavelengths"], **text)
        update_confusion(self.confusions[dataloader_idx], scores.argmax(1), batch["mask"], self.ignore_index)

    def on_validation_epoch_end(self) -> None:
        per_domain = {}
        for i, name in enumerate(self.eval_domains):
            cm = self.trainer.strategy.reduce(self.confusions[i], reduce_op="sum")
            per_domain[name] = metrics_from_confusion(cm, self.class_names, self.cfg.eval.exclude_from_means)
            per_domain[name]["confusion"] = cm.cpu().tolist()
            self.log(f"val/{name}/mIoU", per_domain[name]["mIoU"], sync_dist=False)
        targets = [d for d in self.eval_domains if d in self.cfg.data.target_domains]
        self.last_metrics = {
            "domains": per_domain,
            "target_mean": mean_over_domains({d: per_domain[d] for d in targets}) if targets else {},
        }


def check_eval_config(cfg: Config, class_names: list[str]) -> None:
    """Fail before any training when the ``eval`` section cannot be applied."""
    ev = cfg.eval
    if ev.mode not in ("whole", "slide"):
        raise ValueError(f"eval.mode: expected 'whole' or 'slide', got {ev.mode!r}")
    if ev.mode == "slide" and (ev.window <= 0 or ev.stride <= 0):
        raise ValueError(f"eval.window and eval.stride must be positive, got {ev.window} and {ev.stride}")
    unknown = [c for c in ev.exclude_from_means if c not in class_names]
    if unknown:
        raise ValueError(f"eval.exclude_from_means: {unknown} are not among the classes {class_names}")
