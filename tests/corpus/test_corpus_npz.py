"""Compressed arrays as decompression bombs (issue 18, class 4): a ``pool.npz``, a cache shard,
an ``--import`` file or the static tier's ``vectors.npz`` of a megabyte or two that declares more
than a GiB is refused from its headers, before anything is decompressed; so are members whose
headers declare more than they hold and shapes other than the sidecar's.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from benchroute.embedding import EmbeddingCache, HashingEncoder
from benchroute.router import Router
from tests.corpus.test_corpus_cache import ENC, TEXTS, _reembeds
from tests.corpus.test_corpus_router import _resum
from tests.unit.test_router import synthetic

AREA = "npz"
BOMB_BYTES = 5 << 28  # 1.25 GiB of float32 zeros, deflated to 5.5 MB (three seconds to build)


def _write_npz(path: Path, arrays: dict[str, np.ndarray | tuple[tuple[int, ...], str]]) -> Path:
    """An .npz whose members are real arrays, or (shape, dtype) headers followed by zeros
    (deflated, written a chunk at a time)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, value in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                if isinstance(value, np.ndarray):
                    np.lib.format.write_array(fh, value, allow_pickle=False)
                    continue
                shape, dtype = value
                np.lib.format.write_array_header_1_0(
                    fh, {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape})
                left = int(np.prod(shape)) * np.dtype(dtype).itemsize
                chunk = bytes(64 << 20)
                while left > 0:
                    fh.write(chunk[:min(left, len(chunk))])
                    left -= len(chunk)
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    """Bombs built once: a tall label array (320 MiB) and a wide vector array (1.25 GiB)."""
    root = tmp_path_factory.mktemp("bombs")
    keys = np.array([f"{i:064x}" for i in range(10)])
    return {
        "pool": _write_npz(root / "pool.npz", {
            "Y": ((BOMB_BYTES // 48, 3), "<f4"), "models": np.array(["m0", "m1", "m2"])}),
        "wide": _write_npz(root / "wide.npz", {
            "sha256": keys, "embedding": ((10, BOMB_BYTES // 40), "<f4")}),
    }


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    data, X = synthetic(7, n_tasks=3, per_task=8)
    router = Router(alphas=(0.0,), repeats=1, encoder=HashingEncoder(8)).fit(data, embeddings=X)
    return router.save(tmp_path_factory.mktemp("saved") / "router")


@pytest.fixture
def copy(saved, tmp_path):
    return Path(shutil.copytree(saved, tmp_path / "router"))


def test_pool_bomb_with_matching_checksums(corpus, copy, bombs):
    shutil.copy(bombs["pool"], copy / "pool.npz")
    _resum(copy)
    assert corpus(AREA, "error", lambda: Router.load(copy),
                  match=r"pool\.npz: unreadable or incomplete \(field 'Y' expands from [\d,]+ "
                        r"to [\d,]+ bytes .*field 'Y' must be \(24, 3\) floats")


@pytest.mark.parametrize("arrays, pattern", [
    ({"Y": np.zeros((30, 3), np.float32), "models": np.array(["m0", "m1", "m2"])},
     r"field 'Y' has shape \(30, 3\) .*expected \(24, 3\)"),
    ({"Y": np.zeros((24, 2), np.float32), "models": np.array(["m0", "m1"])},
     r"field 'Y' has shape \(24, 2\) .*expected \(24, 3\)"),
    ({"Y": np.zeros((24, 3), np.float32), "models": np.array(["m0", "m1", "m2", "m3"])},
     r"field 'models' has shape \(4,\) .*expected \(3\)"),
], ids=["more-rows", "fewer-models", "more-names"])
def test_pool_shape_from_headers(corpus, copy, arrays, pattern):
    _write_npz(copy / "pool.npz", arrays)
    _resum(copy)
    assert corpus(AREA, "error", lambda: Router.load(copy), match=pattern)


def test_deflated_pool_of_the_right_shape_loads(corpus, copy):
    with np.load(copy / "pool.npz") as z:
        Y, models = z["Y"], z["models"]
    _write_npz(copy / "pool.npz", {"Y": Y, "models": models})
    _resum(copy)
    assert corpus(AREA, "right", lambda: Router.load(copy),
                  check=lambda r: np.array_equal(r.Y_, Y, equal_nan=True))


def _lying_header(path: Path, declared: tuple[int, ...], real: np.ndarray) -> None:
    """A member whose header declares ``declared`` but holds the bytes of ``real``."""
    with zipfile.ZipFile(path, "w") as zf, zf.open("embedding.npy", "w") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": real.dtype.str, "fortran_order": False, "shape": declared})
        fh.write(real.tobytes())
    with zipfile.ZipFile(path, "a") as zf, zf.open("sha256.npy", "w") as fh:
        np.lib.format.write_array(fh, np.array([f"{i:064x}" for i in range(declared[0])]))


@pytest.mark.parametrize("declared", [(4, 1 << 28), (4, 32)], ids=["huge", "double"])
def test_header_declares_more_than_the_member_holds(corpus, tmp_path, declared):
    path = tmp_path / "pre.npz"
    _lying_header(path, declared, np.ones((4, 16), np.float32))
    cache = EmbeddingCache(tmp_path / "c", ENC.identifier)
    assert corpus(AREA, "error", lambda: cache.import_npz(path),
                  match=r"pre\.npz: field 'embedding' declares shape .* but its member holds 256")


def test_import_bomb(corpus, tmp_path, bombs):
    cache = EmbeddingCache(tmp_path / "c", ENC.identifier)
    assert corpus(AREA, "error", lambda: cache.import_npz(bombs["wide"]),
                  match=r"wide\.npz: field 'embedding' expands from [\d,]+ to [\d,]+ bytes "
                        r"\(more than 64 times\); refused as a decompression bomb")


def test_import_bomb_into_a_cache_of_known_dimension(corpus, tmp_path, bombs):
    cache = EmbeddingCache(tmp_path / "c", ENC.identifier)
    cache.embed(TEXTS[:3], ENC)
    assert corpus(AREA, "error", lambda: cache.import_npz(bombs["wide"]),
                  match=r"wide\.npz: field 'embedding' (expands|has shape)")


def test_shard_bomb_is_ignored_and_reported(corpus, tmp_path, bombs):
    cache = EmbeddingCache(tmp_path, ENC.identifier)
    cache.embed(TEXTS[:20], ENC, chunk_size=10)
    shard = sorted(cache.folder.glob("shard-*.npz"))[0]
    shutil.copy(bombs["wide"], shard)
    run, check = _reembeds(tmp_path, corrupt=1)
    assert corpus(AREA, "skip", run, check=check)


def test_compressed_real_file_still_imports(corpus, tmp_path):
    from benchroute.data.text import text_key

    path = tmp_path / "pre.npz"
    np.savez_compressed(path, sha256=np.array([text_key(t) for t in TEXTS]),
                        embedding=ENC.encode(TEXTS))
    cache = EmbeddingCache(tmp_path / "c", ENC.identifier)
    assert corpus(AREA, "right", lambda: cache.import_npz(path), check=lambda n: n == len(TEXTS))


@pytest.mark.new_api
def test_small_compressible_member_is_read(corpus, tmp_path):
    from benchroute.npz import read_npz

    # under the floor (16 MiB) the ratio is not held against a member: 1 MiB of zeros reads
    path = _write_npz(tmp_path / "z.npz", {"a": ((1 << 18,), "<f4")})
    assert corpus(AREA, "right", lambda: read_npz(path, {"a": (None,)}),
                  check=lambda z: z["a"].shape == (1 << 18,))


@pytest.mark.parametrize("shapes, pattern", [
    ({"a": (None, None)}, r"field 'a' has shape \(4,\) and type float32, expected \(d, d\)"),
    ({"a": (5,)}, r"expected \(5\)"),
    ({"b": (None,)}, r"no array 'b' in the file"),
], ids=["ndim", "size", "missing"])
@pytest.mark.new_api
def test_read_npz_names_the_field(corpus, tmp_path, shapes, pattern):
    from benchroute.exceptions import BenchrouteError
    from benchroute.npz import read_npz

    path = tmp_path / "x.npz"
    np.savez(path, a=np.ones(4, np.float32))

    def run():
        try:
            return read_npz(path, shapes)
        except (ValueError, KeyError) as exc:  # the callers' wrapping, as they all do
            raise BenchrouteError(str(exc)) from exc

    assert corpus(AREA, "error", run, match=pattern)


def _damaged(tmp_path: Path, how: str) -> Path:
    """An .npz of one (5, 3) array, damaged as the fuzzing of saved routers did it."""
    import struct

    path = tmp_path / f"{how}.npz"
    Y = np.arange(15, dtype=np.float64).reshape(5, 3)
    if how == "deflate":
        np.savez_compressed(path, Y=Y)
        b = bytearray(path.read_bytes())
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo("Y.npy")
        start = info.header_offset + 30 + len(info.filename) + len(info.extra)
        for j in range(start + 2, start + 40):
            b[j] ^= 0xFF
        path.write_bytes(bytes(b))
        return path
    np.savez(path, Y=Y)
    if how == "method":  # an unknown compression method in the central directory
        b = bytearray(path.read_bytes())
        struct.pack_into("<H", b, b.find(b"PK\x01\x02") + 10, 99)
        path.write_bytes(bytes(b))
    else:  # a .npy header that does not parse, with a valid CRC
        with zipfile.ZipFile(path) as zf:
            raw = zf.read("Y.npy")
        i = raw.find(b"'shape': (")
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("Y.npy", raw[:i] + b"'shape': ((" + raw[i + 11:])
    return path


@pytest.mark.parametrize("how,cause", [("method", "NotImplementedError"),
                                       ("deflate", "error"), ("header", "TokenError")])
def test_damaged_bytes_are_a_value_error(tmp_path, how, cause):
    """What zipfile, zlib and NumPy's header parser raise for damaged bytes comes out as the one
    ValueError callers catch (a saved router's load raised NotImplementedError, zlib.error or
    tokenize.TokenError before)."""
    from benchroute.npz import read_npz

    with pytest.raises(ValueError, match=f"damaged bytes \\({cause}"):
        read_npz(_damaged(tmp_path, how), {"Y": (5, 3)})
