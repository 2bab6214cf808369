"""Bounded, strict extraction of the ``.tar.*`` archives that :func:`benchroute.load` accepts.

An archive is untrusted input. Python's ``"data"`` filter already refuses path traversal, links
out of the folder and device files; this module adds what it does not cover:

* limits on the member count and on the bytes written (headers included), so a small archive
  cannot fill the disk: at most ``max_ratio`` times the archive's own size (but always at least
  ``ratio_floor``) and never more than ``max_bytes``;
* an archive that ends without its end-of-archive marker (truncated at a member boundary, or a
  damaged header) is an error: ``tarfile`` would otherwise stop there as if the archive had
  ended, and the load would silently miss every later member;
* each archive is extracted into its own folder, so two archives holding the same member path
  never overwrite each other (see :func:`extract_archives`).

Defaults are generous for real HELM suites (the bundled HELM archives expand 53-68 times; a
full suite is a few GB) and can be changed per call or with environment variables.
"""

from __future__ import annotations

import lzma
import os
import tarfile
import zlib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from benchroute.exceptions import DataError

ENV_PREFIX = "BENCHROUTE_ARCHIVE_"


@dataclass(frozen=True)
class ArchiveLimits:
    """How much one archive may write. Each field can be set with the environment variable
    ``BENCHROUTE_ARCHIVE_<FIELD>`` (e.g. ``BENCHROUTE_ARCHIVE_MAX_BYTES=200000000000``)."""

    max_bytes: int = 64 << 30  # 64 GiB
    max_members: int = 1_000_000
    max_ratio: float = 500.0
    ratio_floor: int = 256 << 20  # 256 MiB: small archives of very repetitive JSON still load

    @classmethod
    def resolve(cls, limits: ArchiveLimits | None = None, **overrides: Any) -> ArchiveLimits:
        """``limits`` (or the defaults), then the environment, then non-None ``overrides``."""
        out = limits or cls()
        for f in fields(cls):
            env = os.environ.get(ENV_PREFIX + f.name.upper())
            if env is not None and limits is None:
                try:
                    value: Any = float(env) if f.name == "max_ratio" else int(env)
                except ValueError as exc:
                    raise DataError(f"${ENV_PREFIX}{f.name.upper()} is {env!r}, expected a "
                                    "number") from exc
                out = replace(out, **{f.name: value})
        out = replace(out, **{k: v for k, v in overrides.items() if v is not None})
        for f in fields(out):
            value = getattr(out, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise DataError(f"archive limit {f.name} is {value!r}, expected a positive number")
        return out

    def budget(self, archive_size: int) -> int:
        """Bytes an archive of ``archive_size`` bytes may write."""
        return int(min(self.max_bytes, max(self.ratio_floor, self.max_ratio * archive_size)))


class _StrictTarInfo(tarfile.TarInfo):
    """A header reader that refuses the silent ends of a damaged archive.

    ``tarfile`` stops iterating at a missing, short or invalid header after the first one as if
    the archive had ended; only a zero block (the end-of-archive marker) is a real end.
    """

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> _StrictTarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError,  # type: ignore[attr-defined]
                tarfile.InvalidHeaderError) as exc:  # type: ignore[attr-defined]
            if tarfile_.offset == 0:
                raise
            what = "ends" if isinstance(exc, tarfile.EmptyHeaderError) else "is damaged"  # type: ignore[attr-defined]
            raise tarfile.ReadError(f"the archive {what} at byte {tarfile_.offset} without its "
                                    f"end-of-archive marker ({exc or 'no more data'}); it is "
                                    "truncated or corrupt") from None


def extract_archive(archive: Path, dest: Path, limits: ArchiveLimits | None = None) -> list[str]:
    """Extract one archive into ``dest`` within ``limits``; returns the member names written.

    Raises :class:`DataError` naming the archive (and the member) for a corrupt or truncated
    archive, a member the ``"data"`` filter refuses, or a limit reached; the limit is checked
    from each member's header before the member is written.
    """
    limits = ArchiveLimits.resolve(limits)
    try:
        budget = limits.budget(archive.stat().st_size)
        written = 0
        names: list[str] = []
        with tarfile.open(archive, tarinfo=_StrictTarInfo) as tar:
            for count, member in enumerate(tar, start=1):
                if count > limits.max_members:
                    raise DataError(
                        f"{archive}: more than {limits.max_members} members; refused (raise "
                        f"max_members or ${ENV_PREFIX}MAX_MEMBERS if the archive is trusted)")
                written += tarfile.BLOCKSIZE + max(member.size, 0)
                if written > budget:
                    raise DataError(
                        f"{archive}: member {member.name!r} ({member.size} bytes) takes the "
                        f"extracted size past {budget} bytes (max_ratio {limits.max_ratio:g} x "
                        f"the archive's {archive.stat().st_size} bytes, at least ratio_floor "
                        f"{limits.ratio_floor}, at most max_bytes {limits.max_bytes}); refused "
                        f"(raise the limits or ${ENV_PREFIX}MAX_BYTES / MAX_RATIO if trusted)")
                tar.extract(member, dest, filter="data")
                names.append(member.name)
            # read to the end, so that a compressed stream cut after the end-of-archive marker
            # or with a bad checksum is noticed (the decompressor checks only when it gets there)
            while tar.fileobj is not None and tar.fileobj.read(1 << 20):
                pass
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
        raise DataError(f"{archive}: cannot extract the archive ({exc})") from exc
    if not names:
        raise DataError(f"{archive}: the archive holds no files")
    return names


def extract_archives(archives: list[Path], dest: Path, limits: ArchiveLimits | None = None
                     ) -> list[Path]:
    """Extract each archive into its own folder under ``dest``; returns the folders to load.

    When no file path occurs in two archives (parts of one layout, say), the files are moved
    into one folder and that folder is returned, as if one archive had held them all. When
    some path occurs in two archives, nothing is overwritten: each archive's folder is returned
    and loaded on its own (results they share then fail the store's overlap check).
    """
    limits = ArchiveLimits.resolve(limits)
    roots: list[Path] = []
    owner: dict[str, int] = {}
    clash = False
    for i, archive in enumerate(archives):
        root = dest / f"benchroute-archive-{i:03d}"
        root.mkdir(parents=True)
        extract_archive(archive, root, limits)
        roots.append(root)
        for f in (p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
            rel = f.relative_to(root).as_posix()
            clash = clash or owner.setdefault(rel, i) != i
    if clash or len(roots) == 1:
        return roots
    merged = dest / "benchroute-merged"
    for root in roots:
        for f in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
            os.renames(f, merged / f.relative_to(root))
    return [merged]
