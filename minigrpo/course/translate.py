"""The Chinese edition (notebooks/zh/), built from one source: the English notebooks' code and outputs, the
translators' Chinese prose.

Each English notebook `notebooks/[solutions/]X.ipynb` has a translation file `notebooks/zh/text/[solutions/]X.md`:
one entry per markdown cell, opened by a header line naming the cell's id and a fingerprint of the English text it
translates,

    <!-- cell 1f0c2a9e · en 3b5e0d1c7a42 -->
    中文的单元格内容……

The build writes `notebooks/zh/[solutions/]X.ipynb`: the English notebook with each markdown cell's source replaced
by its translation; code cells, outputs and metadata are the English ones, byte for byte. The glossary
(`text/00_glossary.md`) becomes `notebooks/zh/00_glossary.ipynb`, the edition's first page.

When an English markdown cell changes, its fingerprint no longer matches and the entry is reported stale (the build
still uses the old translation until it is redone). Commands:

    python -m minigrpo.course.translate            # build notebooks/zh/ and report what is missing or stale
    python -m minigrpo.course.translate --check    # exit 1 when anything is missing, stale, or not built
    python -m minigrpo.course.translate --stub     # add entries (the English text, to translate) for new cells
    python -m minigrpo.course.translate --todo X   # print notebook X's missing and stale cells, English beside
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_write
from .bars import dumps, read

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
ZH = NOTEBOOKS / "zh"
TEXT = ZH / "text"
GLOSSARY = "00_glossary"
HEADER = re.compile(r"^<!-- cell (?P<id>[A-Za-z0-9_-]+) · en (?P<en>[0-9a-f]{12}) -->$")
ENGLISH = re.compile(r"[A-Za-z]{4,} [A-Za-z]{2,} [A-Za-z]{2,}")   # three English words in a row: prose


def fingerprint(text: str) -> str:
    """The first 12 hex digits of the English cell's SHA-1: what a translation says it translates."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


@dataclass
class Entry:
    """One cell's translation: the fingerprint of the English it was made from, the Chinese, its line in the file."""
    en: str
    text: str
    line: int


def read_translations(path: Path) -> dict[str, Entry]:
    """The entries of one translation file by cell id; a malformed or repeated header is a one-line error."""
    entries: dict[str, Entry] = {}
    current, body, start = None, [], 0

    def close():
        if current is not None:
            entries[current[0]] = Entry(current[1], "\n".join(body).strip("\n"), start)

    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("<!-- cell "):
            m = HEADER.match(line)
            if m is None:
                raise ValueError(f"{path}:{n}: malformed header {line!r}; expected '<!-- cell ID · en HASH -->'")
            close()
            if m["id"] in entries:
                raise ValueError(f"{path}:{n}: cell {m['id']} translated twice (first at line {entries[m['id']].line})")
            current, body, start = (m["id"], m["en"]), [], n
        elif current is None:
            if line.strip():
                raise ValueError(f"{path}:{n}: text before the first '<!-- cell ... -->' header")
        else:
            body.append(line)
    close()
    return entries


def write_translations(path: Path, entries: list[tuple[str, Entry]]) -> None:
    """Write entries (in notebook order) in the file format read_translations reads."""
    parts = [f"<!-- cell {cid} · en {e.en} -->\n{e.text}\n" for cid, e in entries]
    atomic_write(path, lambda f: f.write("\n".join(parts)))


def shown(path: Path) -> str:
    """A path as messages print it: relative to the repository where it lies inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def as_lines(text: str) -> list[str]:
    """Notebook JSON's source: a list of lines, each but the last ending in a newline."""
    return text.splitlines(keepends=True)


def pairs() -> list[tuple[Path, Path, Path]]:
    """(English notebook, translation file, Chinese notebook) for every lesson, solutions notebook and appendix."""
    out = []
    for en in sorted(NOTEBOOKS.glob("*.ipynb")) + sorted((NOTEBOOKS / "solutions").glob("*.ipynb")):
        rel = en.relative_to(NOTEBOOKS)
        out.append((en, (TEXT / rel).with_suffix(".md"), ZH / rel))
    return out


def problems(en_nb: dict, entries: dict[str, Entry], text_path: Path) -> list[str]:
    """One line per markdown cell without a translation, with a stale or untranslated one, and per orphan entry."""
    out, ids = [], set()
    rel = shown(text_path)
    for i, cell in enumerate(en_nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        cid, en = cell["id"], source(cell)
        ids.add(cid)
        e = entries.get(cid)
        if e is None:
            out.append(f"{rel}: cell {i} ({cid}) has no translation")
        elif e.en != fingerprint(en):
            out.append(f"{rel}:{e.line}: cell {i} ({cid}) is stale: the English changed (now en {fingerprint(en)})")
        elif e.text == en.strip("\n") and ENGLISH.search(en):
            out.append(f"{rel}:{e.line}: cell {i} ({cid}) is still the English text")
    for cid, e in entries.items():
        if cid not in ids:
            out.append(f"{rel}:{e.line}: cell {cid} is no longer in the English notebook")
    return out


PUNCT = "\u2014\u2018-\u201d\u2026\u3000-\u303f\uff00-\uffef"   # full-width, Chinese punctuation (，。“”—…)
HAN = "\u4e00-\u9fff" + PUNCT                                  # and the ideographs
BLOCK = re.compile(r"\s*([-*+]\s|\d+[.)]\s|#|\||>|\$\$|```|<)")   # a line that starts a markdown block


def unwrap(text: str) -> str:
    """Join the translators' wrapped lines inside a paragraph where Chinese meets the break.

    Markdown renders a line break inside a paragraph as a space, which between two Chinese characters is a
    stray gap. A break with Chinese on both sides, or punctuation on either, is removed; between a Chinese character
    and Latin text, math or code it becomes the one space the typography wants. Lines that start a block (a list
    item, heading, table row, quote, HTML, display math, code) stay on their own; code and $$ blocks are kept.
    """
    out, fence = [], None   # the fence of the code or $$ block we are inside, None outside
    for line in text.split("\n"):
        s = line.strip()
        if fence:
            out.append(line)
            if s.startswith("```") if fence == "```" else s.endswith("$$"):
                fence = None
            continue
        if s.startswith("```") or (s.startswith("$$") and not (len(s) > 4 and s.endswith("$$"))):
            fence = "```" if s.startswith("```") else "$$"
            out.append(line)
            continue
        prev = out[-1] if out else ""
        p = prev.strip()
        joinable = (p and s and not BLOCK.match(line) and not prev.endswith("  ")
                    and not p.startswith(("#", "|", "<", "$$", "```")) and not p.endswith("$$"))
        left, right = re.search(f"[{HAN}]$", p), re.match(f"[{HAN}]", s)
        if joinable and (left or right):
            glue = "" if (left and right) or re.search(f"[{PUNCT}]$", p) or re.match(f"[{PUNCT}]", s) else " "
            out[-1] = prev.rstrip() + glue + s
        else:
            out.append(line)
    return "\n".join(out)


def build(en_nb: dict, entries: dict[str, Entry]) -> dict:
    """The Chinese notebook: the English one with each translated markdown cell's source in Chinese (unwrapped)."""
    nb = copy.deepcopy(en_nb)
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown" and cell["id"] in entries:
            cell["source"] = as_lines(unwrap(entries[cell["id"]].text))
    return nb


def glossary_notebook(text: str, like: dict) -> dict:
    """The glossary page: one markdown cell per '## ' section, with the lessons' notebook metadata."""
    sections = re.split(r"\n(?=## )", text.strip("\n"))
    cells = [{"cell_type": "markdown", "id": f"g{i:07d}", "metadata": {}, "source": as_lines(s)}
             for i, s in enumerate(sections)]
    return {"cells": cells, "metadata": like["metadata"], "nbformat": like["nbformat"],
            "nbformat_minor": like["nbformat_minor"]}


def expected() -> tuple[dict[Path, str], list[str]]:
    """Every Chinese notebook's text as the build writes it, and the problems found on the way."""
    files, found = {}, []
    first = None
    for en_path, text_path, zh_path in pairs():
        en_nb = read(en_path)
        first = first or en_nb
        entries = read_translations(text_path) if text_path.exists() else {}
        if not text_path.exists():
            found.append(f"{shown(text_path)}: missing (run with --stub to start it)")
        else:
            found += problems(en_nb, entries, text_path)
        files[zh_path] = dumps(build(en_nb, entries))
    glossary = TEXT / f"{GLOSSARY}.md"
    if glossary.exists():
        files[ZH / f"{GLOSSARY}.ipynb"] = dumps(glossary_notebook(glossary.read_text(encoding="utf-8"), first))
    else:
        found.append(f"{shown(glossary)}: missing")
    return files, found


def stub() -> None:
    """Add an entry holding the English text for every markdown cell without one, in notebook order."""
    for en_path, text_path, _ in pairs():
        entries = read_translations(text_path) if text_path.exists() else {}
        ordered, added = [], 0
        for cell in read(en_path)["cells"]:
            if cell["cell_type"] != "markdown":
                continue
            e = entries.get(cell["id"])
            if e is None:
                e, added = Entry(fingerprint(source(cell)), source(cell).strip("\n"), 0), added + 1
            ordered.append((cell["id"], e))
        kept = {cid for cid, _ in ordered}
        ordered += [(cid, e) for cid, e in entries.items() if cid not in kept]   # orphans stay, reported
        if added:
            write_translations(text_path, ordered)
            print(f"{shown(text_path)}: {added} cells to translate")


def todo(name: str) -> None:
    """Print the missing and stale cells of notebook `name` (e.g. 03_clipping), each with its English text."""
    for en_path, text_path, _ in pairs():
        if en_path.stem != name:
            continue
        entries = read_translations(text_path) if text_path.exists() else {}
        for i, cell in enumerate(read(en_path)["cells"]):
            en = source(cell)
            if cell["cell_type"] == "markdown" and (cell["id"] not in entries
                                                    or entries[cell["id"]].en != fingerprint(en)):
                print(f"<!-- cell {cell['id']} · en {fingerprint(en)} -->   (cell {i}; English below)\n{en}\n")
        return
    raise SystemExit(f"no notebook named {name!r} in {shown(NOTEBOOKS)}/")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m minigrpo.course.translate", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if anything is missing, stale or unbuilt")
    p.add_argument("--stub", action="store_true", help="add the English text as an entry for each untranslated cell")
    p.add_argument("--todo", metavar="NOTEBOOK", help="print a notebook's missing and stale cells with their English")
    args = p.parse_args(argv)
    if args.todo:
        todo(args.todo)
        return 0
    if args.stub:
        stub()
    files, found = expected()
    unbuilt = {path: text for path, text in files.items()
               if not path.exists() or path.read_text(encoding="utf-8") != text}
    if not args.check:
        for path, text in unbuilt.items():
            atomic_write(path, lambda f: f.write(text))
        print(f"built {len(unbuilt)} of {len(files)} Chinese notebooks in {shown(ZH)}/ (the rest unchanged)")
        unbuilt = {}
    for line in found + [f"{shown(u)}: not what the build writes (run python -m minigrpo.course.translate)"
                         for u in unbuilt]:
        print(line)
    return 1 if args.check and (found or unbuilt) else 0


if __name__ == "__main__":
    sys.exit(main())
