"""`rsmoe train` and `rsmoe eval`: build the model of a config, fit it with Lightning, evaluate every domain."""
from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from ..config import Config
from ..io.atomic import atomic_write_json
from ..models.build import build_model
from ..models.protocol import SegModel
from ..report import write_eval_report
from ..sensors import get_sensor
from .checkpoints import CheckpointMeta, load_checkpoint, save_checkpoint
from .data import dataset_info, eval_loaders, train_loader
from .module import SegmentationModule

CHECKPOINT_NAME = "model.safetensors"

#: Lightning messages that do not apply to rsmoe's runs (silenced only inside :func:`quiet_lightning`)
IGNORED_WARNINGS = (
    ".*does not have many workers.*",
    ".*LeafSpec.*",
    ".*sync_dist.*",
    ".*module\\(s\\) in eval mode.*",  # the frozen backbone, by design
    ".*callbacks used to create the checkpoint.*",
    ".*no `val_dataloader`.*",
)


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's info logs and the warnings of :data:`IGNORED_WARNINGS` silenced for the block only."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for pattern in IGNORED_WARNINGS:
            warnings.filterwarnings("ignore", pattern)
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def make_trainer(cfg: Config, *, max_steps: int = -1, progress: bool = True, callbacks=(),
                 limit_val: float | int = 1.0, val_interval: int | None = None,
                 devices: int | None = None) -> L.Trainer:
    return L.Trainer(
        accelerator=cfg.train.accelerator,
        devices=devices or cfg.train.devices,
        precision=cfg.train.precision,
        max_steps=max_steps,
        max_epochs=-1 if max_steps > 0 else None,
        val_check_interval=val_interval,
        check_val_every_n_epoch=None if val_interval else 1,
        limit_val_batches=limit_val,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=bool(callbacks),
        callbacks=list(callbacks),
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=cfg.train.log_every,
        default_root_dir=cfg.output_dir,
    )


def checkpoint_meta(cfg: Config, step: int) -> CheckpointMeta:
    info = dataset_info(cfg)
    sensor_key = info.sensors[cfg.data.source_domains[0]]
    sensor = get_sensor(sensor_key)
    return CheckpointMeta(config=cfg, class_names=list(info.classes), palette=[list(c) for c in info.palette],
                          mean=list(info.mean), std=list(info.std), wavelengths=list(sensor.wavelengths),
                          band_names=list(sensor.band_names), sensor=sensor_key, ignore_index=info.ignore_index,
                          step=step)


def build_for_config(cfg: Config) -> tuple[SegModel, CheckpointMeta]:
    meta = checkpoint_meta(cfg, 0)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    return build_model(cfg, len(meta.class_names), meta.wavelengths, class_names=meta.class_names,
                       ignore_index=meta.ignore_index), meta


def evaluate(cfg: Config, model: SegModel, class_names: list[str], progress: bool = True) -> dict:
    """Per-domain metrics of ``model`` on the config's source (val) and target (test) domains.

    Runs on one device: a distributed sampler would pad uneven shards with repeated tiles and count them twice."""
    with quiet_lightning():
        names, loaders = eval_loaders(cfg)
        module = SegmentationModule(cfg, model, class_names, names)
        make_trainer(cfg, progress=progress, devices=1).validate(module, dataloaders=loaders, verbose=False)
    return module.last_metrics


def train(cfg: Config, progress: bool = True) -> dict:
    """Fit the config's model; write ``model.safetensors``, ``last.ckpt`` and ``metrics.json`` to output_dir.

    With ``train.devices`` > 1 (DDP) every process trains; the first one then evaluates on one device and returns
    the metrics, the others return ``{"step": …}`` only."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_lightning():
        model, meta = build_for_config(cfg)
        names, loaders = eval_loaders(cfg)
        module = SegmentationModule(cfg, model, meta.class_names, names, meta.ignore_index)
        ckpt_cb = ModelCheckpoint(dirpath=out, filename="last", save_last=False, save_top_k=1,
                                  every_n_train_steps=max(1, cfg.train.val_interval or cfg.train.iterations),
                                  enable_version_counter=False)
        trainer = make_trainer(cfg, max_steps=cfg.train.iterations, progress=progress, callbacks=[ckpt_cb],
                               limit_val=1.0 if cfg.train.val_interval else 0,
                               val_interval=cfg.train.val_interval or None)
        trainer.fit(module, train_dataloaders=train_loader(cfg),
                    val_dataloaders=loaders if cfg.train.val_interval else None, ckpt_path=cfg.train.resume)
    meta.step = int(trainer.global_step)
    if not trainer.is_global_zero:
        return {"step": meta.step}
    save_checkpoint(model, meta, out / CHECKPOINT_NAME)
    metrics = evaluate(cfg, model, meta.class_names, progress=progress)
    metrics["step"] = meta.step
    atomic_write_json(out / "metrics.json", metrics)
    write_eval_report(out / "metrics.md", metrics, title=f"{cfg.name}: evaluation at step {meta.step}")
    return metrics


def evaluate_checkpoint(path: str | Path, cfg: Config | None = None, progress: bool = True) -> dict:
    """Load a checkpoint and evaluate it on its own config's domains (or with ``cfg``'s data and eval sections)."""
    model, meta = load_checkpoint(path)
    run_cfg = meta.config
    if cfg is not None:
        run_cfg.data = cfg.data
        run_cfg.eval = cfg.eval
    return evaluate(run_cfg, model, meta.class_names, progress=progress)


__all__ = ["CHECKPOINT_NAME", "build_for_config", "checkpoint_meta", "evaluate", "evaluate_checkpoint",
           "make_trainer", "quiet_lightning", "train"]
