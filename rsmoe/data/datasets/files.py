"""Finding a release's files: on disk, or inside the zip archives users download (zips inside zips too).

Two ways to look at a release:

* **Folders on disk** (:func:`find_files`, :func:`locate_dirs`): the extracted release under ``--root``.
* **A release tree** (:func:`list_release_files`): every file under ``--root`` — a folder or a ``.zip`` — where a
  zip archive counts as a folder holding its members, and a zip inside a zip likewise (ISPRS Potsdam ships
  ``Potsdam.zip`` holding ``4_Ortho_RGBIR.zip``, ``5_Labels_all.zip``, …). Each file is a :class:`ReleaseFile`
  whose ``path`` is what rasterio opens: the file itself, or a GDAL virtual path ``/vsizip/{archive}/member``
  (nested: ``/vsizip/{/vsizip/{outer.zip}/inner.zip}/member``), so pixels are read from the archive directly and
  nothing is extracted. Listing a zip nested in a compressed zip decompresses the inner archive once; reading from
  it is slower than from an extracted copy.

Pairing images with labels (:func:`pair_by_stem`) works on either kind of file.
"""
from __future__ import annotations

import os
import warnings
import zipfile
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterable, Iterator, Sequence

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from rsmoe.errors import one_line

from .errors import PrepareError

ARCHIVE_SUFFIX = ".zip"
RASTER_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
READS_ZIPS = ("loveda", "potsdam", "vaihingen", "potsdam-vaihingen")  # the preparers that read archives directly


@dataclass(frozen=True)
class ReleaseFile:
    """A file of a release tree: ``rel`` is its path below the root, archives written as folders
    (``Potsdam/5_Labels_all.zip/top_potsdam_2_10_label.tif``); ``path`` is what rasterio opens; ``shown`` is how
    messages name it (the root joined with ``rel``)."""

    rel: PurePosixPath
    path: str
    shown: str
    in_archive: bool = False

    @property
    def name(self) -> str:
        return self.rel.name

    @property
    def stem(self) -> str:
        return self.rel.stem

    @property
    def suffix(self) -> str:
        return self.rel.suffix

    @property
    def parent(self) -> PurePosixPath:
        return self.rel.parent

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.shown


def archive_member_path(archive: str, member: str) -> str:
    """The GDAL virtual path of ``member`` inside the zip ``archive`` (a file path or itself a virtual path)."""
    return f"/vsizip/{{{archive}}}/{member}"


def list_release_files(root: Path, suffixes: Sequence[str] = RASTER_SUFFIXES,
                       enter: Callable[[str], bool] = lambda name: True) -> list[ReleaseFile]:
    """Every file under ``root`` (a folder or a zip) whose suffix is in ``suffixes``, zip archives entered as
    folders when ``enter(archive name)`` is true. Files on disk come first, then archive members, each group in
    path order; hidden files and ``__MACOSX`` entries are skipped."""
    root = Path(root)
    wanted = tuple(s.lower() for s in suffixes)
    on_disk: list[ReleaseFile] = []
    members: list[ReleaseFile] = []
    if root.is_file():
        members.extend(archive_files(root, PurePosixPath(root.name), str(root.resolve()), str(root), wanted, enter))
        return members
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__MACOSX")))
        for fname in sorted(filenames):
            if fname.startswith("."):
                continue
            path = Path(dirpath) / fname
            rel = PurePosixPath(path.relative_to(root).as_posix())
            if fname.lower().endswith(ARCHIVE_SUFFIX):
                if enter(fname):
                    members.extend(archive_files(path, rel, str(path.resolve()), str(path), wanted, enter))
            elif fname.lower().endswith(wanted):
                on_disk.append(ReleaseFile(rel, str(path), str(path)))
    return on_disk + sorted(members, key=lambda f: f.rel.as_posix())


def archive_files(archive: Path | IO[bytes], rel: PurePosixPath, gdal_path: str, shown: str,
                  wanted: tuple[str, ...], enter: Callable[[str], bool]) -> Iterator[ReleaseFile]:
    """The wanted members of one zip (``archive``: its file or an open member of an outer zip), nested zips
    entered; ``rel``/``gdal_path``/``shown`` name the archive itself."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                member = info.filename
                parts = PurePosixPath(member).parts
                if info.is_dir() or not parts or any(p.startswith((".", "__MACOSX")) for p in parts):
                    continue
                lower = member.lower()
                if lower.endswith(ARCHIVE_SUFFIX):
                    if enter(parts[-1]):
                        with zf.open(info) as inner:
                            yield from archive_files(inner, rel / member, archive_member_path(gdal_path, member),
                                                     f"{shown}/{member}", wanted, enter)
                elif lower.endswith(wanted):
                    yield ReleaseFile(rel / member, archive_member_path(gdal_path, member), f"{shown}/{member}", True)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise PrepareError(f"{shown}: cannot read the zip archive ({one_line(e)}); download it again") from None


def open_raster(path: str | os.PathLike, what: str):
    """Open a raster (file or archive member) with rasterio; an unreadable one is a one-line error naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(os.fspath(path))
    except (RasterioError, OSError) as e:
        raise PrepareError(f"{path}: cannot read {what} ({one_line(e)})") from None


def locate_dirs(root: Path, relpath: str, max_depth: int = 3) -> list[Path]:
    """Folders ``D`` with ``D/relpath`` an existing folder, for ``D`` = ``root`` or a subfolder up to ``max_depth``
    levels below it (releases are often unzipped one level deeper than documented), in breadth-first order."""
    found = []
    frontier = [root]
    for _ in range(max_depth + 1):
        nxt = []
        for d in frontier:
            if (d / relpath).is_dir():
                found.append(d)
            try:
                nxt.extend(sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")))
            except OSError:
                continue
        frontier = nxt
    return found


def find_files(folder: Path, patterns: Sequence[str], recursive: bool = False) -> list[Path]:
    """Files in ``folder`` (and its subfolders with ``recursive``) whose name matches a glob pattern, ignoring
    case (``*.tif`` also finds ``X.TIF``)."""
    if not folder.is_dir():
        return []
    pats = [p.lower() for p in patterns]
    entries = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in entries if not p.name.startswith(".") and any(fnmatch(p.name.lower(), q) for q in pats)
                  and p.is_file())


def archives_note(root: Path) -> str:
    """``" (…zip archives found: extract them first…)"`` when ``root`` holds zip archives, else ``""``: the hint
    for a preparer that reads extracted releases only."""
    if root.is_file() and root.suffix.lower() == ARCHIVE_SUFFIX:
        zips = [root]
    else:
        zips = sorted(p for p in root.glob("*") if p.suffix.lower() == ARCHIVE_SUFFIX)[:3] if root.is_dir() else []
    if not zips:
        return ""
    return (f" (found zip archive(s) {', '.join(p.name for p in zips)}: extract them first; rsmoe reads the zips "
            f"of {', '.join(READS_ZIPS)} directly)")


def require_root(root: str | Path, archives: bool = False) -> Path:
    """``root`` as a Path: an existing folder, or a zip file when the preparer reads ``archives``."""
    root = Path(root)
    if root.is_dir():
        return root
    if root.is_file() and root.suffix.lower() == ARCHIVE_SUFFIX:
        if archives:
            return root
        raise PrepareError(f"{root}: the release is a zip archive; extract it and pass the folder as --root"
                           f"{archives_note(root)}")
    raise PrepareError(f"{root}: release folder not found")


def relpath(path: Path | ReleaseFile, root: Path) -> str:
    """The manifest's ``source_file``: the file's path below the release root (archives written as folders)."""
    if isinstance(path, ReleaseFile):
        return path.rel.as_posix()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def strip_suffixes(stem: str, suffixes: Sequence[str]) -> str:
    """``stem`` without the longest of ``suffixes`` it ends with."""
    for suf in sorted(suffixes, key=len, reverse=True):
        if suf and stem.endswith(suf):
            return stem[: -len(suf)]
    return stem


def pair_by_stem(images: Sequence, labels: Iterable, label_suffixes: Sequence[str] = ("",), where: str = "",
                 expect: Callable | None = None, missing: str = "error") -> list[tuple]:
    """Pair each image with the label of the same stem (the label's stem may add one of ``label_suffixes``).

    Works on paths and :class:`ReleaseFile` alike. An image without label is an error naming the image and the
    label expected (``expect(image)`` describes it), unless ``missing="skip"`` (the pair is returned with None)."""
    index: dict[str, object] = {}
    for lab in labels:
        index.setdefault(strip_suffixes(lab.stem, label_suffixes), lab)
    pairs = []
    for img in images:
        lab = index.get(img.stem)
        if lab is None and missing != "skip":
            wanted = expect(img) if expect else f"a label named {img.stem}{label_suffixes[0]}.*"
            raise PrepareError(f"{img}: image without label ({where}expected {wanted})")
        pairs.append((img, lab))
    return pairs


__all__ = ["READS_ZIPS", "ReleaseFile", "archive_member_path", "archives_note", "find_files", "list_release_files",
           "locate_dirs", "open_raster", "pair_by_stem", "relpath", "require_root", "strip_suffixes"]
