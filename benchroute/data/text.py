"""Text identity: the one normalisation applied before texts are compared or hashed.

Two copies of one benchmark input often differ only in line endings or surrounding whitespace
(a Windows export, a trailing newline). The encoder's tokenizer ignores those differences, so the
store, the embedding cache and the loaders must ignore them too, or one input becomes two.
Every module that compares or hashes an input text goes through :func:`normalize_text`.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence

__all__ = ["normalize_text", "text_key", "common_prefix", "strip_common_prefix", "is_blank"]

#: Unicode categories a text may hold and still say nothing: control characters (NUL among
#: them) and format characters (zero-width spaces and joiners, bidi marks, a byte-order mark,
#: the soft hyphen); the transformer's tokenizer drops both
_INVISIBLE = frozenset({"Cc", "Cf"})


def normalize_text(text: str) -> str:
    """CRLF and lone CR become LF; surrounding whitespace is dropped. Inner text is kept as is."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def is_blank(text: str) -> bool:
    """Whether ``text`` is no input: nothing but whitespace and invisible characters.

    A blank text has nothing to embed or route, and the loaders, the library, the texts files
    and the gateway all treat it as none. Whitespace alone was the rule, so "\u200b" or "\x00"
    passed as content and was routed by the vector of the empty text (found by fuzzing)."""
    return all(c.isspace() or unicodedata.category(c) in _INVISIBLE for c in text)


def text_key(text: str) -> str:
    """The hex SHA-256 of the normalised text's UTF-8 bytes: the embedding cache's content key.

    Lone surrogates (which UTF-8 cannot encode) are escaped rather than raising, so a malformed
    text still gets a stable key.
    """
    return hashlib.sha256(normalize_text(text).encode("utf-8", "surrogatepass")).hexdigest()


def common_prefix(texts: Sequence[str]) -> str:
    """The longest prefix shared by all ``texts`` that ends on a line boundary (after a ``\\n``)
    and leaves every text with some non-blank content after it.

    Few-shot prompts repeat the same instructions and worked examples before each question; the
    encoder reads only its first 384 word pieces, so without this the question itself is often cut
    off and distinct inputs collapse to one vector. Fewer than two texts share no prefix.
    """
    texts = [normalize_text(t) for t in texts]
    if len(texts) < 2:
        return ""
    shortest, longest = min(texts), max(texts)
    n = 0
    limit = min(len(shortest), len(longest))
    while n < limit and shortest[n] == longest[n]:
        n += 1
    # Every text lies between the lexicographic min and max, so all share their first n
    # characters. 0 when no line boundary lies inside the shared part; otherwise the cut follows
    # a newline, and a stripped text does not end in one, so each keeps content after the cut.
    cut = shortest.rfind("\n", 0, n) + 1
    return shortest[:cut]


def strip_common_prefix(texts: Sequence[str]) -> list[str]:
    """``texts`` normalised, without the prefix :func:`common_prefix` finds (same order)."""
    prefix = common_prefix(texts)
    return [normalize_text(normalize_text(t)[len(prefix):]) for t in texts]
