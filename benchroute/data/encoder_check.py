"""Will the encoder see what tells a dataset's inputs apart? A check before embedding.

all-mpnet-base-v2 reads at most 384 word pieces of an input and drops the rest. Few-shot
prompts put the same instructions and worked examples before every question, so the question
itself is often cut off and distinct inputs get the same vector: the router then cannot tell
them apart, silently. This module counts, per dataset, the inputs the encoder would cut and the
distinct inputs whose kept word pieces are identical, using the installed model's own tokenizer
when the ``tokenizers`` package and the model are present (otherwise the check is skipped).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchroute.data.store import BenchmarkData
from benchroute.data.text import common_prefix

logger = logging.getLogger(__name__)

Tokenize = Callable[[Sequence[str]], Sequence[Sequence[int]]]
DEFAULT_MAX_TOKENS = 384
MIN_PREFIX_HINT = 100  # characters; a shorter shared prefix is not why inputs are cut


@dataclass(frozen=True)
class InputCheck:
    """One dataset's inputs as the encoder sees them."""

    dataset: str
    inputs: int
    truncated: int
    longest: int
    collapsed: int
    prefix_chars: int


def installed_tokenizer(model_dir: Path | None = None) -> tuple[Tokenize, int] | None:
    """The installed encoder's tokenizer and its word-piece limit, or None when the
    ``tokenizers`` package or the model's ``tokenizer.json`` is missing (never downloads)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        logger.debug("tokenizers is not installed; input-length check skipped")
        return None
    if model_dir is None:
        from benchroute.embedding.install import model_dir as default_dir

        model_dir = default_dir()
    file = model_dir / "tokenizer.json"
    if not file.is_file():
        logger.debug("%s not found; input-length check skipped", file)
        return None
    max_tokens = DEFAULT_MAX_TOKENS
    config = model_dir / "sentence_bert_config.json"
    try:
        max_tokens = int(json.loads(config.read_text(encoding="utf-8"))["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        logger.debug("no max_seq_length in %s; assuming %d", config, max_tokens)
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises its own untyped Exception
        logger.debug("cannot read %s (%s); input-length check skipped", file, exc)
        return None
    tok.no_truncation()
    tok.no_padding()

    def tokenize(texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in tok.encode_batch(list(texts))]

    return tokenize, max_tokens


def check_inputs(
    data: BenchmarkData, tokenize: Tokenize | None = None, max_tokens: int = DEFAULT_MAX_TOKENS,
) -> list[InputCheck]:
    """Per dataset: inputs longer than ``max_tokens`` word pieces (special tokens included, as
    the encoder counts them) and distinct inputs whose kept word pieces are identical, which the
    encoder maps to one vector. Each problem is a warning in ``data.report`` naming the fix.

    ``tokenize`` maps texts to token ids; by default the installed model's tokenizer, and
    without it the check is skipped (an empty list, with a debug log).
    """
    if tokenize is None:
        found = installed_tokenizer()
        if found is None:
            return []
        tokenize, max_tokens = found
    results = []
    inst = data.instances()
    for ds, part in inst.groupby("dataset", sort=True):
        texts = part["text"].drop_duplicates().tolist()
        ids = tokenize(texts)
        lengths = [len(x) for x in ids]
        kept = [tuple(x[:max_tokens]) for x in ids]
        groups: dict[tuple[int, ...], int] = {}
        for k in kept:
            groups[k] = groups.get(k, 0) + 1
        collapsed = sum(n for n in groups.values() if n > 1)
        truncated = sum(n > max_tokens for n in lengths)
        prefix = len(common_prefix(texts)) if (truncated or collapsed) else 0
        prefix = prefix if prefix >= MIN_PREFIX_HINT else 0
        check = InputCheck(str(ds), len(texts), truncated, max(lengths, default=0), collapsed,
                           prefix)
        results.append(check)
        _warn(data, check, max_tokens)
    return results


def _warn(data: BenchmarkData, c: InputCheck, max_tokens: int) -> None:
    if not (c.truncated or c.collapsed):
        return
    parts = []
    if c.truncated:
        parts.append(f"{c.truncated} of {c.inputs} inputs exceed the encoder's {max_tokens} word "
                     f"pieces and are cut (longest {c.longest})")
    if c.collapsed:
        parts.append(f"{c.collapsed} distinct inputs keep identical word pieces and will get "
                     "identical vectors")
    fix = (f"they share a {c.prefix_chars}-character prefix: "
           f"load(..., strip_common_prefix=[{c.dataset!r}]) drops it" if c.prefix_chars
           else "shorten the inputs (the encoder reads only their start)")
    data.report.warn(f"dataset {c.dataset!r}: " + "; ".join(parts) + f"; {fix}")
