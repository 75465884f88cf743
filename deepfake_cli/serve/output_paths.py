"""Every path `dfd predict` writes to, checked before anything is scored.

`--csv`, `--jsonl` and `--annotate` name files, `--heatmap` a folder, `--report` a file for one
input and a folder for several. Each must be writable now: a file's folder exists (result files)
or can be created (evidence), the path is not the wrong kind (a folder where a file goes, a file
where a folder goes), the folder accepts a new file (a probe is written, fsynced and removed: a
read-only or full file system, or a missing permission, fails here), and each name leaves room
for the ``.tmp<pid>`` an atomic write appends. A bad one is an OptionsError (exit 2) naming the
option and the path, before any clip is decoded, instead of a traceback after the model loaded.

What an input's own evidence file is called (its name below the inputs' common folder) is known
only per input: a name too long there is that input's error, and the batch goes on
(deepfake_cli.serve.pipeline).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from deepfake_cli.errors import OptionsError
from deepfake_cli.files import TMP_MARK

NAME_ROOM = len(TMP_MARK) + 7  # what an atomic write adds to a name: ".tmp" and a pid (up to 7 digits on Linux)
PROBE_BYTES = 4096  # one block: a full file system refuses it


class OutputPathError(OptionsError):
    """An output path (--csv, --jsonl, --report, --heatmap, --annotate) cannot be written."""


def check_output_paths(*, csv: Path | None = None, jsonl: Path | None = None, report: Path | None = None,
                       heatmap: Path | None = None, annotate: Path | None = None, several: bool = False) -> None:
    """Raise OutputPathError for the first of these paths that cannot be written (see the module).
    ``several``: whether the batch has more than one input (``report`` and ``annotate`` are then folders)."""
    checks = [(option, path, "file") for option, path in (("--csv", csv), ("--jsonl", jsonl)) if path is not None]
    checks += [("--annotate", annotate, "folder" if several else "file or folders")] if annotate is not None else []
    checks += [("--report", report, "folder" if several else "file or folders")] if report is not None else []
    checks += [("--heatmap", heatmap, "folder")] if heatmap is not None else []
    for option, path, kind in checks:
        path = Path(path)
        try:
            _check_names(option, path, [part for part in path.parts if part not in ("/", "..", ".")], room=0)
            if kind == "folder":
                check_folder(option, path)
            else:
                check_file(option, path, create_folders=kind != "file")
        except OSError as exc:  # what stat() itself refuses (a name too long for the file system, a loop...)
            raise OutputPathError(f"{option} {path}: {_reason(exc)}") from None


def check_file(option: str, path: Path, create_folders: bool) -> None:
    """``path`` can be written as a file: not a folder, its name not too long, its folder there
    (or, with ``create_folders``, creatable) and accepting a new file."""
    if path.is_dir():
        raise OutputPathError(f"{option} {path} is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise OutputPathError(f"{option} {path} is not a regular file")
    if path.is_file():  # appended to (--skip-done) or replaced: it must open for writing
        try:
            open(path, "ab").close()  # appends nothing: the file is unchanged
        except OSError as exc:
            raise OutputPathError(f"{option} {path} cannot be written ({_reason(exc)})") from None
    folder = path.parent
    if not create_folders and not folder.is_dir():
        raise OutputPathError(f"{option} {path}: its folder {folder} does not exist")
    _check_folder_writable(option, path, folder)
    _check_names(option, path, [path.name], _nearest_existing(folder))


def check_folder(option: str, path: Path) -> None:
    """``path`` is a folder that accepts new files, or can be created as one."""
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{option} {path} is a file, not a folder")
    _check_folder_writable(option, path, path)


def _check_folder_writable(option: str, path: Path, folder: Path) -> None:
    """The nearest existing folder of ``folder`` accepts a new file, and the folders still to
    create have names the file system takes."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise OutputPathError(f"{option} {path}: {existing} is a file, not a folder")
    _check_names(option, path, list(folder.relative_to(existing).parts), existing, room=0)
    try:
        fd, probe = tempfile.mkstemp(prefix=".dfd-probe-", dir=existing)
    except OSError as exc:
        raise OutputPathError(f"{option} {path}: cannot write in {existing} ({_reason(exc)})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(b"\0" * PROBE_BYTES)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise OutputPathError(f"{option} {path}: cannot write in {existing} ({_reason(exc)})") from None
    finally:
        Path(probe).unlink(missing_ok=True)


def _check_names(option: str, path: Path, names: list[str], folder: Path | None = None, room: int = NAME_ROOM) -> None:
    """Each of ``names`` (plus ``room`` for a temporary suffix) fits the file system's name limit
    (that of ``folder``; by default 255 bytes, what Linux file systems take)."""
    limit = _name_max(folder) if folder is not None else 255
    for name in names:
        if len(os.fsencode(name)) + room > limit:
            more = f" (with the {room} bytes an atomic write appends)" if room else ""
            raise OutputPathError(f"{option} {path}: the name {name[:40]!r}... is {len(os.fsencode(name))} bytes, "
                                  f"over the {limit}-byte limit of file names here{more}; give a shorter one")


def _nearest_existing(folder: Path) -> Path:
    """``folder``, or its nearest ancestor that exists (the current folder for a relative path)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder if folder.is_dir() else folder.parent, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "disk full"
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno == errno.ENAMETOOLONG:
        return "a name in it is too long for the file system"
    return exc.strerror or str(exc)
