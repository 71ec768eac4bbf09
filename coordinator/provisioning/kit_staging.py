"""Writing kits without ever leaving half of one behind or a key readable by others.

Files are written into a staging folder beside the destination (same file system)
and renamed into place at the end, so a failure leaves nothing partial. Private
keys are created with mode 0600 from the first byte (never chmod-ed afterwards,
which would leave a window), folders with 0700, and nothing is ever overwritten
except the coordinator's own plain-text summaries and, on renewal, the SuperLink's
certificate and key (`replace_file`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from protocols.kit_layout import PRIVATE_DIR, PRIVATE_FILE, PUBLIC_FILE, KitError


@dataclass(frozen=True)
class KitFile:
    """The bytes of one file and whether it is secret (a private key)."""

    data: bytes
    secret: bool = False


def write_tree(root: Path, files: Mapping[str, KitFile]) -> None:
    """Write `files` (relative path -> file) under `root`, creating folders as 0700."""
    for relative, file in files.items():
        path = root / relative
        path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        write_new_file(path, file)


def write_new_file(path: Path, file: KitFile) -> None:
    """Create `path` (refusing to replace anything) with its final mode from the start."""
    mode = PRIVATE_FILE if file.secret else PUBLIC_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(file.data)


def replace_file(path: Path, file: KitFile) -> None:
    """Replace `path` whole: written beside it with its final mode, then renamed over it,
    so a reader sees the old file or the new one, never half of either."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.new")
    write_new_file(temporary, file)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A private scratch folder inside `out`, removed whatever happens.

    `out` is created (0700) if missing, and removed again if the block fails and
    nothing else was put in it, so a refused run writes nothing at all.
    """
    created = not out.exists()
    out.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".provision-", dir=out))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)


def move_into_place(moves: list[tuple[Path, Path]]) -> None:
    """Rename each staged path to its destination, none of which may exist yet.

    If one rename fails, the ones already done are undone so that the
    destination looks as it did before.
    """
    done: list[tuple[Path, Path]] = []
    try:
        for source, target in moves:
            if target.exists():
                raise KitError(f"{target} appeared while provisioning (is another provision "
                               "running?); nothing was changed.")
            os.rename(source, target)
            done.append((source, target))
    except BaseException:
        for source, target in reversed(done):
            os.rename(target, source)
        raise
