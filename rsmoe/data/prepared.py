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
import rasterio
import torch
import yaml

from rsmoe.data.normalize import Normalize
from rsmoe.data.raster import read_raster, write_raster
from rsmoe.errors import DataError, MissingFileError, one_line
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
            raise DataError(f"{self.out_dir}: no classes given")
        if len(self.palette) != len(self.classes) or any(len(rgb) != 3 for rgb in self.palette):
            raise DataError(
                f"{self.out_dir}: palette must hold one [r, g, b] per class; got {len(self.palette)} entries "
                f"for {len(self.classes)} classes"
            )
        if len(self.classes) > IGNORE_INDEX:
            raise DataError(
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
    ) -> dict[str, Any]:
        """Validate one tile (image C×H×W, mask H×W, optional ``height`` H×W in metres) and write it as GeoTIFFs;
        returns its manifest row."""
        if self._closed:
            raise RuntimeError(f"{self.out_dir}: writer is closed")
        where = f"tile {source_file or '<no source file>'} (row {row}, col {col}, domain {domain}, split {split})"
        image, mask = np.asarray(image), np.asarray(mask)
        self._check_tile(image, mask, domain, split, sensor, where)
        if height is not None and np.shape(height) != mask.shape:
            raise DataError(f"{where}: height shape {np.shape(height)} does not match the mask shape {mask.shape}")
        image_rel, mask_rel = self._tile_paths(domain, split, source_file, row, col)
        write_raster(self.tmp_dir / image_rel, image, crs=crs, transform=transform)
        write_raster(self.tmp_dir / mask_rel, mask.astype(np.uint8), crs=crs, transform=transform)
        height_rel = ""
        if height is not None:
            height_rel = image_rel.replace("images/", "heights/", 1)
            write_raster(self.tmp_dir / height_rel, np.asarray(height, dtype=np.float32), crs=crs,
                         transform=transform, nodata=float("nan"))
        # State changes only after the tile is valid and written.
        self._record(image, domain, split, sensor)
        self._rows.append({"image": image_rel, "mask": mask_rel, "domain": domain, "split": split, "sensor": sensor,
                           "source_file": str(source_file), "row": int(row), "col": int(col),
                           HEIGHT_COLUMN: height_rel})
        return dict(self._rows[-1])

    def _check_tile(self, image: np.ndarray, mask: np.ndarray, domain: str, split: str, sensor: str,
                    where: str) -> None:
        """Raise a one-line :class:`DataError` naming ``where`` unless the tile fits the dataset."""
        try:
            sensor_def = get_sensor(sensor)
        except KeyError as e:
            raise DataError(f"{where}: {e.args[0]}") from None
        if image.ndim != 3:
            raise DataError(f"{where}: image must be C×H×W, got shape {image.shape}")
        if image.shape[0] != sensor_def.num_bands:
            raise DataError(f"{where}: image has {image.shape[0]} bands, sensor {sensor} expects "
                            f"{sensor_def.num_bands}")
        if mask.ndim != 2 or mask.shape != image.shape[1:]:
            raise DataError(f"{where}: mask shape {mask.shape} does not match image shape {image.shape[1:]}")
        if not np.issubdtype(mask.dtype, np.integer):
            raise DataError(f"{where}: mask must hold integers, got dtype {mask.dtype}")
        if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
            count = int((~np.isfinite(image)).sum())
            raise DataError(f"{where}: image holds {count} non-finite value(s) (NaN/inf); mark such pixels as "
                            "no-data (mask 255, a finite image value) before writing")
        bad = (mask != IGNORE_INDEX) & ((mask < 0) | (mask >= len(self.classes)))
        if bad.any():
            raise DataError(f"{where}: mask value {int(mask[bad].flat[0])} is not a class index (0.."
                            f"{len(self.classes) - 1} for {len(self.classes)} classes) nor the ignore index "
                            f"{IGNORE_INDEX}")
        if self._declared is not None and domain not in self._declared:
            raise DataError(f"{where}: domain {domain} is not one of the declared domains {self._declared}")
        known = self._sensors.get(domain, sensor)
        if known != sensor:
            raise DataError(f"{where}: domain {domain} already holds sensor {known}, got {sensor}")
        if split == "train" and self._train_bands is not None and self._train_bands[0] != image.shape[0]:
            raise DataError(f"{where}: training tiles of sensor {sensor} have {image.shape[0]} bands but training "
                            f"tiles of sensor {self._train_bands[1]} have {self._train_bands[0]}; normalisation "
                            "statistics need one band count in the train split")

    def _tile_paths(self, domain: str, split: str, source_file: str, row: int, col: int) -> tuple[str, str]:
        """Unique manifest paths ``images/<domain>/<split>/<stem>.tif`` and the matching ``masks/…`` path."""
        stem = f"{_safe_name(Path(source_file).stem)}_r{int(row)}_c{int(col)}" if source_file \
            else f"tile{len(self._rows):06d}"
        sub = f"{_safe_name(domain)}/{_safe_name(split)}"
        if f"{sub}/{stem}" in self._stems:
            stem = f"{stem}_{len(self._rows):06d}"
        self._stems.add(f"{sub}/{stem}")
        return f"images/{sub}/{stem}.tif", f"masks/{sub}/{stem}.tif"

    def _record(self, image: np.ndarray, domain: str, split: str, sensor: str) -> None:
        self._sensors.setdefault(domain, sensor)
        if split == "train":
            self._train_bands = self._train_bands or (image.shape[0], sensor)
            self._train_stats.update(image)
        self._dtypes.setdefault(sensor, image.dtype.name)
        counts = self._tiles.setdefault(domain, {})
        counts[split] = counts.get(split, 0) + 1

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
            raise DataError(f"{self.out_dir}: refusing to write an empty dataset (no tiles were added)")
        empty = [d for d, counts in self._tiles.items() if sum(counts.values()) == 0]
        if empty:
            raise DataError(f"{self.out_dir}: domain(s) {empty} have zero tiles")
        if self._train_bands is None:
            raise DataError(
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
                raise DataError(f"{self.out_dir}: extra key {key!r} collides with a dataset.yaml key")
            info[key] = value
        with open(self.tmp_dir / "manifest.csv", "w", newline="", encoding="utf-8") as f:
            with_height = any(r[HEIGHT_COLUMN] for r in self._rows)
            writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS + ((HEIGHT_COLUMN,) if with_height else ()),
                                    extrasaction="ignore")
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

    def normalizer(self) -> Normalize:
        """The training split's per-band standardisation (see :class:`rsmoe.data.normalize.Normalize`)."""
        return Normalize(self.mean, self.std)


def load_dataset_info(root: str | Path) -> DatasetInfo:
    """Read ``root/dataset.yaml``; a one-line error names the file and what is missing or wrong."""
    root = Path(root)
    path = root / "dataset.yaml"
    if not path.is_file():
        raise MissingFileError(
            f"{path} not found: {root} is not a prepared dataset (create one with `rsmoe prepare` or "
            "rsmoe.data.synthetic.synthesize)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    required = ("name", "classes", "palette", "ignore_index", "sensors", "bands", "normalization")
    missing = [k for k in required if k not in raw]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}")
    norm = raw["normalization"]
    if not isinstance(norm, dict) or "mean" not in norm or "std" not in norm:
        raise DataError(f"{path}: normalization must be a mapping with 'mean' and 'std' lists, got {norm!r}")
    if len(norm["mean"]) != len(norm["std"]):
        raise DataError(
            f"{path}: normalization mean has {len(norm['mean'])} values but std has {len(norm['std'])}"
        )
    if not isinstance(raw["sensors"], dict) or not isinstance(raw["classes"], list):
        raise DataError(f"{path}: 'sensors' must be a mapping domain -> sensor and 'classes' a list")
    if len(raw["palette"]) != len(raw["classes"]):
        raise DataError(
            f"{path}: palette has {len(raw['palette'])} entries for {len(raw['classes'])} classes"
        )
    for domain, sensor in raw["sensors"].items():
        try:
            get_sensor(str(sensor))
        except KeyError as e:
            raise DataError(f"{path}: domain {domain}: {e.args[0]}") from None
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
    """The rows of ``root/manifest.csv`` as dicts (``row``/``col`` as int; ``height`` "" when absent); a malformed row is a one-line
    :class:`DataError` naming its line."""
    path = Path(root) / "manifest.csv"
    if not path.is_file():
        raise MissingFileError(f"{path} not found: {root} is not a prepared dataset")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) not in (MANIFEST_COLUMNS, MANIFEST_COLUMNS + (HEIGHT_COLUMN,)):
            raise DataError(f"{path}: columns {reader.fieldnames}, expected {list(MANIFEST_COLUMNS)} (optionally "
                            f"followed by {HEIGHT_COLUMN!r})")
        rows = [_manifest_row(r, path, reader.line_num, reader.fieldnames) for r in reader]
    return rows


def _manifest_row(r: dict[str, Any], path: Path, line: int, columns: Sequence[str]) -> dict[str, Any]:
    if None in r or any(r.get(c) is None for c in columns) or not r["image"] or not r["mask"]:
        raise DataError(f"{path}, line {line}: expected {len(columns)} fields ({','.join(columns)}), the row is "
                        "truncated or has extra fields")
    try:
        r["row"], r["col"] = int(r["row"]), int(r["col"])
    except ValueError:
        raise DataError(f"{path}, line {line}: row/col must be integers, got {r['row']!r}, {r['col']!r}") from None
    r[HEIGHT_COLUMN] = r.get(HEIGHT_COLUMN) or ""
    return r


def read_tile(path: Path, what: str) -> np.ndarray:
    """The C×H×W pixels of a prepared tile; a missing or unreadable file is a one-line :class:`DataError`."""
    if not path.is_file():
        raise MissingFileError(f"{path}: {what} tile listed in the manifest is missing")
    try:
        return read_raster(path)
    except rasterio.errors.RasterioError as exc:
        raise DataError(f"{path}: unreadable {what} tile ({one_line(exc)})") from None


class PreparedDataset(torch.utils.data.Dataset):
    """Tiles of a prepared folder as sample dicts.

    Each sample: ``image`` float32 tensor C×H×W of **raw** values (the stored numbers, converted to float32;
    :class:`rsmoe.data.normalize.Normalize` built from :meth:`DatasetInfo.normalizer` standardises them, as the
    last step before padding in every pipeline); ``mask`` int64 tensor H×W (255 = ignore);
    ``wavelengths`` float32 tensor (C,) of band centres in µm from the sensor registry; ``domain`` str; ``meta``
    ``{"image": absolute path, "tile": manifest path of the image (relative to the folder; the key of caption stores),
    "sensor": key, "row": int, "col": int}``; ``height`` float32 tensor H×W in metres (NaN = no data), only for tiles
    with a height layer. ``transform`` (a callable on the sample dict) runs on every sample.
    ``cache=True`` keeps decoded tiles in memory.

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
                raise DataError(f"{self.root}: unknown domain(s) {unknown}; known domains: {known_domains}")
            rows = [r for r in rows if r["domain"] in set(domains)]
        if split is not None:
            splits = {split} if isinstance(split, str) else set(split)
            rows = [r for r in rows if r["split"] in splits]
        self.rows = rows
        self.transform = transform
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._heights: dict[int, np.ndarray] = {}

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
        image_path, mask_path = self.root / r["image"], self.root / r["mask"]
        image = read_tile(image_path, "image").astype(np.float32)
        if image.ndim != 3 or image.shape[0] != len(self.info.mean):
            raise DataError(f"{image_path}: {image.shape[0]} bands (sensor {r['sensor']}) but the training-split "
                            f"normalisation of {self.root / 'dataset.yaml'} has {len(self.info.mean)}")
        if not np.isfinite(image).all():
            raise DataError(f"{image_path}: {int((~np.isfinite(image)).sum())} non-finite pixel value(s) (NaN/inf); "
                            "re-run `rsmoe prepare`, which marks them as no-data")
        mask = read_tile(mask_path, "mask")
        if mask.shape[0] != 1 or mask.shape[1:] != image.shape[1:]:
            raise DataError(f"{mask_path}: mask of shape {mask.shape} for an image of {image.shape[1:]}; expected "
                            "one band of the same size")
        mask = mask[0].astype(np.int64)
        bad = (mask != self.info.ignore_index) & ((mask < 0) | (mask >= self.info.num_classes))
        if bad.any():
            raise DataError(f"{mask_path}: label value {int(mask[bad].flat[0])} is not a class index (0.."
                            f"{self.info.num_classes - 1}) nor the ignore index {self.info.ignore_index}")
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
                "tile": r["image"],
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
        height = read_tile(self.root / self.rows[index][HEIGHT_COLUMN], "height")[0].astype(np.float32)
        if self.cache:
            self._heights[index] = height
        return height.copy()
