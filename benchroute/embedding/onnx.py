"""all-mpnet-base-v2 on ONNX Runtime: the same vectors as sentence-transformers, without torch.

The graph is exported once from the installed weights with ``torch.onnx.export`` (the only step
that needs torch) into ``$BENCHROUTE_HOME/models/all-mpnet-base-v2-onnx/`` next to a JSON
sidecar holding its SHA-256, the exporter versions and the cosine measured against
sentence-transformers at export time. Encoding then needs only ``onnxruntime``, ``tokenizers``
and numpy: importing torch and sentence-transformers is most of the half-minute a new process
used to wait before its first answer.

Tokenisation, pooling and normalisation follow the sentence-transformers model folder: the
``tokenizer.json`` of the installed model, truncation to ``max_seq_length`` word pieces (384 by
default), padding to the longest text of each batch, mean pooling over the attention mask, L2
normalisation. Texts are batched in order of length so that a batch pads little.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from benchroute._persist import sha256_file
from benchroute.embedding.base import length_batches, load_once, model_texts
from benchroute.embedding.install import (
    DEFAULT_ENCODER_ID,
    DEFAULT_MODEL,
    benchroute_home,
    check_sha256,
    installed_model,
    read_sidecar,
    tokenizer_file,
)
from benchroute.embedding.names import (
    DEFAULT_MAX_SEQ_LENGTH,
    check_cap,
    own_identifier,
    shared_identifier,
)
from benchroute.exceptions import BenchrouteError, ModelNotInstalledError

logger = logging.getLogger(__name__)

ONNX_FOLDER = f"{DEFAULT_MODEL}-onnx"
EXPORT_FORMAT_VERSION = 1
OPSET = 17
#: the vectors of two backends share a cache namespace only when they agree this closely
SHARE_MIN_COSINE = 0.9999
PAD_ID = 1  # <pad> of the mpnet tokenizer

# Texts the export is checked on: short, long (truncated at 384), accents, code, digits.
_CHECK_TEXTS = (
    "What is the capital of France?",
    "Solve for x: 3x + 7 = 22.",
    "  Leading and trailing spaces, tabs\tand\nnewlines  ",
    "Ünïcödé: naïve café, 東京, Ελληνικά, emoji 🙂.",
    "def f(x):\n    return [i ** 2 for i in range(x) if i % 3]\n",
    "Which of the following is a prime number? A. 21 B. 27 C. 29 D. 33",
    " ".join(["The mitochondria is the powerhouse of the cell, and it makes ATP."] * 60),
    "a",
)


def onnx_dir(root: Path | None = None) -> Path:
    """Folder of the exported graph: ``$BENCHROUTE_HOME/models/all-mpnet-base-v2-onnx``."""
    return (root or benchroute_home() / "models") / ONNX_FOLDER


def read_export_info(root: Path | None = None) -> dict[str, Any] | None:
    """The export sidecar (``export.json``), or None when the graph has not been exported."""
    folder = onnx_dir(root)
    return read_sidecar(folder / "export.json", folder / "model.onnx",
                        {"format_version": EXPORT_FORMAT_VERSION},
                        "benchroute model export-onnx --force")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def export_onnx(root: Path | None = None, force: bool = False) -> Path:
    """Export the installed all-mpnet-base-v2 to ONNX once; returns the folder.

    Needs torch, transformers and onnx (``pip install 'benchroute[onnx,torch]'``). The export is
    written to a temporary folder, checked against sentence-transformers on a few texts (the
    minimum cosine goes into the sidecar) and only then moved into place.

    Parameters
    ----------
    root : Path, optional
        Models folder (default ``$BENCHROUTE_HOME/models``), holding the installed model.
    force : bool
        Export again even if an export is there.
    """
    dest = onnx_dir(root)
    if not force and read_export_info(root) is not None:
        return dest
    source = installed_model(root)
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise ModelNotInstalledError(
            f"exporting {DEFAULT_MODEL} to ONNX needs torch and transformers once ({exc}); "
            "`pip install 'benchroute[torch]'` and run `benchroute model export-onnx`"
        ) from exc
    logger.info("exporting %s to ONNX into %s (once; about a minute)", DEFAULT_MODEL, dest)
    model = AutoModel.from_pretrained(str(source), local_files_only=True).eval()

    class _Tokens(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=dest.parent) as tmp_name:
        tmp = Path(tmp_name) / ONNX_FOLDER
        tmp.mkdir()
        dummy = torch.ones((2, 16), dtype=torch.long)
        axes = {0: "batch", 1: "sequence"}
        with torch.no_grad():
            torch.onnx.export(
                _Tokens(model), (dummy, dummy), str(tmp / "model.onnx"),
                input_names=["input_ids", "attention_mask"], output_names=["token_embeddings"],
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_embeddings": axes},
                opset_version=OPSET, do_constant_folding=True, dynamo=False,
            )
        min_cos = _check_against_torch(tmp, source)
        info = {
            "format_version": EXPORT_FORMAT_VERSION,
            "source_model": DEFAULT_ENCODER_ID,
            "source_safetensors_sha256": sha256_file(source / "model.safetensors"),
            "onnx_sha256": sha256_file(tmp / "model.onnx"),
            "onnx_bytes": (tmp / "model.onnx").stat().st_size,
            "opset": OPSET,
            "exporter": "torch.onnx.export (TorchScript)",
            "versions": {p: _version(p) for p in
                         ("torch", "transformers", "onnx", "onnxruntime", "tokenizers")},
            "check_texts": len(_CHECK_TEXTS),
            "check_min_cosine": min_cos,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        (tmp / "export.json").write_text(json.dumps(info, indent=1))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    logger.info("exported %s (min cosine to sentence-transformers %.6f)", dest, min_cos)
    return dest


def _check_against_torch(folder: Path, source: Path) -> float:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    ref = st.encode(list(_CHECK_TEXTS), normalize_embeddings=True, convert_to_numpy=True,
                    show_progress_bar=False)
    ours = OnnxEncoder(graph=folder / "model.onnx", tokenizer=source / "tokenizer.json",
                       identifier="check").encode(list(_CHECK_TEXTS), batch_size=4)
    return float(np.min(np.sum(ours * ref, axis=1)))


def mean_pool(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors under the attention mask, then L2-normalised (float32)."""
    m = mask.astype(np.float32)[:, :, None]
    summed = (tokens * m).sum(axis=1)
    pooled = summed / np.clip(m.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)


def cpu_threads() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class OnnxEncoder:
    """all-mpnet-base-v2 on ONNX Runtime (CPU), the vectors of sentence-transformers.

    Parameters
    ----------
    max_seq_length : int
        Word-piece cap (≤ 512); texts longer are truncated. Part of the identifier, so vectors
        of different caps never share a cache namespace.
    threads : int, optional
        ONNX Runtime intra-op threads; default all cores this process may use.
    root : Path, optional
        Models folder (default ``$BENCHROUTE_HOME/models``).
    export : bool
        Export the graph on first use when it is missing (needs torch once); else raise.
    graph, tokenizer, identifier
        A graph file, tokenizer file and identifier given directly (for checks and tests),
        bypassing the installed model and its sidecar.

    Notes
    -----
    The identifier is the sentence-transformers one (the cache is shared) only when the export
    sidecar records a minimum cosine ≥ :data:`SHARE_MIN_COSINE` to sentence-transformers;
    otherwise the vectors go into a namespace of their own.
    """

    backend = "onnx"

    def __init__(self, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH, threads: int | None = None,
                 root: Path | None = None, export: bool = True, graph: Path | None = None,
                 tokenizer: Path | None = None, identifier: str | None = None) -> None:
        check_cap(max_seq_length, "OnnxEncoder")
        self.max_seq_length = max_seq_length
        self.threads = threads
        self.root = root
        self.export = export
        self.dimension = 768
        self._graph = graph
        self._tokenizer_path = tokenizer
        self._identifier = identifier
        self._session: Any = None
        self._tokenizer: Any = None

    def __repr__(self) -> str:
        return f"OnnxEncoder(max_seq_length={self.max_seq_length})"

    def _info(self) -> dict[str, Any]:
        info = read_export_info(self.root)
        if info is None:
            if not self.export:
                raise ModelNotInstalledError(
                    f"no ONNX export in {onnx_dir(self.root)}; run `benchroute model export-onnx`")
            export_onnx(self.root)
            info = read_export_info(self.root)
        assert info is not None
        return info

    @property
    def identifier(self) -> str:
        load_once(self, "_identifier", self._identify)
        assert self._identifier is not None
        return self._identifier

    @identifier.setter
    def identifier(self, value: str) -> None:
        self._identifier = value

    def _identify(self) -> None:
        """The identifier from the export's record, exporting first when there is none (once
        for every thread, :func:`~benchroute.embedding.base.load_once`: a router reads it
        before any encode, so threads meeting a fresh machine each exported the model, and
        raced on the export's folder; found by a review)."""
        info = self._info()
        cosine = info.get("check_min_cosine", 0.0)
        if not isinstance(cosine, (int, float)) or isinstance(cosine, bool) \
                or not -1.0 <= cosine <= 1.0:
            raise BenchrouteError(f"{onnx_dir(self.root) / 'export.json'}: check_min_cosine "
                                  f"is {cosine!r:.60}, expected a number in [-1, 1]; run "
                                  "`benchroute model export-onnx --force`")
        if cosine >= SHARE_MIN_COSINE:
            self._identifier = shared_identifier(self.max_seq_length)
        else:  # said once: its vectors go to a cache of their own (found by a review)
            self._identifier = own_identifier("onnx", self.max_seq_length)
            logger.warning("the ONNX export agrees with sentence-transformers to a minimum "
                           "cosine of %.6f only (below %s): its vectors are cached apart, "
                           "as %s; `benchroute model export-onnx --force` exports again",
                           cosine, SHARE_MIN_COSINE, self._identifier)

    def _load(self) -> tuple[Any, Any]:
        load_once(self, "_session", self._load_now)
        return self._session, self._tokenizer

    def _load_now(self) -> None:
        """The first load, once for every thread (:func:`~benchroute.embedding.base.load_once`);
        ``_session`` is set last."""
        graph = self._graph
        if graph is None:
            info = self._info()
            graph = onnx_dir(self.root) / "model.onnx"
            size = graph.stat().st_size
            if size != info.get("onnx_bytes"):
                raise BenchrouteError(f"{graph}: {size} bytes, the export recorded "
                                      f"{info.get('onnx_bytes')!r:.40}; run "
                                      "`benchroute model export-onnx --force`")
            # the vectors may go into sentence-transformers' namespace: only from the graph
            # that was checked against it
            check_sha256(graph, info.get("onnx_sha256"), str(onnx_dir(self.root) / "export.json"),
                         "benchroute model export-onnx --force")
        tok_path = self._tokenizer_path or tokenizer_file(self.root)
        logger.info("loading %s (ONNX Runtime, %s threads) from %s", DEFAULT_MODEL,
                    self.threads or cpu_threads(), graph)
        tokenizer = load_tokenizer(tok_path, self.max_seq_length)
        session = _session(graph, self.threads or cpu_threads())
        # the session last: a reader that finds it finds the tokenizer too, and a failed load
        # leaves neither
        self._tokenizer, self._session = tokenizer, session

    def encode(self, texts: Sequence[str], batch_size: int = 32,
               on_batch: Callable[[int], object] | None = None) -> np.ndarray:
        """(n, 768) float32 unit vectors in input order; ``on_batch(n_done)`` after each batch."""
        items = model_texts(texts)
        if not items:
            return np.zeros((0, self.dimension), dtype=np.float32)
        session, tokenizer = self._load()
        encodings = tokenizer.encode_batch(items)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encodings]
        out = np.empty((len(items), self.dimension), dtype=np.float32)
        for rows in length_batches([len(i) for i in ids], batch_size):
            width = max(len(ids[r]) for r in rows)
            input_ids = np.full((len(rows), width), PAD_ID, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for j, r in enumerate(rows):
                input_ids[j, :len(ids[r])] = ids[r]
                mask[j, :len(ids[r])] = 1
            (tokens,) = session.run(None, {"input_ids": input_ids, "attention_mask": mask})
            out[rows] = mean_pool(tokens, mask)
            if on_batch is not None:
                on_batch(len(rows))
        return out


def _session(graph: Path, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ModelNotInstalledError(
            "the ONNX backend needs onnxruntime: `pip install 'benchroute[onnx]'`") from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only
    # idle threads sleep instead of spinning: on a shared 2-core machine spinning threads steal
    # the cores the other thread (or another process) needs
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(graph), sess_options=opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 (onnxruntime's errors share no base class)
        raise BenchrouteError(f"{graph}: not a valid ONNX graph ({type(exc).__name__}: "
                              f"{exc!s:.200}); run `benchroute model export-onnx --force`") from exc


def load_tokenizer(path: Path, max_seq_length: int) -> Any:
    """The word-piece tokenizer of ``tokenizer.json``, truncating at ``max_seq_length``, no
    padding; a broken file is a :class:`BenchrouteError` naming it."""
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 (tokenizers raises plain Exception)
        raise BenchrouteError(f"{path}: not a valid tokenizer file ({exc!s:.200}); reinstall "
                              "with `benchroute model install --force`") from exc
    tok.no_padding()  # padded per batch above, to the longest text of the batch
    tok.enable_truncation(max_length=max_seq_length)
    return tok
