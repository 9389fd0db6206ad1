"""Prompt lists: the built-in 16, or a user's file (``--prompts FILE``), identified by a hash in every record."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

#: The built-in prompts (16 everyday scenes): every set uses them unless --prompts names a file.
PROMPTS: tuple[str, ...] = (
    "a photograph of a red fox standing in fresh snow",
    "a street market in the evening, people buying vegetables",
    "close-up portrait of an old fisherman with a grey beard",
    "a bowl of ramen on a wooden table, steam rising",
    "a mountain lake at sunrise with reflections",
    "a tabby cat sleeping on a windowsill",
    "an old red bicycle leaning against a brick wall",
    "a lighthouse on a rocky coast during a storm",
    "a child flying a kite on a beach",
    "a plate of fresh sushi, studio lighting",
    "a foggy forest path in autumn",
    "a vintage car parked on a city street at night",
    "a golden retriever running through a meadow",
    "a cup of coffee with latte art next to a book",
    "a busy train station platform with commuters",
    "a field of sunflowers under a blue sky",
)


def read_prompts(path: str | Path) -> tuple[str, ...]:
    """One prompt a line (blank lines and lines starting with ``#`` skipped); a clear error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--prompts {path}: no such file; expected a text file with one prompt a line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"--prompts {path}: not UTF-8 text ({exc.reason}); expected one prompt a line") from None
    prompts = tuple(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not prompts:
        raise ValueError(f"--prompts {path}: no prompt in the file; expected one prompt a line")
    return prompts


def prompts_sha256(prompts: tuple[str, ...] | None) -> str:
    """SHA-256 of the prompt list in order (the built-in list when None): what every cell records."""
    return hashlib.sha256(json.dumps(list(prompts or PROMPTS)).encode()).hexdigest()
