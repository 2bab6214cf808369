"""Archives as an attacker or a damaged download makes them: bombs, truncations, corruptions,
links out of the folder, and two archives holding the same paths. Each case asserts its outcome."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import lzma
import tarfile
from pathlib import Path

import pytest

from benchroute import load

with contextlib.suppress(ImportError):  # the code before this corpus (its counts in docs/reliability.md)
    from benchroute.data.archive import ArchiveLimits, extract_archive

AREA = "archives"
QUESTIONS = {"mmlu_train.json": [{"question": f"q{i} alpha", "scores": {"m1": i % 2, "m2": 1}}
                                 for i in range(4)],
             "gsm8k_train.json": [{"question": f"g{i} beta", "scores": {"m1": 1, "m2": i % 2}}
                                  for i in range(3)]}


def _member(name: str, data: bytes = b"", **attrs) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    return info, data


def _routerdc(files=QUESTIONS, prefix="split2_model7/") -> list[tuple[tarfile.TarInfo, bytes]]:
    return [_member(prefix + name, json.dumps(rows).encode()) for name, rows in files.items()]


def _tar_bytes(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def _write(path: Path, raw: bytes) -> Path:
    if path.name.endswith((".tar.gz", ".tgz")):
        raw = gzip.compress(raw, mtime=0)
    elif path.name.endswith(".tar.xz"):
        raw = lzma.compress(raw)
    path.write_bytes(raw)
    return path


def _loads(n_instances: int, n_datasets: int = 2):
    return lambda d: d.n_instances == n_instances and len(d.datasets) == n_datasets


def _gzip_zero_bomb(path: Path, gib: int = 1) -> Path:
    """A ~1 MB .tar.gz whose one member is ``gib`` GiB of zeros: a gzip stream may hold many
    members, so one compressed MiB of zeros repeated 1024 times per GiB is built in milliseconds."""
    info = tarfile.TarInfo("split2_model7/mmlu_train.json")
    info.size = gib << 30
    zeros = gzip.compress(bytes(1 << 20), mtime=0)
    with open(path, "wb") as fh:
        fh.write(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT), mtime=0))
        for _ in range(1024 * gib):
            fh.write(zeros)
        fh.write(gzip.compress(bytes(1024), mtime=0))
    return path


# ---------------------------------------------------------------- archives that must load
@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tgz", ".tar.xz"])
def test_good_archive_loads(corpus, tmp_path, suffix):
    arch = _write(tmp_path / f"a{suffix}", _tar_bytes(_routerdc()))
    assert corpus(AREA, "right", lambda: load(arch), check=_loads(7))


def test_split_archives_merge(corpus, tmp_path):
    folder = tmp_path / "split"
    folder.mkdir()
    _write(folder / "a.tar.gz", _tar_bytes(_routerdc({"mmlu_train.json": QUESTIONS["mmlu_train.json"]})))
    _write(folder / "b.tar.gz", _tar_bytes(_routerdc({"gsm8k_train.json": QUESTIONS["gsm8k_train.json"]})))
    assert corpus(AREA, "right", lambda: load(folder), check=_loads(7))


def test_same_paths_in_two_archives_are_not_overwritten(corpus, tmp_path):
    """b.tar.gz used to overwrite a.tar.gz's files: 4 inputs of one model pair silently lost."""
    folder = tmp_path / "two"
    folder.mkdir()
    other = {"mmlu_train.json": [{"question": f"z{i} gamma", "scores": {"m1": 0, "m2": 0}}
                                 for i in range(4)]}
    _write(folder / "a.tar.gz", _tar_bytes(_routerdc({"mmlu_train.json": QUESTIONS["mmlu_train.json"]})))
    _write(folder / "b.tar.gz", _tar_bytes(_routerdc(other)))
    assert corpus(AREA, "error", lambda: load(folder), match=r"overlap|duplicate|more than once|twice")


def test_identical_archives_twice_is_an_error(corpus, tmp_path):
    folder = tmp_path / "dup"
    folder.mkdir()
    raw = _tar_bytes(_routerdc())
    _write(folder / "a.tar", raw)
    _write(folder / "b.tar", raw)
    assert corpus(AREA, "error", lambda: load(folder), match=r"overlap|duplicate|more than once|twice")


@pytest.mark.new_api
def test_raised_limit_lets_a_big_member_through(corpus, tmp_path):
    pad = [_member("split2_model7/pad.bin", bytes(3 << 20))]
    arch = _write(tmp_path / "a.tar.gz", _tar_bytes(_routerdc() + pad))
    limits = ArchiveLimits(ratio_floor=1 << 20, max_ratio=10_000)
    assert corpus(AREA, "right", lambda: load(arch, archive_limits=limits), check=_loads(7))


# ---------------------------------------------------------------- bombs and limits
@pytest.mark.new_api
def test_one_mb_gzip_bomb_writes_nothing(corpus, tmp_path):
    arch = _gzip_zero_bomb(tmp_path / "bomb.tar.gz")
    assert arch.stat().st_size < 2 << 20
    dest = tmp_path / "out"
    assert corpus(AREA, "error", lambda: extract_archive(arch, dest),
           match=r"bomb\.tar\.gz: member 'split2_model7/mmlu_train.json' \(1073741824 bytes\) "
                 r"takes the extracted size past")
    assert not any(p.is_file() for p in dest.rglob("*"))


def test_bomb_through_load(corpus, tmp_path):
    arch = _gzip_zero_bomb(tmp_path / "bomb.tar.gz")
    assert corpus(AREA, "error", lambda: load(arch), match=r"bomb\.tar\.gz: .* past \d+ bytes")


@pytest.mark.new_api
@pytest.mark.parametrize("how", ["param", "env"])
def test_member_count_limit(corpus, tmp_path, monkeypatch, how):
    members = _routerdc() + [_member(f"split2_model7/empty{i}.txt") for i in range(60)]
    arch = _write(tmp_path / "many.tar.gz", _tar_bytes(members))
    if how == "env":
        monkeypatch.setenv("BENCHROUTE_ARCHIVE_MAX_MEMBERS", "50")
        limits = None
    else:
        limits = ArchiveLimits(max_members=50)
    assert corpus(AREA, "error", lambda: load(arch, archive_limits=limits),
           match=r"many\.tar\.gz: more than 50 members")


@pytest.mark.new_api
@pytest.mark.parametrize("how", ["param", "env"])
def test_byte_limit(corpus, tmp_path, monkeypatch, how):
    arch = _write(tmp_path / "a.tar", _tar_bytes(_routerdc()))
    if how == "env":
        monkeypatch.setenv("BENCHROUTE_ARCHIVE_MAX_BYTES", "1000")
        limits = None
    else:
        limits = ArchiveLimits(max_bytes=1000)
    assert corpus(AREA, "error", lambda: load(arch, archive_limits=limits), match=r"a\.tar: .*past 1000 bytes")


@pytest.mark.new_api
@pytest.mark.parametrize("value", ["lots", "-5", "0", "1e3x"])
def test_bad_limit_in_environment(corpus, tmp_path, monkeypatch, value):
    arch = _write(tmp_path / "a.tar", _tar_bytes(_routerdc()))
    monkeypatch.setenv("BENCHROUTE_ARCHIVE_MAX_RATIO", value)
    assert corpus(AREA, "error", lambda: load(arch),
           match=r"BENCHROUTE_ARCHIVE_MAX_RATIO|max_ratio is .*expected a positive number")


@pytest.mark.new_api
@pytest.mark.parametrize("kw", [{"max_members": 0}, {"max_bytes": -1}, {"max_ratio": float("nan")}])
def test_bad_limit_parameter(corpus, tmp_path, kw):
    arch = _write(tmp_path / "a.tar", _tar_bytes(_routerdc()))
    assert corpus(AREA, "error", lambda: load(arch, archive_limits=ArchiveLimits(**kw)),
           match=r"archive limit \w+ is .*expected a positive number")


# ---------------------------------------------------------------- truncated and corrupt
def _cut_at_member_boundary(raw: bytes) -> bytes:
    """Drop the last member and the end-of-archive marker: tarfile reads this as a normal end."""
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        last = tar.getmembers()[-1]
    return raw[:last.offset]


def _flip_header_checksum(raw: bytes, n: int = 1) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        off = tar.getmembers()[n].offset
    out = bytearray(raw)
    out[off + 148:off + 156] = b"0000000\x00"
    return bytes(out)


TWO_FILES = {"mmlu_train.json": QUESTIONS["mmlu_train.json"],
             "gsm8k_train.json": QUESTIONS["gsm8k_train.json"],
             "zz_train.json": [{"question": "last one", "scores": {"m1": 1, "m2": 0}}]}


@pytest.mark.parametrize("damage, pattern", [
    ("cut_at_boundary", r"a\.tar: cannot extract.*ends at byte \d+ without its end-of-archive marker"),
    ("cut_in_header", r"a\.tar: cannot extract.*(end-of-archive marker|truncated)"),
    ("cut_in_data", r"a\.tar: cannot extract.*(unexpected end of data|truncated)"),
    ("bad_header_checksum", r"a\.tar: cannot extract.*damaged at byte \d+"),
    ("garbage_header", r"a\.tar: cannot extract.*damaged at byte \d+"),
])
def test_damaged_plain_tar(corpus, tmp_path, damage, pattern):
    raw = _tar_bytes(_routerdc(TWO_FILES))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        last = tar.getmembers()[-1]
    if damage == "cut_at_boundary":
        raw = _cut_at_member_boundary(raw)
    elif damage == "cut_in_header":
        raw = raw[:last.offset + 200]
    elif damage == "cut_in_data":
        raw = raw[:last.offset_data + 10]
    elif damage == "bad_header_checksum":
        raw = _flip_header_checksum(raw, 1)
    else:
        raw = raw[:last.offset] + b"\x7fnot a header" * 40 + raw[last.offset + 520:]
    arch = tmp_path / "a.tar"
    arch.write_bytes(raw)
    assert corpus(AREA, "error", lambda: load(arch), match=pattern)


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.xz"])
@pytest.mark.parametrize("where", [0.3, 0.6, 0.9, 0.99])
def test_truncated_compressed(corpus, tmp_path, suffix, where):
    arch = _write(tmp_path / f"a{suffix}", _tar_bytes(_routerdc(TWO_FILES)))
    raw = arch.read_bytes()
    arch.write_bytes(raw[:int(len(raw) * where)])
    assert corpus(AREA, "error", lambda: load(arch), match=rf"a\{suffix}: cannot extract the archive")


@pytest.mark.parametrize("suffix", [".tar.gz", ".tar.xz"])
@pytest.mark.parametrize("where", [0.4, 0.7])
def test_bit_flip_compressed(corpus, tmp_path, suffix, where):
    arch = _write(tmp_path / f"a{suffix}", _tar_bytes(_routerdc(TWO_FILES)))
    raw = bytearray(arch.read_bytes())
    raw[int(len(raw) * where)] ^= 0x55
    arch.write_bytes(bytes(raw))
    assert corpus(AREA, "error", lambda: load(arch), match=rf"a\{suffix}: (cannot extract|.*invalid JSON)")


@pytest.mark.parametrize("name, content", [
    ("empty.tar", b""), ("empty.tar.gz", b""), ("empty.tar.xz", b""),
    ("junk.tar", b"this is not a tar file at all" * 30), ("junk.tgz", b"\x1f\x8bjunk"),
    ("zeros.tar", bytes(10240)),
])
def test_not_an_archive(corpus, tmp_path, name, content):
    arch = tmp_path / name
    arch.write_bytes(content)
    assert corpus(AREA, "error", lambda: load(arch), match=rf"{name.replace('.', '[.]')}: ")


# ---------------------------------------------------------------- members that try to escape
@pytest.mark.parametrize("member", [
    _member("../escaped.json", b"{}"),
    _member("split2_model7/../../escaped.json", b"{}"),
    _member("split2_model7/link", type=tarfile.SYMTYPE, linkname="/etc/passwd"),
    _member("split2_model7/link", type=tarfile.SYMTYPE, linkname="../../../escaped"),
    _member("split2_model7/hard", type=tarfile.LNKTYPE, linkname="/etc/passwd"),
    _member("split2_model7/dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3),
    _member("split2_model7/fifo", type=tarfile.FIFOTYPE),
], ids=["parent", "nested-parent", "abs-symlink", "rel-symlink-out", "abs-hardlink", "device", "fifo"])
def test_member_escaping_the_folder(corpus, tmp_path, member):
    arch = tmp_path / "box" / "a.tar"
    arch.parent.mkdir()
    arch.write_bytes(_tar_bytes(_routerdc() + [member]))
    assert corpus(AREA, "error", lambda: load(arch), match=r"a\.tar: cannot extract the archive")
    assert not (tmp_path / "escaped.json").exists() and not (tmp_path / "escaped").exists()


def test_absolute_member_stays_inside(corpus, tmp_path):
    arch = tmp_path / "a.tar"
    target = tmp_path / "abs_target.json"
    arch.write_bytes(_tar_bytes(_routerdc() + [_member(str(target), b"{}")]))
    assert corpus(AREA, "right", lambda: load(arch), check=_loads(7))  # the "data" filter strips the "/"
    assert not target.exists()
