"""Captioners: the MLLM backends that answer a prompt about an image (docs/mpers.md §3).

Every captioner has a ``name`` (its key in the caption store), a ``requests`` counter (backend calls made, retries
included) and ``caption(image, prompt) -> str`` with ``image`` an H×W×3 uint8 RGB array:

- :class:`TransformersCaptioner` — a local Hugging Face vision-language model (``AutoModelForImageTextToText`` +
  ``AutoProcessor``, e.g. LLaVA-1.5, Qwen2.5-VL), loaded with ``local_files_only``; the prompt goes through the
  processor's chat template; greedy decoding, ``max_new_tokens``.
- :class:`OpenAICompatibleCaptioner` — any OpenAI-compatible ``POST {base_url}/chat/completions`` endpoint (GPT-4o,
  vLLM, Ollama, LM Studio…), the image sent as a base64 PNG data URL in the OpenAI vision message format; stdlib
  ``urllib`` only. HTTP 5xx/408/429, timeouts, connection errors and malformed answers are retried with
  exponential backoff (``backoff · 2^k`` seconds, at most ``max_backoff``; a ``Retry-After`` header is honoured
  within that bound); other HTTP errors (401, 404, …) fail at once. A final failure raises :class:`CaptionError`,
  which the pipeline records in the store (status ``failed``) before going on.
- :class:`StatisticsCaptioner` **[design]** — no model: the captions of
  :func:`rsmoe.text.statistics.statistics_captions` from a label map. It needs the map and the prompt id, so its
  ``caption`` takes them as keywords (``label_map=``, ``prompt_id=``) and says so with ``needs_label_map = True``.
  The caption pipeline passes the tile's ground-truth mask, and only on the splits of ``label_splits`` (default
  ``[train]``); at evaluation the model passes its own prediction (or calls ``statistics_captions`` directly) —
  never the ground truth.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from rsmoe.errors import CaptionError
from rsmoe.text.prompts import PROMPT_IDS
from rsmoe.text.statistics import statistics_captions




@runtime_checkable
class Captioner(Protocol):
    """What the caption pipeline needs from a backend."""

    name: str
    requests: int

    def caption(self, image: np.ndarray, prompt: str) -> str: ...


def check_image(image: np.ndarray, who: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{who}: expected an H×W×3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    return image


def png_bytes(image: np.ndarray) -> bytes:
    """An H×W×3 uint8 image as PNG bytes (8-bit RGB, written by Pillow)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(check_image(image, "png_bytes"))).save(buffer, format="PNG")
    return buffer.getvalue()


def png_data_url(image: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


# ----------------------------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP endpoint
# ----------------------------------------------------------------------------------------------------------------

class _Retry(Exception):
    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("Retry-After") if headers is not None else None
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class OpenAICompatibleCaptioner:
    """Captions from an OpenAI-compatible chat-completions endpoint.

    ``base_url`` is the API root (``https://api.openai.com/v1``, ``http://localhost:8000/v1`` for vLLM,
    ``http://localhost:11434/v1`` for Ollama); ``model`` the served model name; ``api_key_env`` the name of the
    environment variable holding the key (sent as ``Authorization: Bearer``; none for local servers). ``timeout``
    is per request in seconds; ``retries`` extra tries after the first; ``sleep`` is injectable for tests.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout: float = 60.0,
        name: str | None = None,
        max_tokens: int = 300,
        temperature: float = 0.0,
        retries: int = 4,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url or not str(base_url).startswith(("http://", "https://")):
            raise ValueError(f"OpenAICompatibleCaptioner: base_url must start with http:// or https://, got "
                             f"{base_url!r}")
        if not model:
            raise ValueError("OpenAICompatibleCaptioner: model (the served model name) is required")
        self.url = str(base_url).rstrip("/") + "/chat/completions"
        self.model = str(model)
        self.api_key_env = api_key_env
        if api_key_env and not os.environ.get(api_key_env):
            raise ValueError(f"OpenAICompatibleCaptioner: environment variable {api_key_env} (the API key) is not set")
        self.timeout = float(timeout)
        self.name = name or self.model
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.sleep = sleep
        self.requests = 0

    def payload(self, image: np.ndarray, prompt: str) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{
                "role": "user",
                "content": [
                    {"type": "text", "text": prompt},
                    {"type": "image_url", "image_url": {"url": png_data_url(image)}},
                ],
            }],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ.get(self.api_key_env, '')}"
        return headers

    def _once(self, body: bytes) -> str:
        """One request; returns the caption, raises :class:`_Retry` for retryable and CaptionError for final errors."""
        req = urllib.request.Request(self.url, data=body, headers=self._headers(), method="POST")
        self.requests += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            detail = e.read(300).decode("utf-8", "replace").strip().replace("\n", " ") if e.fp else ""
            message = f"HTTP {e.code} {e.reason}" + (f": {detail}" if detail else "")
            if e.code >= 500 or e.code in (408, 429):
                raise _Retry(message, _retry_after(e.headers)) from None
            raise CaptionError(f"{self.url}: {message}") from None
        except (TimeoutError, socket.timeout):
            raise _Retry(f"no answer within {self.timeout:g} s (timeout)") from None
        except urllib.error.URLError as e:
            reason = e.reason
            kind = "timeout" if isinstance(reason, (TimeoutError, socket.timeout)) else "connection error"
            raise _Retry(f"{kind}: {reason}") from None
        except (ConnectionError, http.client.HTTPException, OSError) as e:
            raise _Retry(f"connection error: {type(e).__name__}: {e}") from None
        try:
            data = json.loads(raw.decode("utf-8"))
            content = data["choices"][0]["message"]["content"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError) as e:
            preview = raw[:120].decode("utf-8", "replace").replace("\n", " ")
            raise _Retry(f"malformed answer ({type(e).__name__}): {preview!r}") from None
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str) or not content.strip():
            raise _Retry("malformed answer: empty message content")
        return content.strip()

    def caption(self, image: np.ndarray, prompt: str) -> str:
        body = json.dumps(self.payload(check_image(image, self.name), prompt)).encode("utf-8")
        start = self.requests
        errors: list[str] = []
        for attempt in range(self.retries + 1):
            try:
                return self._once(body)
            except _Retry as e:
                errors.append(str(e))
                if attempt == self.retries:
                    break
                wait = min(self.max_backoff, self.backoff * (2 ** attempt))
                if e.wait is not None:
                    wait = min(self.max_backoff, max(wait, e.wait))
                self.sleep(wait)
            except CaptionError as e:
                raise CaptionError(str(e), requests=self.requests - start) from None
        used = self.requests - start
        raise CaptionError(f"{self.url}: failed after {used} request(s); last error: {errors[-1]}"
                           + (f" (earlier: {'; '.join(errors[:-1])})" if len(errors) > 1 else ""), requests=used)


# ----------------------------------------------------------------------------------------------------------------
# Local Hugging Face vision-language model
# ----------------------------------------------------------------------------------------------------------------

class TransformersCaptioner:
    """A local vision-language model: ``AutoModelForImageTextToText`` + ``AutoProcessor`` from ``model_dir``.

    The prompt and the image form one user turn rendered by the processor's chat template (a folder without one
    is an error); generation is greedy with ``max_new_tokens``; the answer is the decoded new tokens.
    ``dtype`` (``auto``, ``float16``, ``bfloat16``, ``float32``) and ``device`` choose where it runs.
    """

    def __init__(self, model_dir: str | Path, name: str | None = None, max_new_tokens: int = 160,
                 device: str = "cpu", dtype: str = "auto") -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from rsmoe.hf_logging import quiet_transformers
        from rsmoe.text.encoders import check_tokenizer, model_folder

        folder, _ = model_folder(model_dir, "TransformersCaptioner")
        with quiet_transformers():
            try:
                self.processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
            except (OSError, ValueError) as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ValueError(f"TransformersCaptioner: no processor in {folder} ({first})") from None
            torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
            self.model = AutoModelForImageTextToText.from_pretrained(
                str(folder), local_files_only=True, dtype=torch_dtype
            ).to(device).eval()
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None:
            raise ValueError(f"TransformersCaptioner: the processor in {folder} has no tokenizer")
        check_tokenizer(tokenizer, f"TransformersCaptioner ({folder})")
        if not getattr(self.processor, "chat_template", None):
            raise ValueError(f"TransformersCaptioner: the processor in {folder} has no chat template "
                             "(chat_template.jinja / chat_template.json)")
        self.name = name or folder.resolve().name
        self.max_new_tokens = int(max_new_tokens)
        self.device = device
        self.requests = 0

    def caption(self, image: np.ndarray, prompt: str) -> str:
        import torch
        from PIL import Image

        picture = Image.fromarray(check_image(image, self.name))
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(images=[picture], text=[text], return_tensors="pt")
        inputs = inputs.to(self.model.device, dtype=self.model.dtype)  # casts only the floating inputs
        self.requests += 1
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new, skip_special_tokens=True)[0].strip()


# ----------------------------------------------------------------------------------------------------------------
# Offline statistics captioner
# ----------------------------------------------------------------------------------------------------------------

class StatisticsCaptioner:
    """Captions from a label map (:func:`rsmoe.text.statistics.statistics_captions`); deterministic, so the
    pipeline generates once and never regenerates."""

    needs_label_map = True
    deterministic = True

    def __init__(self, class_names: Sequence[str], ignore_index: int = 255, name: str = "statistics") -> None:
        self.class_names = [str(c) for c in class_names]
        self.ignore_index = int(ignore_index)
        self.name = name
        self.requests = 0

    def captions(self, label_map: np.ndarray) -> list[str]:
        """All three captions of ``label_map`` (prompt ids 1, 2, 3)."""
        self.requests += 1
        return statistics_captions(label_map, self.class_names, self.ignore_index)

    def caption(self, image: np.ndarray | None, prompt: str, *, label_map: np.ndarray | None = None,
                prompt_id: int | None = None) -> str:
        if label_map is None:
            raise ValueError(
                f"{self.name}: the statistics captioner needs a label map (the training pipeline passes the "
                "tile's mask; at evaluation pass the model's own prediction)"
            )
        if prompt_id not in PROMPT_IDS:
            raise ValueError(f"{self.name}: prompt_id must be one of {list(PROMPT_IDS)}, got {prompt_id!r}")
        return self.captions(label_map)[PROMPT_IDS.index(prompt_id)]


def build_captioner(spec: dict[str, Any], class_names: Sequence[str], ignore_index: int = 255) -> Any:
    """A captioner from a captions-config entry ``{name, backend: transformers|openai|statistics, …}``."""
    spec = dict(spec)
    backend = spec.pop("backend", None)
    name = spec.pop("name", None)
    if not name:
        raise ValueError(f"captioners: every entry needs a name (its key in the store), got {spec!r}")
    allowed = {
        "statistics": set(),
        "transformers": {"model_dir", "max_new_tokens", "device", "dtype"},
        "openai": {"base_url", "model", "api_key_env", "timeout", "max_tokens", "temperature", "retries",
                   "backoff", "max_backoff"},
    }
    if backend not in allowed:
        raise ValueError(f"captioner {name}: backend {backend!r} unknown; use transformers, openai or statistics")
    unknown = sorted(set(k for k, v in spec.items() if v is not None) - allowed[backend])
    if unknown:
        raise ValueError(f"captioner {name}: key(s) {unknown} do not apply to backend {backend}; "
                         f"known: {sorted(allowed[backend])}")
    kwargs = {k: v for k, v in spec.items() if v is not None}
    if backend == "statistics":
        return StatisticsCaptioner(class_names, ignore_index, name=name)
    if backend == "transformers":
        if "model_dir" not in kwargs:
            raise ValueError(f"captioner {name}: backend transformers needs model_dir (a local model folder)")
        return TransformersCaptioner(name=name, **kwargs)
    for key in ("base_url", "model"):
        if key not in kwargs:
            raise ValueError(f"captioner {name}: backend openai needs {key}")
    return OpenAICompatibleCaptioner(name=name, **kwargs)


__all__ = ["Captioner", "CaptionError", "TransformersCaptioner", "OpenAICompatibleCaptioner",
           "StatisticsCaptioner", "build_captioner", "png_bytes", "png_data_url"]
