"""The caption / text side of MPerS (docs/mpers.md §3–§4).

- :mod:`~rsmoe.text.prompts` — the three prompts (supplementary §3.2) and the refined prompt for regeneration;
- :mod:`~rsmoe.text.statistics` — the offline ``statistics`` captions from a label map;
- :mod:`~rsmoe.text.captioners` — local Hugging Face VLMs, OpenAI-compatible endpoints, the statistics captioner;
- :mod:`~rsmoe.text.quality` — CLIP similarity ``cos/2 + 1/2`` and the regeneration loop;
- :mod:`~rsmoe.text.store` — the SQLite caption store with its text-embedding cache;
- :mod:`~rsmoe.text.encoders` — frozen text encoders (CLIP text tower by default);
- :mod:`~rsmoe.text.pipeline` — ``rsmoe captions``: caption a prepared dataset once, resumably.

Importing this package does not import transformers; the heavy modules load it when a model is built.
"""
from rsmoe.text.encoders import TextEncoder
from rsmoe.text.prompts import PROMPT_IDS, prompt, prompts, refined_prompt
from rsmoe.text.quality import ClipScorer, similarity
from rsmoe.text.statistics import statistics_captions
from rsmoe.text.store import CaptionStore

__all__ = ["TextEncoder", "CaptionStore", "ClipScorer", "similarity", "statistics_captions", "PROMPT_IDS", "prompt",
           "prompts", "refined_prompt"]
