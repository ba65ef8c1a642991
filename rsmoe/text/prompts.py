"""The three caption prompts of MPerS (supplementary §3.2) and their refined versions for regeneration.

Each prompt is a complete instruction to a multimodal LLM, with the dataset's class vocabulary written into it:

1. which land-cover types of the vocabulary are present;
2. the present types with the share of the image each covers, ``ω%``;
3. one concise paragraph on the scene: what it shows, where in the image each type lies, how they relate.

The answers are asked for in the sentence shapes the paper quotes ("This image contains the following land cover
types: …", "This image contains: a (ω₁%), …") so that captions of different MLLMs, and of the offline
``statistics`` captioner (:mod:`rsmoe.text.statistics`), read alike for the text encoder.

:func:`refined_prompt` is used when the CLIP check (:mod:`rsmoe.text.quality`) finds a caption below the threshold:
it re-states the vocabulary and asks explicitly for categories, counts and positions.
"""
from __future__ import annotations

from typing import Sequence

PROMPT_IDS: tuple[int, ...] = (1, 2, 3)
"""Identifiers of the three prompts, as stored in the caption store's ``prompt_id`` column."""

POSITION_WORDS = "upper left, upper centre, upper right, centre left, centre, centre right, lower left, " \
    "lower centre, lower right"


def vocabulary(classes: Sequence[str]) -> str:
    """The class names as one comma-separated list (empty names dropped, order kept)."""
    names = [str(c).strip() for c in classes if str(c).strip()]
    if not names:
        raise ValueError("prompts: the class vocabulary is empty; the dataset's dataset.yaml lists no classes")
    return ", ".join(names)


def _check_id(prompt_id: int) -> int:
    if prompt_id not in PROMPT_IDS:
        raise ValueError(f"prompts: unknown prompt id {prompt_id!r}; the prompt ids are {list(PROMPT_IDS)}")
    return int(prompt_id)


def prompt(prompt_id: int, classes: Sequence[str]) -> str:
    """The instruction for prompt ``prompt_id`` (1, 2 or 3) with ``classes`` as the land-cover vocabulary."""
    vocab = vocabulary(classes)
    pid = _check_id(prompt_id)
    if pid == 1:
        return (
            "You are looking at a remote-sensing image seen from above. "
            f"The possible land-cover types are: {vocab}. "
            "Which of these land-cover types can be seen in the image? Use only names from this list and answer "
            "with one sentence of the form: \"This image contains the following land cover types: "
            "<type 1>, <type 2>, ..., <type n>.\""
        )
    if pid == 2:
        return (
            "You are looking at a remote-sensing image seen from above. "
            f"The possible land-cover types are: {vocab}. "
            "For every land-cover type from this list that is present, estimate which share of the image it "
            "covers, in percent; the shares should add up to about 100%. Answer with one sentence of the form: "
            "\"This image contains: <type 1> (<share 1>%), <type 2> (<share 2>%), ..., <type n> (<share n>%).\""
        )
    return (
        "Describe this remote-sensing image in natural language, in one concise paragraph. "
        f"Refer to the land-cover types by these names: {vocab}. "
        "Say what kind of scene it is, where in the image the main land-cover types lie (for example upper left, "
        "centre, lower right) and how they are arranged relative to each other (next to, surrounding, between, "
        "along)."
    )


def prompts(classes: Sequence[str]) -> dict[int, str]:
    """``{prompt id: instruction}`` for all three prompts."""
    return {pid: prompt(pid, classes) for pid in PROMPT_IDS}


def refined_prompt(prompt_id: int, classes: Sequence[str], attempt: int) -> str:
    """A stricter re-statement of prompt ``prompt_id`` for regeneration attempt ``attempt`` (2, 3, …).

    It repeats the vocabulary, says that the previous answer matched the image poorly and asks for what a good
    caption holds: which categories, how much of each, how many separate patches or objects, and where. From the
    third attempt on it also asks to leave out anything not visible.
    """
    pid = _check_id(prompt_id)
    if attempt < 1:
        raise ValueError(f"refined_prompt: attempt counts from 1, got {attempt}")
    vocab = vocabulary(classes)
    parts = [
        "A previous description of this remote-sensing image did not match the image well. "
        "Look at the image again carefully.",
        f"Use exactly these land-cover type names and no others: {vocab}.",
        "For each type you can see, state how much of the image it covers (in percent), how many separate "
        "patches or objects of it there are (for example 3 buildings, 2 cars), and where they are, using the "
        f"positions {POSITION_WORDS}.",
    ]
    if attempt >= 3:
        parts.append("Mention only what is clearly visible; do not guess types that are not there.")
    if pid == 1:
        parts.append("Then answer with one sentence of the form: \"This image contains the following land cover "
                     "types: <type 1>, <type 2>, ..., <type n>.\"")
    elif pid == 2:
        parts.append("Then answer with one sentence of the form: \"This image contains: <type 1> (<share 1>%), "
                     "..., <type n> (<share n>%).\", with shares that add up to about 100%.")
    else:
        parts.append("Then write one concise paragraph describing the scene, where each type lies and how the "
                     "types are arranged relative to each other.")
    return " ".join(parts)


__all__ = ["PROMPT_IDS", "prompt", "prompts", "refined_prompt", "vocabulary"]
