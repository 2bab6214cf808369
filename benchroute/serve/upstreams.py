"""Where each router model is served: the upstreams file, read and checked once at start-up.

The file (YAML or JSON) maps router model names to OpenAI-compatible endpoints::

    models:
      gpt-4:
        base_url: http://127.0.0.1:8001/v1     # the OpenAI base URL; /chat/completions is added
        model: gpt-4-0613                      # the model id the upstream expects
        api_key_env: OPENAI_API_KEY            # optional: the key is read from this variable
        cost: 0.012                            # optional: cost per call, for the policies
      mixtral:
        base_url: http://127.0.0.1:8002/v1
        model: mistralai/Mixtral-8x7B-Instruct-v0.1

URLs and keys come from this file and the environment only, never from a request, and keys are
never logged or shown (``repr`` hides them).
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from benchroute._persist import parse_json, read_text_file
from benchroute.exceptions import BenchrouteError
from benchroute.inputs import is_real

logger = logging.getLogger(__name__)

_FIELDS = {"base_url", "model", "api_key_env", "cost"}


@dataclass(frozen=True)
class Upstream:
    """One router model's endpoint. ``api_key`` is resolved from the environment at start-up."""

    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    cost: float | None = None
    api_key: str | None = field(default=None, repr=False, compare=False)

    @property
    def chat_url(self) -> str:
        """The base URL's path + ``/chat/completions``, its query kept (Azure's
        ``?api-version=``: it was appended after the query, and every call was a 404)."""
        parts = urlsplit(self.base_url)
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/chat/completions"))

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


#: YAML 1.2's floats: PyYAML follows YAML 1.1, where ``1e-4`` (no dot) is text, so a cost
#: written as in a price file was refused as "got '1e-4'".
_YAML12_FLOAT = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X)


def _unique_key_loader() -> Any:
    """PyYAML's safe loader reading YAML 1.2's floats and refusing a key given twice in one
    mapping (it keeps the last, silently: a model listed twice with two costs)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[object] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r:.80} appears twice in one mapping",
                        key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT,
                                          list("-+0123456789."))
    return UniqueKeyLoader


def _read(path: Path) -> object:
    text = read_text_file(path, missing=f"{path}: no such upstreams file")
    if path.suffix.lower() == ".json":
        return parse_json(text, str(path), unique_keys=True)
    import yaml

    try:
        return yaml.load(text, Loader=_unique_key_loader())
    except yaml.YAMLError as exc:  # one line: PyYAML's own is several, quoting its buffer
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BenchrouteError(f"{path}: invalid YAML{where}: {what}") from None
    except (RecursionError, ValueError, TypeError) as exc:  # deep nesting, a huge int, a
        # mapping or list as a key (unhashable)
        raise BenchrouteError(f"{path}: invalid YAML ({type(exc).__name__}: "
                              f"{str(exc):.120})") from None


def _field(path: Path, name: str, key: str, value: object, kind: type) -> object:
    if not isinstance(value, kind) or isinstance(value, bool):
        raise BenchrouteError(f"{path}: field 'models.{name}.{key}' must be a "
                              f"{kind.__name__ if kind is not float else 'number'}, got {value!r:.60}")
    return value


def load_upstreams(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None,
                   need_keys: bool = True) -> dict[str, Upstream]:
    """Read and check an upstreams file; every error names the file and the field.

    Keys named by ``api_key_env`` must be set in ``environ`` (default ``os.environ``); all the
    missing ones are listed in one error.
    """
    path = Path(path)
    env = os.environ if environ is None else environ
    raw = _read(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), dict) or not raw["models"]:
        raise BenchrouteError(f"{path}: expected a mapping with a non-empty 'models' mapping of "
                              "router model name -> {base_url, model, api_key_env?, cost?}")
    out: dict[str, Upstream] = {}
    unset: list[str] = []
    for name, spec in raw["models"].items():
        name = str(name)
        if not isinstance(spec, dict):
            raise BenchrouteError(f"{path}: field 'models.{name}' must be a mapping with "
                                  "base_url and model")
        extra = sorted(set(spec) - _FIELDS)
        if extra:
            raise BenchrouteError(f"{path}: field 'models.{name}' has unknown key(s) {extra}; "
                                  f"known: {sorted(_FIELDS)}")
        for needed in ("base_url", "model"):
            if needed not in spec:
                raise BenchrouteError(f"{path}: field 'models.{name}.{needed}' is missing")
        url = str(_field(path, name, "base_url", spec["base_url"], str))
        _check_url(path, name, url)
        model = str(_field(path, name, "model", spec["model"], str))
        # a control character or line break reaches the response's x-benchroute-entry header,
        # which no HTTP server sends: every pinned request dropped its connection (fuzzing)
        if not model.strip() or model != model.strip() or any(
                unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in model):
            raise BenchrouteError(f"{path}: field 'models.{name}.model' must be the upstream's "
                                  f"model id, without surrounding spaces or control "
                                  f"characters; got {model!r:.80}")
        key_env = spec.get("api_key_env")
        secret: str | None = None
        if key_env is not None:
            key_env = str(_field(path, name, "api_key_env", key_env, str))
            secret = (env.get(key_env) or "").strip()  # a secrets file's line break, say
            if not secret:
                unset.append(f"{key_env} (models.{name})")
            elif any(c.isspace() or not c.isprintable() or not c.isascii() for c in secret):
                raise BenchrouteError(f"{path}: the key in ${key_env} (models.{name}) holds "
                                      "spaces, control or non-ASCII characters; no HTTP header "
                                      "can carry it (every call failed)")
        cost = spec.get("cost")
        if cost is not None:
            # the package's one test of a number (an integer past a float's range raised
            # OverflowError here; found by fuzzing)
            if not is_real(cost) or float(cost) < 0:
                raise BenchrouteError(f"{path}: field 'models.{name}.cost' must be a finite "
                                      f"number >= 0, got {cost!r:.60}")
            cost = float(cost)
        out[name] = Upstream(name, url, model, key_env, cost, secret or None)
    if unset and need_keys:  # calibrate reads the costs alone: no secret needed there
        raise BenchrouteError(f"{path}: environment variable(s) for upstream keys not set: "
                              f"{', '.join(unset)}")
    return out


def _check_url(path: Path, name: str, url: str) -> None:
    """An http(s) URL with a host and a valid port, no fragment and no user name, that the HTTP
    client takes: the ones that could never be called were accepted and failed on every
    request ('http://:80/v1', port 99999, a host of 999.999.999.999, a NUL in the path)."""
    where = f"{path}: field 'models.{name}.base_url'"
    # every message shows the URL without what precedes its host: a password given there is
    # never printed (it was, by every refusal but one; found by a review)
    shown = _USER_INFO.sub("", url)
    try:
        parts = urlsplit(url)  # raises for a broken IPv6 host ('http://[::1/v1')
        port = parts.port  # raises for a port out of range or not a number
        _client_url(Upstream(name, url, "m").chat_url)
    except ValueError as exc:
        # the parser's own words may quote what precedes the host: not when there is any
        reason = str(exc) if shown == url else "a malformed user name, password or port"
        raise BenchrouteError(f"{where}: {reason:.120}, in {shown!r:.80}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BenchrouteError(f"{where} must be an http(s) URL with a host, got {shown!r:.80}")
    if port == 0 or parts.fragment:
        raise BenchrouteError(f"{where} has {'port 0' if port == 0 else 'a #fragment'}, which "
                              f"no request can use: {shown!r:.80}")
    if "@" in parts.netloc or "\\" in parts.netloc:
        # 'http://127.0.0.1\@evil/v1' reads as a local URL and calls the host 'evil'
        # (urllib and httpx agree); a password there would reach logs and error messages
        raise BenchrouteError(f"{where} has a user name, a password or a backslash before its "
                              f"host ({parts.hostname!r:.60} is the host called): keys come "
                              f"from api_key_env, never the URL; got {shown!r:.80} (with what "
                              "precedes the host left out)")


#: What precedes a URL's host (a user name, a password): left out of every message
_USER_INFO = re.compile(r"(?<=//)[^/?#]*[@\\]")


def _client_url(url: str) -> None:
    """Raise ValueError for a URL httpx would refuse on every call (an IDNA error, an invalid
    IPv4 host, control characters); without httpx (calibrate reads costs alone) nothing."""
    try:
        import httpx
    except ImportError:
        return
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise ValueError(f"not a URL the HTTP client takes ({exc})") from None


def check_coverage(upstreams: Mapping[str, Upstream], needed: Iterable[str], path: object,
                   why: str) -> None:
    """One error listing every model the policy can choose that has no upstream."""
    missing = [m for m in needed if m not in upstreams]
    if missing:
        raise BenchrouteError(f"{path}: no upstream for model(s) {missing}, which {why}; add them "
                              f"under 'models:' or restrict the choice with --candidates "
                              f"(upstreams name {sorted(upstreams)})")


def served(upstreams: Mapping[str, Upstream], models: Sequence[str], path: object
           ) -> dict[str, Upstream]:
    """The upstreams of the router's models; others (a typo, a file shared by routers) are left
    out with a warning: served, they were listed in /v1/models and then refused."""
    unknown = sorted(m for m in upstreams if m not in models)
    if unknown:
        logger.warning("%s: upstream(s) %s name no model of the router; not served", path,
                       unknown[:10])
    return {m: u for m, u in upstreams.items() if m in models}


def upstream_costs(upstreams: Mapping[str, Upstream]) -> dict[str, float] | None:
    """Per-call costs from the file when every upstream declares one, else None."""
    costs = {n: u.cost for n, u in upstreams.items()}
    if all(v is not None for v in costs.values()):
        return {n: float(v) for n, v in costs.items() if v is not None}
    return None
