"""What a user sees of a training run: one iteration progress bar and the per-step log ``train_log.csv``.

The bar counts optimisation steps (``step/train.iterations``, continuing from the resumed step) and shows the
total loss, the task loss and the router loss (``loss_task``, ``loss_router``) separately. The log holds one row per
step: ``step`` (1-based, after the update), every ``loss*`` term the model returns, and ``lr`` (the learning rate
the step used). A resumed run keeps the rows up to its checkpoint's step and appends from there.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from ..errors import OutputError
from ..io.atomic import atomic_write_text
from ..io.writable import describe

LOG_NAME = "train_log.csv"
#: progress-bar label of each logged training term
BAR_NAMES = {"train/loss": "loss", "train/loss_task": "task", "train/loss_router": "router"}


class IterationProgressBar(TQDMProgressBar):
    """One bar over the run's iterations (not epochs), with loss / task / router."""

    @property
    def train_description(self) -> str:
        return "train"

    def init_train_tqdm(self):
        bar = super().init_train_tqdm()
        bar.total = self.trainer.max_steps if self.trainer.max_steps > 0 else None
        return bar

    def on_train_epoch_start(self, trainer: L.Trainer, *_: Any) -> None:
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        bar.n = bar.initial = trainer.global_step
        bar.set_description("train")
        bar.refresh()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is not None and not bar.disable and self._should_update(trainer.global_step, bar.total):
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        metrics = trainer.progress_bar_metrics
        return {label: f"{float(metrics[key]):.4g}" for key, label in BAR_NAMES.items() if key in metrics}


def read_log(path: Path, up_to_step: int | None = None) -> tuple[list[str], list[dict[str, str]]]:
    """Header and complete rows of a ``train_log.csv`` (rows after ``up_to_step`` and a torn last line dropped)."""
    if not path.is_file():
        return [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        rows = []
        for row in reader:
            try:
                step = int(row["step"])
                if any(v is None or v == "" for v in row.values()) or None in row:
                    break
            except (TypeError, ValueError, KeyError):
                break
            if up_to_step is not None and step > up_to_step:
                break
            rows.append(row)
    return header, rows


class TrainLog(L.Callback):
    """Appends one row per step to ``out/train_log.csv`` (first process only); the header is fixed by the first
    step's terms."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOG_NAME
        self.header: list[str] = []
        self.lr = math.nan
        self.file: io.TextIOBase | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        header, rows = read_log(self.path, trainer.global_step) if trainer.global_step else ([], [])
        self.header = header
        text = io.StringIO()
        if header:
            writer = csv.DictWriter(text, fieldnames=header, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        try:
            atomic_write_text(self.path, text.getvalue())
            self.file = open(self.path, "a", newline="", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {describe(exc)}") from None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.lr = float(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.file is None:
            return
        terms = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items()
                 if k.startswith("train/loss")}
        if not self.header:
            self.header = ["step", *sorted(terms, key=lambda k: (k != "loss", k)), "lr"]
            self.file.write(",".join(self.header) + "\n")
        values = {**terms, "step": trainer.global_step, "lr": self.lr}
        try:
            self.file.write(",".join(f"{values.get(k, math.nan):.8g}" if k != "step" else str(values[k])
                                     for k in self.header) + "\n")
            self.file.flush()
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {describe(exc)}") from None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.close()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.close()


__all__ = ["BAR_NAMES", "IterationProgressBar", "LOG_NAME", "TrainLog", "read_log"]
