"""The caption store: one SQLite file with every caption and its cached text embeddings (docs/mpers.md §3).

Captions are expensive (minutes of GPU or paid API calls per image), so they are generated once, committed one by
one, and reused by every later run. The file is opened in WAL mode: any number of readers (training data loaders)
can read while one caption run writes; a run takes an exclusive lock file ``<store>.lock`` so that two runs never
write the same store.

Schema (version 1)::

    captions(
      image_id   TEXT,     -- the tile's manifest ``image`` path, relative to the prepared folder
      image_hash TEXT,     -- sha256 of what the captioner saw (see rsmoe.text.pipeline.image_hash); changed = redo
      captioner  TEXT,     -- the captioner's configured name (one MLLM = one expert)
      prompt_id  INTEGER,  -- 1, 2, 3 (rsmoe.text.prompts)
      prompt     TEXT,     -- the prompt that produced the kept caption (base or refined)
      text       TEXT,     -- the caption; NULL when failed
      score      REAL,     -- CLIP similarity in [0, 1]; NULL when no quality check ran
      attempts   INTEGER,  -- generations in the quality loop (1 = no regeneration)
      requests   INTEGER,  -- backend calls spent, HTTP retries included
      passed     INTEGER,  -- 1 / 0 against tau; NULL when unchecked
      status     TEXT,     -- 'ok' or 'failed'
      error      TEXT,     -- why it failed (or a later attempt's error next to a kept caption)
      seconds    REAL,     -- wall time spent on this item
      created    TEXT,     -- UTC, ISO 8601
      PRIMARY KEY (image_id, captioner, prompt_id))

    embeddings(            -- text-embedding cache, one row per caption and encoder
      image_id TEXT, captioner TEXT, prompt_id INTEGER,
      encoder  TEXT,       -- TextEncoder.name
      dim      INTEGER,
      vector   BLOB,       -- dim little-endian float32
      created  TEXT,
      PRIMARY KEY (image_id, captioner, prompt_id, encoder))

    meta(key TEXT PRIMARY KEY, value TEXT)   -- schema_version

**[design]** the embedding cache lives in the same SQLite file rather than a sidecar safetensors: it is written row
by row as captions finish (a sidecar would be rewritten whole), stays consistent with the captions in one
transaction — replacing a caption deletes its cached vectors — and is read by (image, captioner, prompt) key, not
as a whole tensor. A CLIP ViT-B vector is 2 KiB, so even 100k images × 3 MLLMs × 3 prompts stay under 2 GB.
"""
from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from rsmoe.errors import DataError, MissingFileError, OutputError
from rsmoe.io.writable import probe_folder
from rsmoe.text.prompts import PROMPT_IDS

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS captions (
  image_id   TEXT NOT NULL,
  image_hash TEXT NOT NULL,
  captioner  TEXT NOT NULL,
  prompt_id  INTEGER NOT NULL,
  prompt     TEXT,
  text       TEXT,
  score      REAL,
  attempts   INTEGER NOT NULL DEFAULT 0,
  requests   INTEGER NOT NULL DEFAULT 0,
  passed     INTEGER,
  status     TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
  error      TEXT,
  seconds    REAL,
  created    TEXT NOT NULL,
  PRIMARY KEY (image_id, captioner, prompt_id)
);
CREATE TABLE IF NOT EXISTS embeddings (
  image_id  TEXT NOT NULL,
  captioner TEXT NOT NULL,
  prompt_id INTEGER NOT NULL,
  encoder   TEXT NOT NULL,
  dim       INTEGER NOT NULL,
  vector    BLOB NOT NULL,
  created   TEXT NOT NULL,
  PRIMARY KEY (image_id, captioner, prompt_id, encoder)
);
CREATE INDEX IF NOT EXISTS embeddings_by_encoder ON embeddings (encoder, image_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""
_CHUNK = 400  # ids per IN (...) query, well under SQLite's variable limit
CAPTION_COLUMNS = ("image_id", "image_hash", "captioner", "prompt_id", "prompt", "text", "score", "attempts",
                   "requests", "passed", "status", "error", "seconds", "created")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class CaptionStore:
    """A caption store file. ``CaptionStore(path)`` creates it if missing; ``readonly=True`` requires it to exist
    and never writes. Use as a context manager or call :meth:`close`.

    Safe to hand to data-loader workers: a pickled store reopens its file, and a store used in a forked child
    process opens its own connection (SQLite connections must not cross a fork)."""

    def __init__(self, path: str | Path, readonly: bool = False, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.timeout = float(timeout)
        self._lock_fd: int | None = None
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        if readonly and not self.path.is_file():
            raise MissingFileError(f"caption store {self.path} not found (create it with `rsmoe captions`)")
        self._open()

    def _open(self) -> None:
        try:
            if self.readonly:
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self.timeout)
                conn.execute("PRAGMA query_only = ON")
            else:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise OutputError(f"cannot create the folder of caption store {self.path}: "
                                      f"{e.strerror or e}") from None
                probe_folder(self.path.parent, what="the caption store's folder")
                conn = sqlite3.connect(str(self.path), timeout=self.timeout)
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.executescript(_SCHEMA)
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
                conn.commit()
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as e:
            raise DataError(f"{self.path}: not a caption store ({e})") from None
        version = int(row["value"]) if row else 0
        if version != SCHEMA_VERSION:
            conn.close()
            raise DataError(f"{self.path}: caption store schema version {version}, this rsmoe reads version "
                             f"{SCHEMA_VERSION}")
        self._conn, self._pid = conn, os.getpid()

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection of this process (reopened after a fork or unpickling)."""
        if self._conn is None or self._pid != os.getpid():
            self._lock_fd = None  # a lock belongs to the process that took it
            self._open()
        assert self._conn is not None
        return self._conn

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "readonly": self.readonly, "timeout": self.timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.readonly, self.timeout = state["path"], state["readonly"], state["timeout"]
        self._lock_fd, self._conn, self._pid = None, None, -1

    # -- life cycle ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        self.release_writer()
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def __enter__(self) -> "CaptionStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def acquire_writer(self) -> None:
        """Take ``<store>.lock`` exclusively (one writing run per store); a one-line error if another run holds it.
        The operating system releases it when the process ends, killed or not."""
        if self._lock_fd is not None:
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: SQLite's own locking still serialises writes
            return
        lock = Path(f"{self.path}.lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise DataError(f"{self.path}: another caption run (pid {holder}) is writing this store") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        self._lock_fd = fd

    def release_writer(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- captions -----------------------------------------------------------------------------------------------
    def done(self, image_id: str, captioner: str, prompt_id: int, image_hash: str) -> bool:
        """Whether an ``ok`` caption exists for this key and was made from an image with this hash."""
        row = self.conn.execute(
            "SELECT image_hash FROM captions WHERE image_id = ? AND captioner = ? AND prompt_id = ? AND status = 'ok'",
            (image_id, captioner, int(prompt_id)),
        ).fetchone()
        return row is not None and row["image_hash"] == image_hash

    def put_caption(
        self,
        image_id: str,
        image_hash: str,
        captioner: str,
        prompt_id: int,
        text: str | None,
        *,
        prompt: str | None = None,
        score: float | None = None,
        attempts: int = 1,
        requests: int = 1,
        passed: bool | None = None,
        status: str = "ok",
        error: str | None = None,
        seconds: float | None = None,
    ) -> None:
        """Insert or replace one caption row and commit at once; cached embeddings of the key are dropped."""
        if status not in ("ok", "failed"):
            raise ValueError(f"put_caption: status must be 'ok' or 'failed', got {status!r}")
        if status == "ok" and text is None:
            raise ValueError("put_caption: an 'ok' caption needs its text")
        key = (image_id, captioner, int(prompt_id))
        with self.conn:  # one transaction, committed on exit
            self.conn.execute("DELETE FROM embeddings WHERE image_id = ? AND captioner = ? AND prompt_id = ?", key)
            self.conn.execute(
                "INSERT OR REPLACE INTO captions (image_id, image_hash, captioner, prompt_id, prompt, text, score, "
                "attempts, requests, passed, status, error, seconds, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (image_id, image_hash, captioner, int(prompt_id), prompt, text,
                 None if score is None else float(score), int(attempts), int(requests),
                 None if passed is None else int(bool(passed)), status, error,
                 None if seconds is None else float(seconds), _now()),
            )

    def put_failure(self, image_id: str, image_hash: str, captioner: str, prompt_id: int, error: str, *,
                    requests: int = 1, attempts: int = 1, seconds: float | None = None,
                    prompt: str | None = None) -> None:
        """Record a failed item (status ``failed``, ``error``); a later run retries it."""
        self.put_caption(image_id, image_hash, captioner, prompt_id, None, prompt=prompt, attempts=attempts,
                         requests=requests, status="failed", error=error, seconds=seconds)

    def get(self, image_id: str, captioner: str, prompt_id: int) -> dict[str, Any] | None:
        row = self.conn.execute(
            "SELECT * FROM captions WHERE image_id = ? AND captioner = ? AND prompt_id = ?",
            (image_id, captioner, int(prompt_id)),
        ).fetchone()
        return dict(row) if row else None

    def rows(self, status: str | None = None, captioner: str | None = None) -> list[dict[str, Any]]:
        """Caption rows (optionally of one status / captioner), ordered by key."""
        sql, args = "SELECT * FROM captions", []
        where = []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if captioner is not None:
            where.append("captioner = ?")
            args.append(captioner)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY image_id, captioner, prompt_id"
        return [dict(r) for r in self.conn.execute(sql, args)]

    def count(self, status: str | None = None) -> int:
        if status is None:
            return int(self.conn.execute("SELECT COUNT(*) FROM captions").fetchone()[0])
        return int(self.conn.execute("SELECT COUNT(*) FROM captions WHERE status = ?", (status,)).fetchone()[0])

    def captions_for(self, image_id: str, captioner: str, prompt_ids: Sequence[int] = PROMPT_IDS) -> list[str | None]:
        """The ``ok`` caption texts of one image and captioner, in ``prompt_ids`` order (``None`` where missing)."""
        out = []
        for pid in prompt_ids:
            row = self.get(image_id, captioner, pid)
            out.append(row["text"] if row and row["status"] == "ok" else None)
        return out

    # -- embeddings ---------------------------------------------------------------------------------------------
    def missing_embeddings(self, encoder: str, image_ids: Sequence[str] | None = None,
                           captioners: Sequence[str] | None = None) -> list[tuple[str, str, int, str]]:
        """``(image_id, captioner, prompt_id, text)`` of ``ok`` captions without a vector from ``encoder``."""
        sql = ("SELECT c.image_id, c.captioner, c.prompt_id, c.text FROM captions c LEFT JOIN embeddings e "
               "ON e.image_id = c.image_id AND e.captioner = c.captioner AND e.prompt_id = c.prompt_id "
               "AND e.encoder = ? WHERE c.status = 'ok' AND e.image_id IS NULL "
               "ORDER BY c.image_id, c.captioner, c.prompt_id")
        rows = [(r[0], r[1], int(r[2]), r[3]) for r in self.conn.execute(sql, (encoder,))]
        if image_ids is not None:
            keep = set(image_ids)
            rows = [r for r in rows if r[0] in keep]
        if captioners is not None:
            names = set(captioners)
            rows = [r for r in rows if r[1] in names]
        return rows

    def put_embeddings(self, encoder: str, keys: Sequence[tuple[str, str, int]], vectors: Any) -> None:
        """Store ``vectors`` (n×d) for ``keys`` ``(image_id, captioner, prompt_id)`` under ``encoder``; one commit."""
        vecs = np.asarray(vectors.detach().cpu() if isinstance(vectors, torch.Tensor) else vectors, dtype="<f4")
        if vecs.ndim != 2 or vecs.shape[0] != len(keys):
            raise ValueError(f"put_embeddings: {len(keys)} keys but vectors of shape {vecs.shape}")
        now = _now()
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO embeddings (image_id, captioner, prompt_id, encoder, dim, vector, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(i, c, int(p), encoder, int(vecs.shape[1]), vecs[k].tobytes(), now)
                 for k, (i, c, p) in enumerate(keys)],
            )

    def encoders(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT DISTINCT encoder FROM embeddings ORDER BY encoder")]

    def embedding_dim(self, encoder: str) -> int:
        row = self.conn.execute("SELECT dim FROM embeddings WHERE encoder = ? LIMIT 1", (encoder,)).fetchone()
        if row is None:
            raise ValueError(
                f"{self.path}: no text embeddings for encoder {encoder!r} (encoders in this store: "
                f"{self.encoders() or 'none'}); run `rsmoe captions` with that encoder"
            )
        return int(row[0])

    def embeddings_for(
        self,
        image_ids: Sequence[str],
        captioners: Sequence[str],
        encoder: Any,
        prompt_ids: Sequence[int] = PROMPT_IDS,
        per_prompt: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached caption vectors as a B×M×P×d float32 tensor and a B×M bool ``present`` mask.

        ``encoder`` is an encoder name (or anything with ``.name``). ``present[b, m]`` is true when captioner
        ``m`` has an ``ok`` caption with a vector for every prompt of image ``b``; a missing or failed caption
        (or one not yet embedded) leaves its slot zero and the expert not present. ``per_prompt=True`` returns a
        B×M×P mask instead.
        """
        name = encoder if isinstance(encoder, str) else getattr(encoder, "name", None)
        if not isinstance(name, str):
            raise TypeError(f"embeddings_for: encoder must be a name or have .name, got {type(encoder).__name__}")
        image_ids, captioners, prompt_ids = list(image_ids), list(captioners), [int(p) for p in prompt_ids]
        dim = self.embedding_dim(name)
        out = np.zeros((len(image_ids), len(captioners), len(prompt_ids), dim), dtype=np.float32)
        have = np.zeros(out.shape[:3], dtype=bool)
        b_index: dict[str, list[int]] = {}
        for b, image_id in enumerate(image_ids):
            b_index.setdefault(image_id, []).append(b)
        m_index = {c: m for m, c in enumerate(captioners)}
        p_index = {p: k for k, p in enumerate(prompt_ids)}
        for ids in _chunks(list(b_index)):
            marks = ",".join("?" * len(ids))
            sql = ("SELECT e.image_id, e.captioner, e.prompt_id, e.dim, e.vector FROM embeddings e JOIN captions c "
                   "ON c.image_id = e.image_id AND c.captioner = e.captioner AND c.prompt_id = e.prompt_id "
                   f"WHERE e.encoder = ? AND c.status = 'ok' AND e.image_id IN ({marks})")
            for image_id, captioner, pid, d, blob in self.conn.execute(sql, [name, *ids]):
                m, k = m_index.get(captioner), p_index.get(int(pid))
                if m is None or k is None:
                    continue
                if int(d) != dim:
                    raise ValueError(f"{self.path}: encoder {name!r} has vectors of dims {dim} and {d}")
                vec = np.frombuffer(blob, dtype="<f4")
                for b in b_index[image_id]:
                    out[b, m, k] = vec
                    have[b, m, k] = True
        present = have if per_prompt else have.all(axis=2)
        return torch.from_numpy(out), torch.from_numpy(present)


__all__ = ["CaptionStore", "SCHEMA_VERSION", "CAPTION_COLUMNS"]
