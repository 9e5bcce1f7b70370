"""Files that are never half-written, and JSON lines read with errors that name the file and the line.

Every file and folder minigrpo writes goes through `atomic_path`: written under a temporary name in
the same folder, then renamed into place, so a crash, a full disk or Ctrl-C leaves the old version.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def _umask() -> int:
    """The process umask (reading it means setting it, so it is set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, folder: bool = False):
    """Yield a temporary sibling of `path` to write; it then replaces `path`, or is removed if the block fails.

    A folder replaces an existing one in two renames: the old one is moved aside
    first and deleted only once the new one is in place.
    """
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.tmp-"
    if folder:
        tmp = tempfile.mkdtemp(prefix=prefix, dir=path.parent)
    else:
        fd, tmp = tempfile.mkstemp(prefix=prefix, dir=path.parent)
        os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, (0o777 if folder else 0o666) & ~_umask())  # mkdtemp/mkstemp make them private
        old = None
        if folder and path.exists():
            old = tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent)
            os.rmdir(old)
            os.replace(path, old)    # keep the previous one until the new one is in place
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if folder else Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call `write(f)` on a UTF-8 text file that then atomically becomes `path`."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        write(f)


def write_jsonl(path: str | os.PathLike, records) -> None:
    """Write `records` (dicts) to `path` as UTF-8 JSON lines, atomically; non-ASCII text is kept as is."""
    atomic_write(path, lambda f: f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def read_jsonl(path: str | os.PathLike, required: tuple[str, ...] = (), check=None,
               missing_hint: str = "") -> list[dict]:
    """The JSON objects of a JSON-lines file, in order; blank lines are skipped.

    Each line must be an object holding the `required` keys; `check(record)` may
    raise a ValueError of its own. Every problem is one line naming the file and
    the 1-based line: bad JSON, not an object, a missing key, a failed check,
    bytes that are not UTF-8; a file with no record at all is refused too.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} not found{'; ' + missing_hint if missing_hint else ''}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text (byte "
                         f"0x{raw[e.start]:02x}); save the file as UTF-8") from None
    records = [_record(line, required, check, f"{path}, line {lineno}")
               for lineno, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if not records:
        raise ValueError(f"{path} holds no records (the file is empty)")
    return records


def _record(line: str, required, check, where: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: bad JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(repr(k) for k in missing)}")
    if check is not None:
        try:
            check(obj)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    return obj
