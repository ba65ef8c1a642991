"""Preparing a list of scenes into one prepared folder: check everything, then tile, then write the summary.

Every preparer (one module per release) turns its release into :class:`~rsmoe.data.datasets.scenes.Scene` objects
and hands them to :class:`Preparation`, which

1. validates the options (tile, stride, unknown-label and non-finite policies) and the scenes (one class table,
   known splits, a training scene);
2. checks every scene's files (:func:`~rsmoe.data.datasets.scenes.inspect_scene`) before a pixel is written;
3. tiles each scene (:func:`~rsmoe.data.datasets.tiling.tile_scene`) into a
   :class:`rsmoe.data.prepared.PreparedWriter`, which writes into a temporary folder and renames it into place only
   on success — an error here or in the writer leaves the output path as it was;
4. writes ``dataset.yaml`` (its ``preparation`` entry: release, tile, stride, alternate mask folders) and
   ``preparation.json`` (:mod:`rsmoe.data.datasets.summary`).

All errors that a wrong input can cause are :class:`~rsmoe.data.datasets.errors.PrepareError`: one line, naming the
file or folder and what was expected.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rsmoe.data.prepared import PreparedWriter
from rsmoe.io import atomic_write_json

from .errors import PrepareError
from .labels import LabelTable
from .scenes import Scene, inspect_scene
from .summary import PREPARATION_FILE, SPLITS, Stats, plain
from .tiling import NONFINITE_POLICIES, DecodeOptions, tile_scene


@dataclass
class Preparation:
    """Check and tile a list of scenes into one prepared folder.

    ``name``: the dataset name written to dataset.yaml; ``table``: the label table all scenes share (its classes
    and palette become the dataset's); ``tolerance``: the colour tolerance of colour-coded labels (see
    :mod:`rsmoe.data.datasets.labels`); ``nonfinite``: ``nodata`` or ``error`` for NaN/inf image values (see
    :mod:`rsmoe.data.datasets.tiling`); ``extra``: more dataset.yaml keys; ``options``, ``notes`` and ``details``
    go to ``preparation.json`` with the skipped tiles/files and the class pixel counts per domain and split.
    """

    name: str
    out: Path
    table: LabelTable
    tile: int = 512
    stride: int | None = None
    unknown: str = "error"
    tolerance: int = 0
    nonfinite: str = "nodata"
    progress: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # more entries for preparation.json

    def run(self, scenes: Sequence[Scene]) -> Path:
        """Prepare ``scenes`` into ``out``; returns ``out``."""
        tile, stride = self.validate(scenes)
        from tqdm.auto import tqdm

        for s in tqdm(scenes, desc=f"check {self.name}", unit="file", disable=not self.progress):
            inspect_scene(s)
        domains = list(dict.fromkeys(s.domain for s in scenes))
        self.out = Path(self.out)
        try:
            writer = PreparedWriter(self.out, self.name, self.table.classes, self.table.palette,
                                    extra=dict(self.extra), domains=domains)
        except ValueError as e:
            raise PrepareError(str(e)) from None
        try:
            stats = Stats(self.table.num_classes, notes=list(self.notes))
            options = DecodeOptions(self.unknown, int(self.tolerance or 0), self.nonfinite)
            for s in tqdm(scenes, desc=f"tile {self.name}", unit="file", disable=not self.progress):
                tile_scene(writer, s, tile, stride, stats, options)
            self.check_written(scenes, domains, stats, tile)
            self.write_details(writer, scenes, stats, tile, stride)
            writer.close()
        except ValueError as e:  # the writer's own validation (PrepareError is one too: keep it as it is)
            writer.abort()
            raise e if isinstance(e, PrepareError) else PrepareError(str(e)) from None
        except BaseException:
            writer.abort()
            raise
        return self.out

    def validate(self, scenes: Sequence[Scene]) -> tuple[int, int]:
        """The options and the scenes' shared properties; returns (tile, stride)."""
        tile = int(self.tile)
        stride = int(self.stride or tile)
        if tile < 1 or stride < 1:
            raise PrepareError(f"tile and stride must be positive, got tile={tile} stride={stride}")
        if self.unknown not in ("error", "ignore"):
            raise PrepareError(f"unknown_labels must be 'error' or 'ignore', got {self.unknown!r}")
        if self.nonfinite not in NONFINITE_POLICIES:
            raise PrepareError(f"nonfinite must be one of {list(NONFINITE_POLICIES)}, got {self.nonfinite!r}")
        if int(self.tolerance or 0) < 0:
            raise PrepareError(f"color_tolerance must be 0 or more, got {self.tolerance}")
        if not scenes:
            raise PrepareError(f"{self.name}: no scenes to prepare")
        for s in scenes:
            if s.table.classes != self.table.classes:
                raise PrepareError(f"{s.label}: its class table {s.table.source} has other classes than "
                                   f"{self.table.source}")
            if s.split not in SPLITS:
                raise PrepareError(f"{s.image}: split {s.split!r} is not one of {list(SPLITS)}")
        if not any(s.split == "train" for s in scenes):
            raise PrepareError(f"{self.name}: no scene in split 'train' (normalisation statistics are computed "
                               "on the training split)")
        return tile, stride

    def check_written(self, scenes: Sequence[Scene], domains: list[str], stats: Stats, tile: int) -> None:
        """Every domain got a tile and the training split is not empty."""
        empty = [d for d in domains if stats.written(domain=d) == 0]
        if empty:
            files = ", ".join(f"{d}: {sum(1 for s in scenes if s.domain == d)} file(s)" for d in empty)
            raise PrepareError(f"{self.out}: domain(s) {', '.join(empty)} got no tile ({files} all smaller than "
                               f"the {tile}-pixel tile, no-data or unlabelled)")
        if stats.written(split="train") == 0:
            raise PrepareError(f"{self.out}: no tile in split 'train' (every training scene was no-data, "
                               "unlabelled or smaller than the tile)")

    def write_details(self, writer: PreparedWriter, scenes: Sequence[Scene], stats: Stats, tile: int,
                      stride: int) -> None:
        """``preparation.json`` into the writer's folder and the short ``preparation`` entry of dataset.yaml."""
        details = {
            "release": self.name,
            "tile": tile,
            "stride": stride,
            "options": {k: plain(v) for k, v in self.options.items()},
            "tiles_skipped_empty": stats.tiles_skipped_empty,
            "scenes_smaller_than_tile": stats.scenes_too_small,
            "nonfinite_pixels": dict(stats.nonfinite),
            "notes": stats.all_notes(),
            "class_pixels": stats.pixels,
            **{k: plain(v) for k, v in self.details.items()},
        }
        entry = {"release": self.name, "tile": tile, "stride": stride, "details": PREPARATION_FILE}
        alternates = sorted({v for s in scenes for v in s.alt_labels})
        if alternates:  # every scene has every alternate (the preparers require it): true for every tile
            details["alternate_masks"] = entry["alternate_masks"] = {v: f"masks_{v}/" for v in alternates}
        # dataset.yaml stays small (it is parsed for every dataset a run opens); the details go to a JSON file
        writer.extra["preparation"] = entry
        atomic_write_json(writer.tmp_dir / PREPARATION_FILE, details, fsync=False)


__all__ = ["Preparation"]
