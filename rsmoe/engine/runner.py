"""`rsmoe train` and `rsmoe eval`: build the model of a config, fit it with Lightning, evaluate every domain."""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import torch

from ..config import Config
from ..config_checks import check_input_sizes
from ..errors import RsmoeError, TrainingError
from ..io.atomic import atomic_write_json
from ..models.build import build_model
from ..models.protocol import SegModel
from ..report import LOSS_CURVE_NAME, save_loss_curve, write_eval_report
from ..sensors import get_sensor
from .checkpoints import CheckpointMeta, load_checkpoint, save_checkpoint
from .data import dataset_info, eval_loaders, train_loader
from .module import SegmentationModule
from .progress import LOG_NAME, IterationProgressBar, TrainLog
from .resume import RandomStates, check_resume_fits, read_resume_checkpoint
from .saving import AtomicCheckpointIO, PeriodicCheckpoint, bytes_needed, check_finite, prepare_run_folder
from .stream import ResumableLoader

CHECKPOINT_NAME = "model.safetensors"

#: Lightning messages that do not apply to rsmoe's runs (silenced only inside :func:`quiet_lightning`)
IGNORED_WARNINGS = (
    ".*does not have many workers.*",
    ".*LeafSpec.*",
    ".*sync_dist.*",
    ".*module\\(s\\) in eval mode.*",  # the frozen backbone, by design
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
                 devices: int | None = None, logger=False, plugins=()) -> L.Trainer:
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
        logger=logger,
        enable_checkpointing=False,  # rsmoe's own PeriodicCheckpoint writes last.ckpt
        callbacks=list(callbacks),
        plugins=list(plugins),
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=cfg.train.log_every,
        default_root_dir=cfg.output_dir,
    )


def tensorboard_logger(out: Path):
    """A TensorBoard logger writing to ``out/tensorboard`` when tensorboard is installed, else ``False``."""
    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        return False
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=str(out), name="tensorboard", version="")


def checkpoint_meta(cfg: Config, step: int) -> CheckpointMeta:
    info = dataset_info(cfg)
    sensor_key = info.sensors[cfg.data.source_domains[0]]
    sensor = get_sensor(sensor_key)
    return CheckpointMeta(config=cfg, class_names=list(info.classes), palette=[list(c) for c in info.palette],
                          mean=list(info.mean), std=list(info.std), wavelengths=list(sensor.wavelengths),
                          band_names=list(sensor.band_names), sensor=sensor_key, ignore_index=info.ignore_index,
                          step=step)


def build_for_config(cfg: Config, seed: bool = True) -> tuple[SegModel, CheckpointMeta]:
    """The config's model and checkpoint metadata. ``seed``: seed every generator with ``train.seed`` first (a
    fresh run; a resumed run is never re-seeded — its random states come from the checkpoint)."""
    meta = checkpoint_meta(cfg, 0)
    if seed:
        L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    return build_model(cfg, len(meta.class_names), meta.wavelengths, class_names=meta.class_names,
                       ignore_index=meta.ignore_index), meta


def evaluate(cfg: Config, model: SegModel, class_names: list[str], progress: bool = True) -> dict:
    """Per-domain metrics of ``model`` on the config's source (val) and target (test) domains.

    Runs on one device: a distributed sampler would pad uneven shards with repeated tiles and count them twice."""
    check_input_sizes(cfg, model.input_multiple)
    with quiet_lightning():
        names, loaders = eval_loaders(cfg)
        module = SegmentationModule(cfg, model, class_names, names)
        make_trainer(cfg, progress=progress, devices=1).validate(module, dataloaders=loaders, verbose=False)
    return module.last_metrics


def train(cfg: Config, progress: bool = True) -> dict:
    """Fit the config's model; write ``last.ckpt`` every ``train.checkpoint_every`` steps, then
    ``model.safetensors``, ``metrics.json``/``.md``, ``train_log.csv`` and ``loss_curve.png`` to output_dir.

    With ``train.resume`` the run continues from that ``last.ckpt`` exactly (:mod:`rsmoe.engine.resume`). With
    ``train.devices`` > 1 (DDP) every process trains; the first one then evaluates on one device and returns the
    metrics, the others return ``{"step": …}`` only."""
    out = Path(cfg.output_dir)
    resume = read_resume_checkpoint(cfg.train.resume) if cfg.train.resume else None
    with quiet_lightning():
        model, meta = build_for_config(cfg, seed=resume is None)
        check_input_sizes(cfg, model.input_multiple)
        names, loaders = eval_loaders(cfg)
        module = SegmentationModule(cfg, model, meta.class_names, names, meta.ignore_index)
        if resume is not None:
            expected = {f"model.{k}": v for k, v in model.trainable_state_dict().items()}
            check_resume_fits(resume, cfg.train.resume, expected, cfg.to_dict())
            del resume
        loader = train_loader(cfg)
        prepare_run_folder(out, bytes_needed(model.trainable_state_dict()))
        trainer, saver = fit(cfg, module, loader, loaders, meta, progress)
    meta.step = int(trainer.global_step)
    if not trainer.is_global_zero:
        return {"step": meta.step}
    if not saver.weights_written:  # resumed from a finished run: no step ran
        check_finite(model.trainable_state_dict(), meta.step)
        save_checkpoint(model, meta, out / CHECKPOINT_NAME)
    metrics = evaluate(cfg, model, meta.class_names, progress=progress)
    metrics["step"] = meta.step
    atomic_write_json(out / "metrics.json", metrics)
    write_eval_report(out / "metrics.md", metrics, title=f"{cfg.name}: evaluation at step {meta.step}")
    save_loss_curve(out / LOG_NAME, out / LOSS_CURVE_NAME, title=f"{cfg.name}: training losses")
    return metrics


def fit(cfg: Config, module: SegmentationModule, loader: ResumableLoader, val_loaders: list, meta: CheckpointMeta,
        progress: bool) -> tuple[L.Trainer, PeriodicCheckpoint]:
    """Run Lightning's fit with rsmoe's callbacks (random states, log, periodic checkpoints, iteration bar)."""
    out = Path(cfg.output_dir)

    def write_weights(step: int) -> None:
        meta.step = step
        save_checkpoint(module.model, meta, out / CHECKPOINT_NAME)

    saver = PeriodicCheckpoint(out, cfg.train.checkpoint_every, module.model.trainable_state_dict, write_weights)
    callbacks = [RandomStates(), TrainLog(out), saver] + ([IterationProgressBar()] if progress else [])
    validate = bool(cfg.train.val_interval)
    trainer = make_trainer(cfg, max_steps=cfg.train.iterations, progress=progress, callbacks=callbacks,
                           limit_val=1.0 if validate else 0, val_interval=cfg.train.val_interval or None,
                           logger=tensorboard_logger(out), plugins=[AtomicCheckpointIO()])
    loader.track(lambda: trainer.global_step)
    try:
        trainer.fit(module, train_dataloaders=loader, val_dataloaders=val_loaders if validate else None,
                    ckpt_path=cfg.train.resume)
    except TrainingError as exc:
        raise TrainingError(f"{exc}; {last_checkpoint_note(saver.path)}") from None
    except RsmoeError as exc:
        raise without_worker_traceback(exc) from None
    return trainer, saver


def last_checkpoint_note(path: Path) -> str:
    """Where a stopped run can resume from: the step of ``path`` (a ``last.ckpt``), or that there is none."""
    if not path.is_file():
        return "no checkpoint was written yet"
    try:
        step = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"]
    except Exception:  # noqa: BLE001 - only a note in a message
        return f"the last good checkpoint is {path}"
    return f"the last good checkpoint is {path}, step {step}"


def without_worker_traceback(exc: RsmoeError) -> RsmoeError:
    """A user error raised in a DataLoader worker reaches the main process with the worker's traceback folded into
    its message; keep only the message itself."""
    text = str(exc)
    marker = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    if "Original Traceback" in text and marker in text:
        return type(exc)(text.rsplit(marker, 1)[1])
    return exc


def evaluate_checkpoint(path: str | Path, cfg: Config | None = None, progress: bool = True) -> dict:
    """Load a checkpoint and evaluate it on its own config's domains (or with ``cfg``'s data and eval sections)."""
    model, meta = load_checkpoint(path)
    run_cfg = meta.config
    if cfg is not None:
        run_cfg.data = cfg.data
        run_cfg.eval = cfg.eval
    return evaluate(run_cfg, model, meta.class_names, progress=progress)


__all__ = ["CHECKPOINT_NAME", "build_for_config", "checkpoint_meta", "evaluate", "evaluate_checkpoint", "fit",
           "make_trainer", "quiet_lightning", "tensorboard_logger", "train", "without_worker_traceback"]
