"""Price tables: USD per million input and output tokens, per model.

Benchmarks record token counts, not money (HELM's ``num_prompt_tokens`` and
``num_completion_tokens``), and prices change more often than results; so the user passes the
prices they pay and the loader computes ``cost = prompt_tokens × input/1e6 + completion_tokens ×
output/1e6`` per call.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from benchroute._persist import parse_json, read_text_file, text_lines
from benchroute.data._io import csv_rows
from benchroute.data.metrics import short_repr
from benchroute.exceptions import DataError

__all__ = ["Price", "load_prices", "resolve_prices", "PricesLike"]

_INPUT = ("input_usd_per_1m", "input_per_1m", "input", "prompt")
_OUTPUT = ("output_usd_per_1m", "output_per_1m", "output", "completion")


@dataclass(frozen=True)
class Price:
    """USD per one million input (prompt) and output (completion) tokens."""

    input_per_1m: float
    output_per_1m: float

    def cost(self, prompt_tokens: np.ndarray, completion_tokens: np.ndarray) -> np.ndarray:
        """USD per call; NaN where a token count is missing, inf where it overflows (which
        the store refuses, naming the row)."""
        with np.errstate(over="ignore"):
            return (np.asarray(prompt_tokens, dtype=float) * self.input_per_1m
                    + np.asarray(completion_tokens, dtype=float) * self.output_per_1m) / 1e6


PricesLike = Union[str, "os.PathLike[str]", Mapping[str, "Price | tuple[float, float]"]]


def load_prices(path: str | os.PathLike[str]) -> dict[str, Price]:
    """Read a price table from CSV or JSON.

    CSV: a header with ``model`` and one input and one output column (``input_usd_per_1m`` /
    ``output_usd_per_1m``; ``input``/``output`` and ``prompt``/``completion`` are accepted too),
    one row per model. JSON: ``{"<model>": {"input": x, "output": y}}``, ``{"<model>": [x, y]}``,
    or a list of row objects like the CSV's.

    Raises
    ------
    DataError
        Unreadable file, missing columns, a non-numeric, negative or infinite price, or a model
        listed twice; the message names the file, the row and the field.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: price table not found (expected a CSV or JSON file)")
    text = read_text_file(p, DataError)
    if not text.strip():
        raise DataError(f"{p}: price table is empty")
    if p.suffix.lower() == ".json" or text.lstrip()[:1] in "[{":
        return _from_json(p, text)
    return _from_csv(p, text)


def _from_csv(path: Path, text: str) -> dict[str, Price]:
    lines = [row for _, row in csv_rows([line for _, line in text_lines(text)], str(path))]
    header = [h.strip() for h in lines[0]]
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:  # the last copy won silently (found by fuzzing)
        raise DataError(f"{path}: the header names {short_repr(repeated, 100)} more than once")
    in_col, out_col = (_price_name(path, "the header", header, names) for names in (_INPUT, _OUTPUT))
    if "model" not in header or in_col is None or out_col is None:
        raise DataError(
            f"{path}: the header must name 'model', an input price column (one of {list(_INPUT)}) "
            f"and an output price column (one of {list(_OUTPUT)}); got {short_repr(header, 200)}"
        )
    rows: list[tuple[str, object, object, object]] = []
    for lineno, fields in enumerate(lines[1:], start=2):
        if not fields:
            continue
        if len(fields) != len(header):
            raise DataError(f"{path}: line {lineno} has {len(fields)} fields, the header "
                            f"{len(header)}")
        row = dict(zip(header, fields))
        rows.append((f"line {lineno}", row["model"], row[in_col], row[out_col]))
    return _build(path, rows, in_col, out_col)


def _from_json(path: Path, text: str) -> dict[str, Price]:
    obj = parse_json(text, str(path), DataError, unique_keys=True)
    rows: list[tuple[str, object, object, object]] = []
    if isinstance(obj, dict):
        for model, v in obj.items():
            where = f"entry {model!r}"[:100]
            if isinstance(v, dict):
                rows.append((where, model, *_prices_of(path, where, v)))
            elif isinstance(v, list) and len(v) == 2:
                rows.append((where, model, v[0], v[1]))
            else:
                raise DataError(f"{path}: {where} must be {{'input': x, 'output': y}} or [x, y], "
                                f"got {short_repr(v)}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            if not isinstance(v, dict):
                raise DataError(f"{path}: row {i} must be an object, got {short_repr(v)}")
            rows.append((f"row {i}", v.get("model"), *_prices_of(path, f"row {i}", v)))
    else:
        raise DataError(f"{path}: expected a JSON object or list, got {type(obj).__name__}")
    return _build(path, rows, "input", "output")


def _prices_of(path: Path, where: str, obj: dict[str, object]) -> tuple[object, object]:
    """A JSON row's input and output prices (None where not given)."""
    names = [_price_name(path, where, obj, spellings) for spellings in (_INPUT, _OUTPUT)]
    return tuple(None if n is None else obj[n] for n in names)  # type: ignore[return-value]


def _price_name(path: Path, where: str, keys: Iterable[str], names: tuple[str, ...]
                ) -> str | None:
    """Which of ``names`` (the spellings of one price) ``keys`` (a CSV header, a JSON row's
    keys) use, None for none. Two of them is an error: the first of the list won silently."""
    given = [n for n in names if n in keys]
    if len(given) > 1:
        raise DataError(f"{path}: {where} gives one price twice ({given}); keep one")
    return given[0] if given else None


def _build(path: Path, rows: list[tuple[str, object, object, object]], in_col: str,
           out_col: str) -> dict[str, Price]:
    if not rows:
        raise DataError(f"{path}: price table has no rows")
    prices: dict[str, Price] = {}
    for where, model, inp, out in rows:
        if not isinstance(model, str) or not model.strip():
            raise DataError(f"{path}: {where} field 'model' must be a non-empty string, "
                            f"got {short_repr(model)}")
        model = model.strip()
        if model in prices:
            raise DataError(f"{path}: {where}: model {model!r} is listed twice")
        prices[model] = Price(_usd(path, where, in_col, inp), _usd(path, where, out_col, out))
    return prices


def _usd(path: Path | str, where: str, field: str, value: object) -> float:
    """A price: a finite, non-negative number (a numeric string from CSV too)."""
    num = math.nan
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            num = float(value)
        except (ValueError, OverflowError):
            num = math.nan
    if not math.isfinite(num) or num < 0:
        raise DataError(f"{path}: {where} field {field!r} must be a non-negative number of USD "
                        f"per 1M tokens, got {short_repr(value)}")
    return num


def resolve_prices(prices: PricesLike | None) -> dict[str, Price] | None:
    """A price table from a path (read with :func:`load_prices`) or a mapping of model to
    :class:`Price` or ``(input, output)``; ``None`` stays ``None``."""
    if prices is None:
        return None
    if isinstance(prices, (str, os.PathLike)):
        return load_prices(prices)
    if not isinstance(prices, Mapping):
        raise DataError(f"prices must be a path or a mapping of model to (input, output) USD per "
                        f"1M tokens, got {type(prices).__name__}")
    out: dict[str, Price] = {}
    for model, v in prices.items():
        where = f"prices[{model!r}]"[:100]
        if not isinstance(model, str):
            raise DataError(f"{where}: model names must be strings")
        if isinstance(v, Price):
            out[model] = v
        elif isinstance(v, (tuple, list)) and len(v) == 2:
            out[model] = Price(_usd("prices", where, "input", v[0]),
                               _usd("prices", where, "output", v[1]))
        else:
            raise DataError(f"{where} must be a Price or (input, output), got {short_repr(v)}")
    return out
