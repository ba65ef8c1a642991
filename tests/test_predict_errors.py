"""Bad inputs to ``rsmoe predict``, through the real command line (``rsmoe.cli.main``) and a real checkpoint.

Every case must end with exit status 2 and a single stderr line ``rsmoe predict: error: …`` that names the
problem, without a traceback, and must leave nothing at a final output path (no map, probabilities, preview or
summary, and no hidden temporary file either).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from safetensors.torch import save_file

import rsmoe.predict.cli as predict_cli
from rsmoe.cli import main
from test_predict import CRS, TRANSFORM, save_tiny_checkpoint, write_scene


@pytest.fixture(scope="session")
def checkpoint(bench, tmp_path_factory) -> Path:
    return save_tiny_checkpoint(bench, tmp_path_factory.mktemp("predict_errors") / "model.safetensors")


@pytest.fixture(autouse=True)
def _keep_malloc_settings(monkeypatch):
    """`rsmoe predict` tunes glibc malloc for its own process; not for the shared pytest process."""
    monkeypatch.setattr(predict_cli, "limit_heap_growth", lambda: False)


def raw_scene(h: int = 40, w: int = 36, bands: int = 4, seed: int = 0) -> np.ndarray:
    """Raw uint16 values around the synthetic benchmark's band means."""
    return np.random.default_rng(seed).integers(60, 400, size=(bands, h, w)).astype(np.uint16)


class World:
    """A temporary folder with a good 4-band scene, the checkpoint, and the argv of a run that would succeed."""

    def __init__(self, tmp: Path, checkpoint: Path):
        self.tmp, self.checkpoint = tmp, checkpoint
        self.out = tmp / "out"
        self.scene = write_scene(tmp / "scene.tif", raw_scene())

    def argv(self, *extra: str, checkpoint: Path | None = None, inputs: list[str] | None = None,
             out: Path | None = None) -> list[str]:
        return ["predict", "--checkpoint", str(checkpoint or self.checkpoint),
                *(inputs if inputs is not None else ["--input", str(self.scene)]), "--out", str(out or self.out),
                "--device", "cpu", "--no-progress", "--tile", "32", "--overlap", "8", *extra]

    def file(self, name: str, text: str = "not a raster\n") -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


def truncated_scene(w: World) -> Path:
    """A tiled scene whose header is intact (it passes the up-front checks) but whose tiles stop half-way."""
    path = w.tmp / "cut.tif"
    with rasterio.open(path, "w", driver="GTiff", width=200, height=200, count=4, dtype="uint16", crs=CRS,
                       transform=TRANSFORM, tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(raw_scene(200, 200))
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    return path


def not_rsmoe_safetensors(w: World) -> Path:
    path = w.tmp / "other.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path), metadata={"format": "pt"})
    return path


def wavelength_tagged_scene(w: World) -> Path:
    path = write_scene(w.tmp / "tagged.tif", raw_scene())
    with rasterio.open(path, "r+") as dst:
        for band, wl in enumerate([0.83, 0.66, 0.555, 0.485], start=1):
            dst.update_tags(band, ns="IMAGERY", CENTRAL_WAVELENGTH_UM=str(wl))
    return path


def same_stem_inputs(w: World) -> list[str]:
    paths = []
    for folder in ("a", "b"):
        (w.tmp / folder).mkdir()
        paths.append(str(write_scene(w.tmp / folder / "x.tif", raw_scene())))
    return ["--input", *paths]


def empty_folder(w: World) -> Path:
    (w.tmp / "empty").mkdir()
    (w.tmp / "empty" / "notes.txt").write_text("no scenes here\n")
    return w.tmp / "empty"


def read_only_out(w: World) -> Path:
    w.out.mkdir()
    os.chmod(w.out, 0o555)
    if os.access(w.out, os.W_OK):  # root: permissions do not apply
        os.chmod(w.out, 0o755)
        pytest.skip("this user can write to a read-only folder (root)")
    return w.out


#: id → (argv from a World, words the one-line message must contain)
CASES = {
    "missing checkpoint": (lambda w: w.argv(checkpoint=w.tmp / "nope.safetensors"),
                           ["checkpoint not found", "nope.safetensors"]),
    "checkpoint is not safetensors": (lambda w: w.argv(checkpoint=w.file("model.safetensors", "hello")),
                                      ["model.safetensors", "not a readable safetensors checkpoint"]),
    "safetensors that is not an rsmoe checkpoint": (lambda w: w.argv(checkpoint=not_rsmoe_safetensors(w)),
                                                    ["other.safetensors", "not an rsmoe checkpoint"]),
    "tile zero": (lambda w: w.argv("--tile", "0"), ["--tile must be positive"]),
    "tile negative": (lambda w: w.argv("--tile", "-64"), ["--tile must be positive", "-64"]),
    "tile below the model's smallest input": (lambda w: w.argv("--tile", "8", "--overlap", "0"),
                                              ["--tile 8", "smallest input", "16 px"]),
    "overlap negative": (lambda w: w.argv("--overlap", "-1"), ["--overlap", "got -1"]),
    "overlap not below tile": (lambda w: w.argv("--overlap", "32"), ["--overlap", "[0, 32)", "got 32"]),
    "batch size zero": (lambda w: w.argv("--batch-size", "0"), ["--batch-size must be positive"]),
    "devices zero": (lambda w: w.argv("--devices", "0"), ["--devices must be positive"]),
    "unknown device": (lambda w: w.argv("--device", "tpu9"), ["--device", "tpu9"]),
    "missing GPU": (lambda w: w.argv("--device", "cuda:7"), ["--device cuda:7", "CUDA GPU"]),
    "wrong band count": (lambda w: w.argv(inputs=["--input", str(write_scene(w.tmp / "pan.tif", raw_scene(bands=1)))]),
                         ["pan.tif", "1 band", "expects 4"]),
    "claimed wavelengths mismatch": (lambda w: w.argv("--wavelengths", "0.49", "0.56", "0.665", "0.95"),
                                     ["--wavelengths", "do not match", "band 4"]),
    "file wavelength metadata mismatch": (lambda w: w.argv(inputs=["--input", str(wavelength_tagged_scene(w))]),
                                          ["tagged.tif", "do not match"]),
    "unknown sensor": (lambda w: w.argv("--sensor", "no-such-sat"), ["unknown sensor", "no-such-sat"]),
    "bands out of range": (lambda w: w.argv("--bands", "1", "2", "3", "9"), ["--bands", "out of range"]),
    "empty input folder": (lambda w: w.argv(inputs=["--input-dir", str(empty_folder(w))]), ["no input scenes found"]),
    "input folder is a file": (lambda w: w.argv(inputs=["--input-dir", str(w.file("notes.txt"))]),
                               ["--input-dir", "notes.txt", "not a folder"]),
    "missing input": (lambda w: w.argv(inputs=["--input", str(w.tmp / "gone.tif")]), ["input not found", "gone.tif"]),
    "missing input list": (lambda w: w.argv(inputs=["--input-list", str(w.tmp / "list.txt")]),
                           ["--input-list", "list.txt", "not found"]),
    "unreadable scene": (lambda w: w.argv(inputs=["--input", str(w.file("junk.tif"))]), ["cannot read", "junk.tif"]),
    "truncated scene": (lambda w: w.argv("--probabilities", inputs=["--input", str(truncated_scene(w))]),
                        ["cannot read", "cut.tif", "truncated"]),
    "two inputs with one name": (lambda w: w.argv(inputs=same_stem_inputs(w)), ["share the name 'x'"]),
    "out is a file": (lambda w: w.argv(out=w.file("out")), ["--out", "is not a folder"]),
    "out below a file": (lambda w: w.argv(out=w.file("out") / "maps"), ["--out", "is not a folder", "is a file"]),
    "out not writable": (lambda w: w.argv(out=Path("/proc/rsmoe-predict-test/maps")),
                         ["--out", "/proc", "cannot write"]),
    "read-only out folder": (lambda w: w.argv(out=read_only_out(w)), ["--out", "cannot write"]),
}


def final_files(folder: Path) -> list[str]:
    """Every entry under ``folder`` (hidden temporaries included); none if it is missing or not a folder."""
    if not folder.is_dir():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_leaves_nothing(case, checkpoint, tmp_path, capsys):
    if case == "missing GPU" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    make_argv, words = CASES[case]
    w = World(tmp_path, checkpoint)
    argv = make_argv(w)
    out = Path(argv[argv.index("--out") + 1])
    before = out.read_bytes() if out.is_file() else None
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("rsmoe predict: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert final_files(out) == []  # no output, no temporary
    if before is not None:
        assert out.read_bytes() == before  # an --out that is a file is left alone
    assert not list(tmp_path.rglob("*_classes.tif")) and not list(tmp_path.rglob("*_summary.json"))
