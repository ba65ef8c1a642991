"""The prepared format: one on-disk layout for every dataset rsmoe trains or evaluates on.

Layout of a prepared folder ``PREPARED``::

    PREPARED/
      dataset.yaml                       name, classes, palette, ignore_index, sensors, bands, normalization, dtype
      manifest.csv                       image,mask,domain,split,sensor,source_file,row,col
      images/<domain>/<split>/<stem>.tif C×H×W GeoTIFF (deflate), CRS/transform kept from the source
      masks/<domain>/<split>/<stem>.tif  single-band uint8 GeoTIFF, class index or 255 = ignore
      heights/<domain>/<split>/<stem>.tif optional: single-band float32 GeoTIFF, height in metres (NaN = no data)

``manifest.csv`` has one row per tile; ``image`` and ``mask`` are paths relative to ``PREPARED``; ``sensor`` is a key
of :data:`rsmoe.sensors.SENSORS` (which gives band names and centre wavelengths); ``row``/``col`` are the pixel
offsets of the tile in ``source_file``. An optional last column ``height`` holds the path of the tile's height layer
(empty for a tile without one); writers add the column only when some tile has a height, and manifests without it
read as before. Heights are metres above the tile's lowest ground point (the synthetic world writes them, see
:func:`rsmoe.data.synthetic.make_heights`); training transforms do not crop or flip them.

``dataset.yaml`` keys: ``name``; ``classes`` (names, index = mask value); ``palette`` (``[r, g, b]`` per class);
``ignore_index`` (255); ``sensors`` (``{domain: sensor key}``, one sensor per domain); ``bands`` (``{sensor: number
of bands}``); ``normalization`` (``{mean: [...], std: [...]}`` per band, population statistics over every pixel of
every *training* tile, accumulated in float64; all training sensors must have the same band count); ``dtype`` (the
image dtype, a string, or ``{sensor: dtype}`` when sensors differ); ``tiles`` (``{domain: {split: count}}``); plus
any extra keys a writer adds (the synthetic benchmark records its parameters under ``synthetic``).

Write with :class:`PreparedWriter`, read with :func:`load_dataset_info` and :class:`PreparedDataset`.
"""
from __future__ import annotations

import csv
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import yaml

from rsmoe.data.raster import read_raster, write_raster
from rsmoe.sensors import get_sensor

MANIFEST_COLUMNS = ("image", "mask", "domain", "split", "sensor", "source_file", "row", "col")
HEIGHT_COLUMN = "height"  # optional manifest column after MANIFEST_COLUMNS: the height layer's path
IGNORE_INDEX = 255
_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def _safe_name(text: str) -> str:
    """A file-system-safe version of ``text`` (path separators and spaces become ``_``)."""
    return _SAFE.sub("_", str(text)).strip("._") or "x"


class _RunningStats:
    """Per-band mean and population variance over many tiles (float64, pairwise combination of tile moments)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, image: np.ndarray) -> None:
        x = image.reshape(image.shape[0], -1).astype(np.float64)
        n = x.shape[1]
        if n == 0:
            return
        mean = x.mean(axis=1)
        m2 = ((x - mean[:, None]) ** 2).sum(axis=1)
        if self.mean is None:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def result(self) -> tuple[list[float], list[float]]:
        assert self.mean is not None and self.m2 is not None
        return self.mean.tolist(), np.sqrt(self.m2 / self.count).tolist()


class PreparedWriter:
    """Write a prepared dataset tile by tile; nothing appears at ``out_dir`` until :meth:`close` succeeds.

    Tiles go into the temporary sibling folder ``out_dir.parent/.{out_dir.name}.tmp-<pid>``; ``close()`` writes
    ``manifest.csv`` and ``dataset.yaml`` there and renames it to ``out_dir`` (an existing ``out_dir`` is renamed
    away first and deleted after). Any error in ``close()``, or an exception inside ``with PreparedWriter(...)``,
    deletes the temporary folder and leaves ``out_dir`` as it was.

    ``extra`` (or the ``extra`` attribute) is a dict of additional top-level keys for ``dataset.yaml``.
    ``domains``, if given, declares the domains up front: a tile of another domain is an error, and ``close()``
    refuses a declared domain that received no tile.
    """

    def __init__(
        self,
        out_dir: str | Path,
        name: str,
        classes: Sequence[str],
        palette: Sequence[Sequence[int]],
        extra: dict[str, Any] | None = None,
        domains: Sequence[str] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.name = name
        self.classes = [str(c) for c in classes]
        self.palette = [[int(v) for v in rgb] for rgb in palette]
        if not self.classes:
            raise ValueError(f"{self.out_dir}: no classes given")
        if len(self.palette) != len(self.classes) or any(len(rgb) != 3 for rgb in self.palette):
            raise ValueError(
                f"{self.out_dir}: palette must hold one [r, g, b] per class; got {len(self.palette)} entries "
                f"for {len(self.classes)} classes"
            )
        if len(self.classes) > IGNORE_INDEX:
            raise ValueError(
                f"{self.out_dir}: at most {IGNORE_INDEX} classes fit a uint8 mask, got {len(self.classes)}"
            )
        self.extra: dict[str, Any] = dict(extra or {})
        self.tmp_dir = self.out_dir.parent / f".{self.out_dir.name}.tmp-{os.getpid()}"
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.mkdir(parents=True)
        self._rows: list[dict[str, Any]] = []
        self._stems: set[str] = set()
        self._sensors: dict[str, str] = {}
        self._dtypes: dict[str, str] = {}
        self._declared = list(domains) if domains is not None else None
        self._tiles: dict[str, dict[str, int]] = {d: {} for d in self._declared or ()}
        self._train_stats = _RunningStats()
        self._train_bands: tuple[int, str] | None = None
        self._closed = False

    # -- context manager ---------------------------------------------------------------------------------------
    def __enter__(self) -> "PreparedWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()

    def abort(self) -> None:
        """Delete the temporary folder; ``out_dir`` is left untouched."""
        self._closed = True
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    # -- writing -----------------------------------------------------------------------------------------------
    def add_tile(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        domain: str,
        split: str,
        sensor: str,
        source_file: str = "",
        row: int = 0,
        col: int = 0,
        crs: Any = None,
        transform: Any = None,
        height: np.ndarray | None = None,
    ) -> None:
        """Validate one tile (image C×H×W, mask H×W, optional ``height`` H×W in metres) and write it as GeoTIFFs."""
        if self._closed:
            raise RuntimeError(f"{self.out_dir}: writer is closed")
        where = f"tile {source_file or '<no source file>'} (row {row}, col {col}, domain {domain}, split {split})"
        image = np.asarray(image)
        mask = np.asarray(mask)
        try:
            sensor_def = get_sensor(sensor)
        except KeyError as e:
            raise ValueError(f"{where}: {e.args[0]}") from None
        if image.ndim != 3:
            raise ValueError(f"{where}: image must be C×H×W, got shape {image.shape}")
        if image.shape[0] != sensor_def.num_bands:
            raise ValueError(
                f"{where}: image has {image.shape[0]} bands, sensor {sensor} expects {sensor_def.num_bands}"
            )
        if mask.ndim != 2:
            raise ValueError(f"{where}: mask must be H×W, got shape {mask.shape}")
        if mask.shape != image.shape[1:]:
            raise ValueError(f"{where}: mask shape {mask.shape} does not match image shape {image.shape[1:]}")
        if not np.issubdtype(mask.dtype, np.integer):
            raise ValueError(f"{where}: mask must hold integers, got dtype {mask.dtype}")
        if height is not None and np.shape(height) != mask.shape:
            raise ValueError(f"{where}: height shape {np.shape(height)} does not match the mask shape {mask.shape}")
        bad = (mask != IGNORE_INDEX) & ((mask < 0) | (mask >= len(self.classes)))
        if bad.any():
            value = int(mask[bad].flat[0])
            raise ValueError(
                f"{where}: mask value {value} is not a class index (0..{len(self.classes) - 1} for "
                f"{len(self.classes)} classes) nor the ignore index {IGNORE_INDEX}"
            )
        if self._declared is not None and domain not in self._declared:
            raise ValueError(f"{where}: domain {domain} is not one of the declared domains {self._declared}")
        known = self._sensors.get(domain, sensor)
        if known != sensor:
            raise ValueError(f"{where}: domain {domain} already holds sensor {known}, got {sensor}")
        if split == "train" and self._train_bands is not None and self._train_bands[0] != image.shape[0]:
            raise ValueError(
                f"{where}: training tiles of sensor {sensor} have {image.shape[0]} bands but training tiles of "
                f"sensor {self._train_bands[1]} have {self._train_bands[0]}; normalisation statistics need "
                "one band count in the train split"
            )

        if source_file:
            stem = f"{_safe_name(Path(source_file).stem)}_r{int(row)}_c{int(col)}"
        else:
            stem = f"tile{len(self._rows):06d}"
        sub = f"{_safe_name(domain)}/{_safe_name(split)}"
        if f"{sub}/{stem}" in self._stems:
            stem = f"{stem}_{len(self._rows):06d}"
        self._stems.add(f"{sub}/{stem}")
        image_rel = f"images/{sub}/{stem}.tif"
        mask_rel = f"masks/{sub}/{stem}.tif"
        write_raster(self.tmp_dir / image_rel, image, crs=crs, transform=transform)
        write_raster(self.tmp_dir / mask_rel, mask.astype(np.uint8), crs=crs, transform=transform)
        height_rel = ""
        if height is not None:
            height_rel = f"heights/{sub}/{stem}.tif"
            write_raster(self.tmp_dir / height_rel, np.asarray(height, dtype=np.float32), crs=crs,
                         transform=transform, nodata=float("nan"))

        # State changes only after the tile is valid and written.
        self._sensors.setdefault(domain, sensor)
        if split == "train":
            self._train_bands = self._train_bands or (image.shape[0], sensor)
            self._train_stats.update(image)
        self._dtypes.setdefault(sensor, image.dtype.name)
        counts = self._tiles.setdefault(domain, {})
        counts[split] = counts.get(split, 0) + 1
        self._rows.append(
            {
                "image": image_rel,
                "mask": mask_rel,
                "domain": domain,
                "split": split,
                "sensor": sensor,
                "source_file": str(source_file),
                "row": int(row),
                "col": int(col),
                HEIGHT_COLUMN: height_rel,
            }
        )

    def close(self) -> Path:
        """Write ``manifest.csv`` and ``dataset.yaml`` and move the dataset to ``out_dir``; returns ``out_dir``."""
        if self._closed:
            raise RuntimeError(f"{self.out_dir}: writer is already closed")
        try:
            self._finish()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.out_dir

    def _finish(self) -> None:
        if not self._rows:
            raise ValueError(f"{self.out_dir}: refusing to write an empty dataset (no tiles were added)")
        empty = [d for d, counts in self._tiles.items() if sum(counts.values()) == 0]
        if empty:
            raise ValueError(f"{self.out_dir}: domain(s) {empty} have zero tiles")
        if self._train_bands is None:
            raise ValueError(
                f"{self.out_dir}: no tile in split 'train'; normalisation statistics are computed on the train split"
            )
        mean, std = self._train_stats.result()
        dtypes = set(self._dtypes.values())
        info = {
            "name": self.name,
            "classes": self.classes,
            "palette": self.palette,
            "ignore_index": IGNORE_INDEX,
            "sensors": dict(self._sensors),
            "bands": {s: get_sensor(s).num_bands for s in sorted(set(self._sensors.values()))},
            "normalization": {"mean": mean, "std": std},
            "dtype": dtypes.pop() if len(dtypes) == 1 else dict(self._dtypes),
            "tiles": {d: dict(c) for d, c in self._tiles.items()},
        }
        for key, value in self.extra.items():
            if key in info:
                raise ValueError(f"{self.out_dir}: extra key {key!r} collides with a dataset.yaml key")
            info[key] = value
        with_height = any(r[HEIGHT_COLUMN] for r in self._rows)
        columns = MANIFEST_COLUMNS + ((HEIGHT_COLUMN,) if with_height else ())
        with open(self.tmp_dir / "manifest.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self._rows)
        with open(self.tmp_dir / "dataset.yaml", "w", encoding="utf-8") as f:
            yaml.safe_dump(info, f, sort_keys=False)

        old = self.out_dir.parent / f".{self.out_dir.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        if self.out_dir.exists():
            os.replace(self.out_dir, old)
        try:
            os.replace(self.tmp_dir, self.out_dir)
        except BaseException:
            if old.exists() and not self.out_dir.exists():
                os.replace(old, self.out_dir)
            raise
        shutil.rmtree(old, ignore_errors=True)


@dataclass
class DatasetInfo:
    """The contents of a prepared folder's ``dataset.yaml`` (``mean``/``std`` are the training-split statistics)."""

    name: str
    classes: list[str]
    palette: list[list[int]]
    ignore_index: int
    sensors: dict[str, str]
    bands: dict[str, int]
    mean: list[float]
    std: list[float]
    root: Path
    dtype: Any = None
    extra: dict[str, Any] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def domains(self) -> list[str]:
        return list(self.sensors)


def load_dataset_info(root: str | Path) -> DatasetInfo:
    """Read ``root/dataset.yaml``; a one-line error names the file and what is missing or wrong."""
    root = Path(root)
    path = root / "dataset.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {root} is not a prepared dataset (create one with `rsmoe prepare` or "
            "rsmoe.data.synthetic.synthesize)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    required = ("name", "classes", "palette", "ignore_index", "sensors", "bands", "normalization")
    missing = [k for k in required if k not in raw]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    norm = raw["normalization"]
    if not isinstance(norm, dict) or "mean" not in norm or "std" not in norm:
        raise ValueError(f"{path}: normalization must be a mapping with 'mean' and 'std' lists, got {norm!r}")
    if len(norm["mean"]) != len(norm["std"]):
        raise ValueError(
            f"{path}: normalization mean has {len(norm['mean'])} values but std has {len(norm['std'])}"
        )
    if not isinstance(raw["sensors"], dict) or not isinstance(raw["classes"], list):
        raise ValueError(f"{path}: 'sensors' must be a mapping domain -> sensor and 'classes' a list")
    if len(raw["palette"]) != len(raw["classes"]):
        raise ValueError(
            f"{path}: palette has {len(raw['palette'])} entries for {len(raw['classes'])} classes"
        )
    known = set(required) | {"dtype"}
    return DatasetInfo(
        name=str(raw["name"]),
        classes=[str(c) for c in raw["classes"]],
        palette=[[int(v) for v in rgb] for rgb in raw["palette"]],
        ignore_index=int(raw["ignore_index"]),
        sensors={str(k): str(v) for k, v in raw["sensors"].items()},
        bands={str(k): int(v) for k, v in raw["bands"].items()},
        mean=[float(v) for v in norm["mean"]],
        std=[float(v) for v in norm["std"]],
        root=root,
        dtype=raw.get("dtype"),
        extra={k: v for k, v in raw.items() if k not in known},
    )


def read_manifest(root: str | Path) -> list[dict[str, Any]]:
    """The rows of ``root/manifest.csv`` as dicts (``row``/``col`` as int; ``height`` "" when absent)."""
    path = Path(root) / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {root} is not a prepared dataset")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) not in (MANIFEST_COLUMNS, MANIFEST_COLUMNS + (HEIGHT_COLUMN,)):
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {list(MANIFEST_COLUMNS)} "
                             f"(optionally followed by {HEIGHT_COLUMN!r})")
        rows = []
        for r in reader:
            r["row"], r["col"] = int(r["row"]), int(r["col"])
            r.setdefault(HEIGHT_COLUMN, "")
            rows.append(r)
    return rows


class PreparedDataset(torch.utils.data.Dataset):
    """Tiles of a prepared folder as sample dicts.

    Each sample: ``image`` float32 tensor C×H×W normalised as ``(x - mean) / std`` with the training-split
    statistics of ``dataset.yaml`` (computed in float32); ``mask`` int64 tensor H×W (255 = ignore);
    ``wavelengths`` float32 tensor (C,) of band centres in µm from the sensor registry; ``domain`` str; ``meta``
    ``{"image": absolute path, "sensor": key, "row": int, "col": int}``; ``height`` float32 tensor H×W in metres
    (NaN = no data), only for tiles with a height layer. ``transform`` (a callable on the sample
    dict) runs after normalisation. ``cache=True`` keeps decoded, normalised tiles in memory.

    ``split`` (a name or a list of names) and ``domains`` (a list) filter the manifest; ``None`` keeps all. An
    unknown domain is an error; a split a domain does not have gives an empty dataset (callers check ``len``).
    """

    def __init__(
        self,
        root: str | Path,
        split: str | Sequence[str] | None = None,
        domains: Sequence[str] | None = None,
        transform: Callable[[dict], dict] | None = None,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        self.info = load_dataset_info(self.root)
        rows = read_manifest(self.root)
        known_domains = list(dict.fromkeys(r["domain"] for r in rows))
        if isinstance(domains, str):
            domains = [domains]
        if domains is not None:
            unknown = [d for d in domains if d not in known_domains]
            if unknown:
                raise ValueError(f"{self.root}: unknown domain(s) {unknown}; known domains: {known_domains}")
            rows = [r for r in rows if r["domain"] in set(domains)]
        if split is not None:
            splits = {split} if isinstance(split, str) else set(split)
            rows = [r for r in rows if r["split"] in splits]
        self.rows = rows
        self.transform = transform
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._heights: dict[int, np.ndarray] = {}
        self._mean = np.asarray(self.info.mean, dtype=np.float32)
        std = np.asarray(self.info.std, dtype=np.float32)
        self._std = np.where(std > 0, std, np.float32(1.0)).astype(np.float32)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def domains(self) -> list[str]:
        """Domains of the selected tiles, in manifest order."""
        return list(dict.fromkeys(r["domain"] for r in self.rows))

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def classes(self) -> list[str]:
        return self.info.classes

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index in self._cache:
            return self._cache[index]
        r = self.rows[index]
        image_path = self.root / r["image"]
        image = read_raster(image_path).astype(np.float32)
        if image.shape[0] != self._mean.shape[0]:
            raise ValueError(
                f"{image_path}: {image.shape[0]} bands (sensor {r['sensor']}) but the training-split "
                f"normalisation of {self.root / 'dataset.yaml'} has {self._mean.shape[0]}"
            )
        image = (image - self._mean[:, None, None]) / self._std[:, None, None]
        mask = read_raster(self.root / r["mask"], squeeze=True).astype(np.int64)
        if self.cache:
            self._cache[index] = (image, mask)
        return image, mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} tiles")
        image, mask = self._load(index)
        r = self.rows[index]
        sample = {
            "image": torch.from_numpy(image.copy()),
            "mask": torch.from_numpy(mask.copy()),
            "wavelengths": torch.tensor(get_sensor(r["sensor"]).wavelengths, dtype=torch.float32),
            "domain": r["domain"],
            "meta": {
                "image": str(self.root / r["image"]),
                "sensor": r["sensor"],
                "row": r["row"],
                "col": r["col"],
            },
        }
        if r[HEIGHT_COLUMN]:
            sample["height"] = torch.from_numpy(self._height(index))
        if self.transform is not None:
            sample = self.transform(sample)
        return sample

    def _height(self, index: int) -> np.ndarray:
        """The H×W float32 height layer (metres) of tile ``index`` (cached with ``cache=True``)."""
        if index in self._heights:
            return self._heights[index].copy()
        height = read_raster(self.root / self.rows[index][HEIGHT_COLUMN], squeeze=True).astype(np.float32)
        if self.cache:
            self._heights[index] = height
        return height.copy()
