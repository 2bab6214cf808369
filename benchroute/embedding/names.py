"""Resolving an encoder name on this machine, before anything is loaded or downloaded.

A name reaches benchroute from a user, a script, or a saved router (untrusted). Handing an
unknown name to sentence-transformers makes it retry the Hugging Face hub for about 80 s and
end in a raw ``OSError``; a name from a router folder could even make it download code. So
names are resolved here, locally and at once, into one of a few known forms, and anything else
is refused with the list of what is available. The hub is used only when the caller asks for it
(``allow_download=True``, or ``BENCHROUTE_ALLOW_DOWNLOAD=1`` in the environment).
"""

from __future__ import annotations

import numbers
import os
import re
from dataclasses import dataclass
from pathlib import Path

from benchroute.embedding.install import DEFAULT_ENCODER_ID, DEFAULT_MODEL, benchroute_home
from benchroute.exceptions import BenchrouteError, ModelNotInstalledError
from benchroute.faiss_check import MAX_DIMENSION

ALLOW_DOWNLOAD_ENV = "BENCHROUTE_ALLOW_DOWNLOAD"
_HASHING = re.compile(r"hashing-(\d{1,7})-([1-9])([1-9])", re.ASCII)  # \d: ASCII digits only
_HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?")
_MODEL_FILES = ("modules.json", "config.json")


# ---------------------------------------------------------------------- mpnet names
DEFAULT_MAX_SEQ_LENGTH = 384
#: the model's position embeddings: no backend can read more word pieces
MAX_SEQ_LENGTH_LIMIT = 512
#: <s>, </s> and one word piece: the tokenizer cannot cut below its two special tokens (a cap
#: of 1 truncated nothing, and texts past 512 word pieces then crashed both backends; 2 gave
#: every text the same vector; found by fuzzing)
MIN_SEQ_LENGTH = 3
MODEL_NAMES = (DEFAULT_MODEL, DEFAULT_ENCODER_ID)


def shared_identifier(max_seq_length: int) -> str:
    """Namespace of the sentence-transformers vectors at a word-piece cap."""
    if max_seq_length == DEFAULT_MAX_SEQ_LENGTH:
        return DEFAULT_ENCODER_ID
    return f"{DEFAULT_ENCODER_ID}@max{max_seq_length}"


def own_identifier(backend: str, max_seq_length: int) -> str:
    """Namespace of a backend whose vectors differ from sentence-transformers'."""
    cap = "" if max_seq_length == DEFAULT_MAX_SEQ_LENGTH else f"@max{max_seq_length}"
    return f"{DEFAULT_MODEL}@{backend}{cap}"


def check_cap(cap: object, what: str, upper: int | None = MAX_SEQ_LENGTH_LIMIT) -> int:
    """A word-piece cap: an integer in [:data:`MIN_SEQ_LENGTH`, ``upper``] (the same bounds for
    every backend of the package's model, whether the cap comes from a name's ``@max<N>`` or a
    constructor: an encoder built directly with a cap of 1 bypassed the name's check). ``upper``
    None is another model's cap, whose limit its own position embeddings set once loaded."""
    # numbers.Integral takes NumPy's integers; a bool is one too, but never meant as a cap
    if isinstance(cap, bool) or not isinstance(cap, numbers.Integral) \
            or not MIN_SEQ_LENGTH <= int(cap) <= (int(cap) if upper is None else upper):
        bound = "the model's own limit" if upper is None else str(upper)
        raise BenchrouteError(f"{what}: max_seq_length == {cap!r:.40}, must be in "
                              f"[{MIN_SEQ_LENGTH}, {bound}] (an integer: two special tokens and "
                              "a word piece; the model's position embeddings)")
    return int(cap)


@dataclass(frozen=True)
class EncoderName:
    """What an encoder name stands for.

    ``kind`` is ``"hashing"`` (``dimension`` and ``ngram_range`` set), ``"default"``
    (all-mpnet-base-v2, found by its backend where ``benchroute model install`` put it),
    ``"installed"`` (a model folder under ``$BENCHROUTE_HOME/models``), ``"folder"`` (a model
    folder given by path) or ``"hub"`` (a Hugging Face name, only when downloads are allowed).
    ``base`` is the name without its ``@`` suffixes, ``suffix`` those suffixes (``"@onnx"``,
    ``"@static@max256"``, ... or ``""``), left to the backends to interpret.
    """

    name: str
    kind: str
    base: str
    suffix: str = ""
    path: Path | None = None
    dimension: int = 0
    ngram_range: tuple[int, int] = (1, 1)


def installed_models(root: Path | None = None) -> list[str]:
    """Names of the model folders under ``$BENCHROUTE_HOME/models`` (or ``root``)."""
    root = root or benchroute_home() / "models"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if _is(p, "dir") and _is_model_folder(p))


def _is_model_folder(path: Path) -> bool:
    return any(_is(path / f, "file") for f in _MODEL_FILES)


def _is(path: Path, kind: str) -> bool:
    """``path.is_dir()`` / ``is_file()``, False where the name cannot be a path (too long...)."""
    try:
        return path.is_dir() if kind == "dir" else path.is_file()
    except (OSError, ValueError):
        return False


def resolve_encoder_name(name: str, allow_download: bool | None = None) -> EncoderName:
    """Resolve ``name`` locally, or raise a :class:`BenchrouteError` listing what is available.

    Accepted, in this order: ``hashing-<dim>-<lo><hi>``; ``all-mpnet-base-v2`` or
    ``sentence-transformers/all-mpnet-base-v2``; an existing folder holding a
    sentence-transformers model; the name of a model folder under ``$BENCHROUTE_HOME/models``
    (a ``owner/model`` name is looked up by its last part); with downloads allowed, any other
    well-formed hub name. Each may carry ``@`` suffixes (backend, caps), returned unparsed.
    ``allow_download`` None reads ``$BENCHROUTE_ALLOW_DOWNLOAD`` (``1``/``true``/``yes``).
    No file is read beyond a folder listing, nothing is imported and no network is used.
    """
    if not isinstance(name, str) or not name.strip():
        raise BenchrouteError(f"encoder name {name!r}: expected a non-empty string")
    if "\x00" in name or any("\ud800" <= c <= "\udfff" for c in name):
        raise BenchrouteError(f"encoder name {name!r}: contains a NUL or an unpaired surrogate")
    if name.startswith("hashing-"):
        m = _HASHING.fullmatch(name)
        if not m or not 0 < int(m[1]) <= MAX_DIMENSION or int(m[2]) > int(m[3]):
            raise BenchrouteError(f"bad hashing encoder name {name!r}; expected "
                                  f"hashing-<dim>-<lo><hi> (dim 1..{MAX_DIMENSION}, the largest "
                                  "a saved index holds; 1 <= lo <= hi <= 9), e.g. hashing-256-12")
        return EncoderName(name, "hashing", name, dimension=int(m[1]),
                           ngram_range=(int(m[2]), int(m[3])))
    base, sep, rest = name.partition("@")
    suffix = sep + rest
    if base in (DEFAULT_MODEL, DEFAULT_ENCODER_ID):
        return EncoderName(name, "default", base, suffix)
    folder = Path(base).expanduser()
    if _is(folder, "dir"):
        if not _is_model_folder(folder):
            raise BenchrouteError(f"encoder folder {folder}: no modules.json or config.json, "
                                  "not a sentence-transformers model")
        return EncoderName(name, "folder", base, suffix, folder.resolve())
    local = benchroute_home() / "models" / base.rsplit("/", 1)[-1]
    if _HUB_NAME.fullmatch(base) and _is(local, "dir") and _is_model_folder(local):
        return EncoderName(name, "installed", base, suffix, local)
    if allow_download is None:
        allow_download = os.environ.get(ALLOW_DOWNLOAD_ENV, "").lower() in ("1", "true", "yes")
    if allow_download and _HUB_NAME.fullmatch(base):
        return EncoderName(name, "hub", base, suffix)
    looks_like_path = not _HUB_NAME.fullmatch(base) or base.startswith((".", "~", "/", os.sep))
    available = [DEFAULT_MODEL, *(m for m in installed_models() if m != DEFAULT_MODEL),
                 "hashing-<dim>-<lo><hi>", "a model folder"]
    what = "no such folder" if looks_like_path else "not installed"
    hint = "" if looks_like_path else (
        f"; to fetch it from the Hugging Face hub pass allow_download=True "
        f"(or set {ALLOW_DOWNLOAD_ENV}=1)")
    raise ModelNotInstalledError(f"encoder {name!r}: {what}; available here: "
                                 f"{', '.join(available)}{hint}")
