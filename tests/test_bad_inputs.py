"""The bad-input table: every user-facing problem of train, eval, params, sweep, synth, demo, captions, convert and
prepare, run through the real command line.

Each case asserts exit status 2, exactly one line on stderr (``rsmoe <cmd>: error: …``) that names the problem, no
traceback, and that nothing half-written is left: no temporary or probe file anywhere under the case's folder, none
of the command's final outputs, and any ``last.ckpt`` present is complete. Most cases run ``rsmoe.cli.main``
in-process; those where a crash must be observed run a subprocess. Read-only and full output folders use a
read-only / tiny tmpfs mount where the test can make one (chmod where it is effective), and are skipped otherwise.
"""
from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from rsmoe.cli import main
from rsmoe.demo import demo_config_path

DEMO = str(demo_config_path())


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_run(bench, tmp_path_factory):
    """One tiny trained run shared by the table: its model.safetensors and last.ckpt."""
    out = tmp_path_factory.mktemp("tiny_run")
    assert main(["train", "--config", DEMO, "--no-progress", "--set", f"data.root={bench}", "--set",
                 f"output_dir={out}", "--set", "train.iterations=2", "--set", "data.batch_size=2"]) == 0
    return out


# ------------------------------------------------------------------------------------------------ case context
@dataclass
class Ctx:
    """What a case builds its command from: a private folder, the shared dataset and run, helpers that make bad
    files, and the final paths that must not appear."""

    tmp: Path
    bench: Path
    run: Path
    monkeypatch: pytest.MonkeyPatch
    finals: list[Path] = field(default_factory=list)
    mounts: list[Path] = field(default_factory=list)

    @property
    def ckpt(self) -> str:
        return str(self.run / "model.safetensors")

    @property
    def last(self) -> str:
        return str(self.run / "last.ckpt")

    def file(self, name: str, content: str | bytes) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def train(self, *sets: str, out: str | Path | None = None, config: str = DEMO, root: str | None = None) -> list:
        out = Path(out) if out is not None else self.tmp / "run"
        self.finals += [out / n for n in ("model.safetensors", "metrics.json", "metrics.md", "loss_curve.png")]
        argv = ["train", "--config", config, "--no-progress", "--set", f"data.root={root or self.bench}", "--set",
                f"output_dir={out}", "--set", "train.iterations=2", "--set", "data.batch_size=2"]
        for s in sets:
            argv += ["--set", s]
        return argv

    def eval(self, *args: str, out: str | None = None) -> list:
        if out and not Path(out).is_dir():
            self.finals += [Path(out), Path(out).with_suffix(".md")]
        return ["eval", "--no-progress", *args, *(["--out", out] if out else [])]

    def dataset(self, edit: Callable[[Path, list[dict]], None]) -> str:
        """A copy of the shared dataset changed by ``edit(root, manifest rows)``."""
        root = self.tmp / "data"
        shutil.copytree(self.bench, root)
        edit(root, list(csv.DictReader(open(root / "manifest.csv"))))
        return str(root)

    def mount_tmpfs(self, size: str, readonly: bool = False) -> Path:
        """A fresh tmpfs of ``size`` (read-only if asked); the case is skipped where mounting is not allowed."""
        path = self.tmp / f"mnt{len(self.mounts)}"
        path.mkdir()
        options = f"size={size}" + (",ro" if readonly else "")
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                                  timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is None or done.returncode:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        self.mounts.append(path)
        return path

    def readonly(self) -> Path:
        """A folder the process cannot write: chmod 555 where that is effective, else a read-only tmpfs."""
        path = self.tmp / "readonly"
        path.mkdir()
        path.chmod(0o555)
        if not os.access(path, os.W_OK):
            return path
        path.chmod(0o755)
        return self.mount_tmpfs("1m", readonly=True)

    def full(self, size: str = "16k") -> Path:
        return self.mount_tmpfs(size)

    def cleanup(self) -> None:
        for path in reversed(self.mounts):
            subprocess.run(["umount", str(path)], capture_output=True, timeout=20)
        with contextlib.suppress(OSError):
            (self.tmp / "readonly").chmod(0o755)


# ------------------------------------------------------------------------------------------------- bad files
def train_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["split"] == "train" and r["domain"] == "GF-2"]


def every_train_image(write: Callable[[Path], None]) -> Callable[[Path, list[dict]], None]:
    """An edit applying ``write`` to every training image (so the first batch certainly meets one)."""
    return lambda root, rows: [write(root / r["image"]) for r in train_rows(rows)]


def edit_yaml(change: Callable[[dict], None]) -> Callable[[Path, list[dict]], None]:
    def edit(root: Path, rows: list[dict]) -> None:
        info = yaml.safe_load((root / "dataset.yaml").read_text())
        change(info)
        (root / "dataset.yaml").write_text(yaml.safe_dump(info))
    return edit


def label_nine(root: Path, rows: list[dict]) -> None:
    import rasterio

    for r in train_rows(rows):
        with rasterio.open(root / r["mask"]) as src:
            profile, mask = src.profile, src.read()
        mask[0, 0, 0] = 9
        with rasterio.open(root / r["mask"], "w", **profile) as dst:
            dst.write(mask)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def newer_checkpoint(c: Ctx) -> str:
    with safe_open(c.ckpt, framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    path = c.tmp / "v9.safetensors"
    save_file(tensors, str(path), metadata={**meta, "format_version": "9"})
    return str(path)


def other_run_config(c: Ctx) -> str:
    """The shared run's last.ckpt in a run folder of its own (resume writes into the folder it is given)."""
    return str(shutil.copy(c.last, c.tmp / "other.ckpt"))


def grid(c: Ctx, text: str) -> str:
    return c.file("grid.yaml", text.replace("DEMO", DEMO))


def never_evaluate(c: Ctx) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("evaluated before checking --out")

    c.monkeypatch.setattr("rsmoe.engine.runner.evaluate_checkpoint", fail)


def captions_cfg(c: Ctx, **entries) -> str:
    cfg = {"dataset": str(c.bench), "store": str(c.tmp / "store.sqlite"), "prompts": [1],
           "captioners": [{"name": "statistics", "backend": "statistics"}], "quality": {"clip": None},
           "encoder": {"path": "tiny", "dim": 8}, **entries}
    return c.file("captions.yaml", yaml.safe_dump(cfg))


# ------------------------------------------------------------------------------------------------- the table
#: (id, command line from a Ctx, regular expression the one-line message must match)
CASES: list[tuple[str, Callable[[Ctx], list], str]] = [
    # -- train: the config file and --set
    ("train-config-missing", lambda c: ["train", "--config", str(c.tmp / "nope.yaml")],
     r"config file not found: .*nope\.yaml"),
    ("train-config-not-yaml", lambda c: ["train", "--config", c.file("bad.yaml", "a: [1,\n")],
     r"bad\.yaml: not valid YAML"),
    ("train-config-not-a-mapping", lambda c: ["train", "--config", c.file("list.yaml", "- 1\n")],
     r"list\.yaml: expected a mapping at the top level, got list"),
    ("train-config-not-utf8", lambda c: ["train", "--config", c.file("bin.yaml", b"\xff\xfe\x00")],
     r"bin\.yaml: cannot read the config"),
    ("train-base-includes-itself", lambda c: ["train", "--config", c.file("cyc.yaml", "_base_: cyc.yaml\n")],
     r"cycle \(.*cyc\.yaml -> .*cyc\.yaml\)"),
    ("train-base-cycle-of-two", lambda c: [c.file("b.yaml", "_base_: a.yaml\n"),
                                           "train", "--config", c.file("a.yaml", "_base_: b.yaml\n")][1:],
     r"cycle \(.*a\.yaml -> .*b\.yaml -> .*a\.yaml\)"),
    ("train-base-missing", lambda c: ["train", "--config", c.file("mb.yaml", "_base_: gone.yaml\n")],
     r"config file not found: .*gone\.yaml"),
    ("train-set-without-equals", lambda c: c.train("adapter.rank"), r"override 'adapter\.rank': expected key=value"),
    ("train-set-not-yaml", lambda c: c.train("adapter.rank=[1,"),
     r"override 'adapter\.rank=\[1,': the value is not valid YAML"),
    ("train-set-unknown-key", lambda c: c.train("adapter.ranks=3"), r"adapter: unknown key\(s\) \['ranks'\]"),
    ("train-set-wrong-type", lambda c: c.train("adapter.rank=abc"), r"adapter\.rank: expected int, got 'abc'"),
    ("train-set-into-a-value", lambda c: c.train("adapter.rank.x=1"), r"adapter\.rank is a value, not a section"),
    # -- train: values that must be positive or known
    ("train-iterations-0", lambda c: c.train("train.iterations=0"), r"train\.iterations: must be ≥ 1, got 0"),
    ("train-iterations-negative", lambda c: c.train("train.iterations=-5"), r"train\.iterations: .* got -5"),
    ("train-batch-size-0", lambda c: c.train("data.batch_size=0"), r"data\.batch_size: must be ≥ 1, got 0"),
    ("train-eval-batch-size-0", lambda c: c.train("data.eval_batch_size=0"), r"data\.eval_batch_size: .* got 0"),
    ("train-rank-0", lambda c: c.train("adapter.rank=0"), r"adapter\.rank: must be ≥ 1, got 0"),
    ("train-rank-negative", lambda c: c.train("adapter.rank=-4"), r"adapter\.rank: must be ≥ 1, got -4"),
    ("train-tokens-0", lambda c: c.train("adapter.num_tokens=0"), r"adapter\.num_tokens: .* got 0"),
    ("train-experts-0", lambda c: c.train("adapter.num_experts=0"), r"adapter\.num_experts: .* got 0"),
    ("train-top-k-above-experts", lambda c: c.train("adapter.top_k=5"), r"adapter\.top_k: must be in 1\.\.num"),
    ("train-lr-0", lambda c: c.train("train.lr=0"), r"train\.lr: .* got 0\.0"),
    ("train-lr-negative", lambda c: c.train("train.lr=-1e-4"), r"train\.lr: .* got -0\.0001"),
    ("train-lr-nan", lambda c: c.train("train.lr=.nan"), r"train\.lr: .* got nan"),
    ("train-checkpoint-every-0", lambda c: c.train("train.checkpoint_every=0"), r"train\.checkpoint_every: .* 0"),
    ("train-devices-0", lambda c: c.train("train.devices=0"), r"train\.devices: must be ≥ 1, got 0"),
    ("train-precision-unknown", lambda c: c.train("train.precision=fp8"), r"train\.precision: got 'fp8'"),
    ("train-accelerator-unknown", lambda c: c.train("train.accelerator=tpu9"), r"train\.accelerator: got 'tpu9'"),
    ("train-head-unknown", lambda c: c.train("head=unet9"), r"head\.type: got 'unet9', expected one of"),
    ("train-head-option-unknown", lambda c: c.train("head.options={num_layers: 1}"),
     r"head\.options: unknown option\(s\) \['num_layers'\] for FPNHead"),
    ("train-crop-not-a-patch-multiple", lambda c: c.train("data.augment.crop=18"),
     r"data\.augment\.crop: 18 is not a multiple of the backbone's patch size 4"),
    ("train-backbone-config-unknown-key", lambda c: c.train("backbone.config.foo=1"), r"unknown config keys \['foo'\]"),
    ("train-backbone-pretrained-missing", lambda c: c.train(f"backbone.pretrained={c.tmp / 'gone'}"),
     r"DINOv3 checkpoint directory not found: .*gone"),
    ("train-backbone-pretrained-not-a-model", lambda c: c.train(f"backbone.pretrained={c.tmp}"),
     r"has no config\.json"),
    ("train-mpers-caption-store-missing", lambda c: c.train("model=mpers", "mpers.captioners=[statistics, llava]",
                                                             f"mpers.caption_store={c.tmp / 'gone.sqlite'}",
                                                             "mpers.text_encoder_name=tiny"),
     r"caption store .*gone\.sqlite not found"),
    # -- train: domains and the prepared dataset
    ("train-unknown-source-domain", lambda c: c.train("data.source_domains=[GF-7]"),
     r"data\.source_domains: unknown domain\(s\) \['GF-7'\].*known domains: \['GF-2', 'GF-1'"),
    ("train-unknown-target-domain", lambda c: c.train("data.target_domains=[Mars]"),
     r"data\.target_domains: unknown domain\(s\) \['Mars'\].*known domains"),
    ("train-no-source-domain", lambda c: c.train("data.source_domains=[]"), r"data\.source_domains is empty"),
    ("train-data-root-missing", lambda c: c.train(root=str(c.tmp / "gone")), r"gone/dataset\.yaml not found"),
    ("train-data-root-unset", lambda c: c.train("data.root=null"), r"data\.root is not set"),
    ("train-dataset-yaml-not-yaml", lambda c: c.train(root=c.dataset(lambda r, _: (r / "dataset.yaml")
                                                                      .write_text("name: [\n"))),
     r"dataset\.yaml: not valid YAML"),
    ("train-dataset-yaml-missing-key", lambda c: c.train(root=c.dataset(edit_yaml(lambda i: i.pop("classes")))),
     r"dataset\.yaml: missing key\(s\) classes"),
    ("train-dataset-unknown-sensor", lambda c: c.train(root=c.dataset(edit_yaml(
        lambda i: i["sensors"].update({"GF-2": "GF-99"})))), r"dataset\.yaml: domain GF-2: unknown sensor 'GF-99'"),
    ("train-normalisation-band-count", lambda c: c.train(root=c.dataset(edit_yaml(
        lambda i: i.update(normalization={"mean": [0.0] * 3, "std": [1.0] * 3})))),
     r"4 bands \(sensor GF-2\) but the training-split normalisation .* has 3"),
    ("train-manifest-missing", lambda c: c.train(root=c.dataset(lambda r, _: (r / "manifest.csv").unlink())),
     r"manifest\.csv not found"),
    ("train-manifest-row-truncated", lambda c: c.train(root=c.dataset(
        lambda r, _: (r / "manifest.csv").write_text((r / "manifest.csv").read_text()[:-110]))),  # into the row/col fields
     r"manifest\.csv, line \d+: expected \d+ fields .* the row is truncated"),
    ("train-manifest-columns", lambda c: c.train(root=c.dataset(lambda r, _: (r / "manifest.csv")
                                                                 .write_text("a,b\n1,2\n"))),
     r"manifest\.csv: columns \['a', 'b'\], expected \['image'"),
    ("train-tile-missing", lambda c: c.train(root=c.dataset(every_train_image(Path.unlink))),
     r"\.tif: image tile listed in the manifest is missing"),
    ("train-tile-corrupt", lambda c: c.train(root=c.dataset(every_train_image(lambda p: p.write_bytes(b"no tiff")))),
     r"\.tif: unreadable image tile"),
    ("train-tile-truncated", lambda c: c.train(root=c.dataset(every_train_image(truncate))),
     r"\.tif: unreadable image tile"),
    ("train-mask-missing", lambda c: c.train(root=c.dataset(
        lambda r, rows: [(r / x["mask"]).unlink() for x in train_rows(rows)])),
     r"\.tif: mask tile listed in the manifest is missing"),
    ("train-labels-out-of-range", lambda c: c.train(root=c.dataset(label_nine)),
     r"masks/GF-2/train/.*\.tif: label value 9 is not a class index \(0\.\.6\)"),
    ("train-non-finite-loss", lambda c: c.train("train.checkpoint_every=1", root=c.dataset(edit_yaml(
        lambda i: i["normalization"].update(std=[1e-45] * 4)))),
     r"step 1: the loss is nan for the batch of tiles \['images/GF-2/train/.*\.tif'.*no checkpoint was written"),
    ("train-diverging-lr", lambda c: c.train("train.lr=1e30", "train.iterations=6", "train.checkpoint_every=1"),
     r"step \d: the loss is nan .*; the last good checkpoint is .*last\.ckpt, step \d"),
    # -- train: the output folder
    ("train-output-dir-is-a-file", lambda c: c.train(out=c.file("afile", "x")), r"output_dir .*afile is a file"),
    ("train-output-dir-under-a-file", lambda c: c.train(out=Path(c.file("afile", "x")) / "sub"),
     r"output_dir .*afile/sub: a part of the path is a file"),
    ("train-output-dir-read-only", lambda c: c.train(out=c.readonly()), r"output_dir .* is not writable"),
    ("train-output-dir-read-only-parent", lambda c: c.train(out=c.readonly() / "run"),
     r"(cannot create output_dir .*run|output_dir .* is not writable)"),
    ("train-output-dir-too-small", lambda c: c.train(out=c.full("256k") / "run"),
     r"output_dir .*run: 0\.\d MiB free, about \d+\.\d MiB needed"),
    ("train-output-dir-full", lambda c: c.train(out=c.full("16k")), r"output_dir .* is not writable: No space left"),
    # -- train: resume
    ("train-resume-missing", lambda c: c.train(f"train.resume={c.tmp / 'gone.ckpt'}"),
     r"train\.resume: .*gone\.ckpt not found"),
    ("train-resume-garbage", lambda c: c.train(f"train.resume={c.file('g.ckpt', os.urandom(900))}"),
     r"train\.resume: .*g\.ckpt is not a readable training checkpoint"),
    ("train-resume-truncated", lambda c: c.train(
        f"train.resume={c.file('t.ckpt', Path(c.last).read_bytes()[:5000])}"),
     r"train\.resume: .*t\.ckpt is not a readable training checkpoint"),
    ("train-resume-safetensors", lambda c: c.train(f"train.resume={c.ckpt}"),
     r"model\.safetensors is not a Lightning training checkpoint .* cannot resume"),
    ("train-resume-other-model", lambda c: c.train(f"train.resume={other_run_config(c)}", "adapter.rank=4"),
     r"belongs to another model: model\.adapter\.\S+ has shape \(\d+(, \d+)*\) in the checkpoint, "
     r"\(\d+(, \d+)*\) in this config \(the configs differ first at adapter\.rank: 8 .* 4 now\)"),
    ("train-resume-other-config", lambda c: c.train(f"train.resume={other_run_config(c)}", "train.lr=0.5"),
     r"was made with another config, train\.lr: 0\.002 in the checkpoint, 0\.5 now"),
    # -- eval
    ("eval-checkpoint-missing", lambda c: c.eval("--checkpoint", str(c.tmp / "gone.safetensors")),
     r"checkpoint not found: .*gone\.safetensors"),
    ("eval-checkpoint-garbage", lambda c: c.eval("--checkpoint", c.file("g.safetensors", os.urandom(600))),
     r"g\.safetensors: not a readable safetensors checkpoint"),
    ("eval-checkpoint-truncated", lambda c: c.eval("--checkpoint", c.file(
        "t.safetensors", Path(c.ckpt).read_bytes()[:3000])), r"t\.safetensors: not a readable safetensors"),
    ("eval-checkpoint-is-last-ckpt", lambda c: c.eval("--checkpoint", c.last),
     r"last\.ckpt: a training checkpoint \(last\.ckpt\), not the model's weights"),
    ("eval-checkpoint-newer-format", lambda c: c.eval("--checkpoint", newer_checkpoint(c)),
     r"v9\.safetensors: checkpoint format version 9, this rsmoe reads 1\.\.2"),
    ("eval-out-into-missing-folder", lambda c: never_evaluate(c) or c.eval(
        "--checkpoint", c.ckpt, out=str(c.tmp / "gone" / "m.json")), r"the folder of --out .*m\.json does not exist"),
    ("eval-out-is-a-folder", lambda c: c.eval("--checkpoint", c.ckpt, out=str(c.tmp)), r"--out .* is a folder"),
    ("eval-out-read-only", lambda c: never_evaluate(c) or c.eval("--checkpoint", c.ckpt,
                                                                 out=str(c.readonly() / "m.json")),
     r"--out's folder .* is not writable"),
    ("eval-out-full", lambda c: never_evaluate(c) or c.eval("--checkpoint", c.ckpt, out=str(c.full() / "m.json")),
     r"--out's folder .* is not writable: No space left"),
    ("eval-set-without-config", lambda c: c.eval("--checkpoint", c.ckpt, "--set", "data.root=x"),
     r"--set needs --config"),
    ("eval-unknown-domain", lambda c: c.eval("--checkpoint", c.ckpt, "--config", DEMO, "--set",
                                             f"data.root={c.bench}", "--set", "data.target_domains=[GF-7]"),
     r"data\.target_domains: unknown domain\(s\) \['GF-7'\].*known domains"),
    # -- params
    ("params-config-missing", lambda c: ["params", "--config", str(c.tmp / "nope.yaml")], r"config file not found"),
    ("params-rank-0", lambda c: ["params", "--config", DEMO, "--set", "adapter.rank=0"], r"adapter\.rank: .* got 0"),
    ("params-num-classes-0", lambda c: ["params", "--config", DEMO, "--num-classes", "0"],
     r"--num-classes: must be ≥ 1, got 0"),
    ("params-pretrained-missing", lambda c: ["params", "--config", DEMO, "--set",
                                             f"backbone.pretrained={c.tmp / 'gone'}"],
     r"backbone\.pretrained: .*gone not found"),
    ("params-config-json-damaged", lambda c: [c.file("m/config.json", "{bad"), "params", "--config", DEMO, "--set",
                                              f"backbone.pretrained={c.tmp / 'm'}"][1:],
     r"config\.json: not a readable config\.json"),
    # -- sweep
    ("sweep-grid-missing", lambda c: ["sweep", "--grid", str(c.tmp / "nope.yaml"), "--list"], r"grid file not found"),
    ("sweep-grid-not-yaml", lambda c: ["sweep", "--grid", grid(c, "grid: [\n"), "--list"], r"not valid YAML"),
    ("sweep-grid-unknown-key", lambda c: ["sweep", "--grid", grid(c, "base: DEMO\ngrids: {}\n"), "--list"],
     r"unknown key\(s\) \['grids'\]"),
    ("sweep-grid-without-base", lambda c: ["sweep", "--grid", grid(c, "grid: {adapter.rank: [4]}\n"), "--list"],
     r"needs `base:` or `bases:`"),
    ("sweep-axis-not-a-list", lambda c: ["sweep", "--grid", grid(c, "base: DEMO\ngrid: {adapter.rank: 4}\n"),
                                         "--list"], r"grid axis 'adapter\.rank' must be a non-empty list"),
    ("sweep-base-missing", lambda c: ["sweep", "--grid", grid(c, "base: gone.yaml\ngrid: {adapter.rank: [4]}\n"),
                                      "--list"], r"base config not found: .*gone\.yaml"),
    ("sweep-invalid-point", lambda c: ["sweep", "--grid", grid(c, "base: DEMO\ngrid: {adapter.rank: [4, 0]}\n"),
                                       "--params"], r"point demo/rank=0: adapter\.rank: must be ≥ 1, got 0"),
    ("sweep-only-matches-nothing", lambda c: ["sweep", "--grid", grid(c, "base: DEMO\ngrid: {adapter.rank: [4]}\n"),
                                              "--list", "--only", "zzz"],
     r"--only 'zzz': no point of .* matches; points: \['demo/rank=4'\]"),
    ("sweep-set-not-yaml", lambda c: ["sweep", "--grid", grid(c, "base: DEMO\ngrid: {adapter.rank: [4]}\n"),
                                      "--list", "--set", "adapter.rank=[1,"], r"the value is not valid YAML"),
    # -- synth and demo
    ("synth-tile-too-small", lambda c: ["synth", "--out", str(c.tmp / "s"), "--tile", "8", "--no-progress"],
     r"--tile: must be at least 16 pixels, got 8"),
    ("synth-out-is-a-file", lambda c: ["synth", "--out", c.file("afile", "x"), "--no-progress"],
     r"--out .*afile is a file, not a folder"),
    ("synth-out-read-only", lambda c: ["synth", "--out", str(c.readonly() / "s"), "--no-progress"],
     r"(cannot create --out .*s: |--out .* is not writable)"),
    ("demo-bad-set", lambda c: ["demo", "--out", str(c.tmp / "d"), "--data", str(c.tmp / "dd"), "--no-progress",
                                "--set", "adapter.rank=0"], r"adapter\.rank: must be ≥ 1, got 0"),
    ("demo-out-is-a-file", lambda c: ["demo", "--out", c.file("afile", "x"), "--data", str(c.tmp / "dd"),
                                      "--no-progress"], r"--out .*afile is a file, not a folder"),
    # -- captions
    ("captions-config-missing", lambda c: ["captions", "--config", str(c.tmp / "nope.yaml")],
     r"config file not found"),
    ("captions-unknown-key", lambda c: ["captions", "--config", c.file("cu.yaml", "dataset: x\nfoo: 1\n")],
     r"cu\.yaml: (config: )?unknown key\(s\) \['foo'\]"),
    ("captions-dataset-missing", lambda c: ["captions", "--no-progress", "--config",
                                            captions_cfg(c, dataset=str(c.tmp / "gone"))],
     r"gone/dataset\.yaml not found"),
    ("captions-unknown-domain", lambda c: ["captions", "--no-progress", "--config", captions_cfg(c, domains=["GF-7"])],
     r"unknown domain\(s\) \['GF-7'\]; known domains"),
    ("captions-store-under-a-file", lambda c: ["captions", "--no-progress", "--config", captions_cfg(
        c, store=str(Path(c.file("afile", "x")) / "s.sqlite"))], r"cannot create the folder of caption store"),
    ("captions-store-not-sqlite", lambda c: ["captions", "--no-progress", "--config", captions_cfg(
        c, store=c.file("bad.sqlite", os.urandom(4096)))], r"bad\.sqlite: not a caption store"),
    # -- convert
    ("convert-missing-arguments", lambda c: ["convert", "dinov3-original"], r"usage: rsmoe convert FORMAT IN OUT"),
    ("convert-input-missing", lambda c: ["convert", "dinov3-original", str(c.tmp / "gone.pth"), str(c.tmp / "o")],
     r"checkpoint not found: .*gone\.pth"),
    ("convert-dilateformer-without-stage", lambda c: ["convert", "dilateformer", c.file("x.pth", "x"),
                                                      str(c.tmp / "o.safetensors")], r"dilateformer needs --stage"),
    # -- prepare
    ("prepare-unknown-dataset", lambda c: ["prepare", "nope", "--root", str(c.tmp), "--out", str(c.tmp / "p")],
     r"unknown dataset 'nope'; available: .*loveda"),
    ("prepare-no-dataset", lambda c: ["prepare", "--root", str(c.tmp), "--out", str(c.tmp / "p")],
     r"name a dataset: one of"),
    ("prepare-root-missing", lambda c: ["prepare", "loveda", "--root", str(c.tmp / "gone"), "--out",
                                        str(c.tmp / "p")], r"gone: release folder not found"),
    ("prepare-out-is-a-file", lambda c: ["prepare", "loveda", "--root", str(c.tmp), "--out", c.file("afile", "x")],
     r"--out .*afile is a file, not a folder"),
    ("prepare-out-read-only", lambda c: ["prepare", "loveda", "--root", str(c.tmp), "--out",
                                         str(c.readonly() / "p")], r"--out's folder .* is not writable"),
    ("prepare-flag-does-not-apply", lambda c: ["prepare", "loveda", "--root", str(c.tmp), "--out", str(c.tmp / "p"),
                                               "--regions", "x.csv"], r"--regions does not apply to loveda"),
    ("prepare-option-not-yaml", lambda c: ["prepare", "loveda", "--root", str(c.tmp), "--out", str(c.tmp / "p"),
                                           "--option", "targets=[1,"], r"--option targets: '\[1,' is not a YAML"),
    ("prepare-option-unknown", lambda c: ["prepare", "loveda", "--root", str(c.tmp), "--out", str(c.tmp / "p"),
                                          "--option", "zzz=1"], r"--option zzz: not an option of loveda"),
]

LEFTOVER = re.compile(r"\.tmp-\d+|\.rsmoe-write-probe-|\.old-\d+")


def check_nothing_half_written(c: Ctx) -> None:
    leftovers = [p for p in c.tmp.rglob("*") if LEFTOVER.search(p.name)]
    assert not leftovers, leftovers
    present = [p for p in c.finals if p.exists()]
    assert not present, present
    for last in c.tmp.rglob("last.ckpt"):  # a checkpoint kept from before the error is complete
        assert torch.load(last, weights_only=True)["global_step"] >= 1


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing_half_written(case, bench, tiny_run, tmp_path, monkeypatch,
                                                                      capsys):
    name, build, expected = case
    c = Ctx(tmp_path, bench, tiny_run, monkeypatch)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RSMOE_DEBUG", raising=False)
    try:
        argv = build(c)
        capsys.readouterr()
        status = main(argv)
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert status == 2, f"exit {status}; stderr: {captured.err[-2000:]}"
        assert "Traceback" not in captured.err + captured.out
        assert len(err.splitlines()) == 1, captured.err
        assert err.startswith(f"rsmoe {argv[0]}: error: "), err
        assert re.search(expected, err), f"{expected!r} not in {err!r}"
        check_nothing_half_written(c)
    finally:
        c.cleanup()


def test_the_table_has_at_least_60_cases():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


# ------------------------------------------------------------------------------------- crashes seen from outside
def run_subprocess(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RSMOE_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "rsmoe", *argv], capture_output=True, text=True, timeout=300,
                          env=env, cwd=cwd)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_bad_tile_met_while_training_is_one_line_in_a_real_process(bench, tmp_path, workers):
    """The whole process: exit status 2 and one stderr line, also when the tile is read in a DataLoader worker
    (whose traceback would otherwise be folded into the message)."""
    c = Ctx(tmp_path, bench, tmp_path, pytest.MonkeyPatch())
    argv = c.train(f"data.num_workers={workers}", root=c.dataset(label_nine))
    done = run_subprocess(argv, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert re.fullmatch(r"rsmoe train: error: \S+masks/GF-2/train/\S+\.tif: label value 9 is not a class index .*",
                        lines[0]), lines[0]
    check_nothing_half_written(c)


def test_a_non_finite_loss_ends_the_process_with_one_line(bench, tmp_path):
    c = Ctx(tmp_path, bench, tmp_path, pytest.MonkeyPatch())
    argv = c.train("train.iterations=6", "train.lr=1e30", "train.checkpoint_every=1")
    done = run_subprocess(argv, tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    line, = done.stderr.strip().splitlines()
    assert re.fullmatch(r"rsmoe train: error: step (\d): the loss is nan for the batch of tiles \[.*\]; .*", line)
    step = int(re.search(r"step (\d)", line).group(1))
    assert torch.load(tmp_path / "run" / "last.ckpt", weights_only=True)["global_step"] == step - 1
    check_nothing_half_written(c)
