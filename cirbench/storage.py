"""Atomic writes: write a temporary file (or folder) beside the target, then rename.

A reader never sees a half-written file or folder, and a crash mid-write leaves the old one
intact. Files: :func:`atomic_write_bytes` and its text / JSON / torch forms. Folders (the
caches of :mod:`cirbench.data.cache`): :func:`atomic_write_folder`.
Files get the permissions an ordinary ``open()`` would give them (``0o666`` less the user's
umask), not the ``0o600`` of a temporary file, so a results folder shared by a group stays
readable by it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def current_umask() -> int:
    """The process's umask (read without changing it, where ``/proc`` allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it, and put it back at once
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode ``open()`` (``0o666``) or ``mkdir()`` (``0o777``) would give under the umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (same-folder temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def atomic_torch_save(path: Path, obj: Any) -> int:
    """``torch.save(obj)`` to ``path`` atomically; returns the number of bytes written."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return len(data)


def atomic_write_folder(
    folder: Path | str,
    fill: Callable[[Path], None],
    keep_existing: Callable[[Path], bool] = lambda folder: False,
) -> bool:
    """Create ``folder`` atomically: ``fill(tmp)`` writes the content into a temporary sibling
    folder (``.<name>.tmp-*``), which is then renamed to ``folder``.

    If ``folder`` already exists (another process finished first, or an old folder being
    replaced), it is kept when ``keep_existing(folder)`` is true, else replaced by ours.
    The temporary folder is removed whatever happens (an exception in ``fill`` propagates and
    leaves no trace). Returns True when our content is in place, False when the existing
    folder was kept.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        os.chmod(tmp, default_mode(directory=True))  # mkdtemp's 0o700 -> what mkdir would give
        fill(tmp)
        try:
            os.replace(tmp, folder)
        except OSError:
            # The target exists and is not empty: keep it if it is valid, else replace it.
            if keep_existing(folder):
                return False
            remove_path(folder)
            os.replace(tmp, folder)
        return True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_path(path: Path | str) -> None:
    """Remove a file or a folder tree; nothing if it does not exist."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
