"""The Chinese edition (notebooks/zh/): complete, current, and exactly what the build writes.

Every markdown cell of every English lesson, solutions notebook and the appendix has a Chinese translation made from
its current English text (the fingerprint matches); the Chinese notebooks on disk are byte for byte what
`python -m minigrpo.course.translate` writes, so their code cells and outputs are the English ones. The file
format's errors name the file and line; a changed English cell is reported stale.
"""
import hashlib
import json
import re

import pytest

from minigrpo.course import translate as tr

PAIRS = tr.pairs()


def test_every_notebook_has_a_translation_file_and_a_chinese_notebook():
    english = sorted(p.relative_to(tr.NOTEBOOKS) for p in tr.NOTEBOOKS.rglob("*.ipynb")
                     if tr.ZH not in p.parents and ".ipynb_checkpoints" not in p.parts)
    assert len(english) == 23 and english == [en.relative_to(tr.NOTEBOOKS) for en, _, _ in PAIRS]
    for en, text, zh in PAIRS:
        assert text.is_file(), f"{text} is missing"
        assert zh.is_file(), f"{zh} is missing"
    assert (tr.ZH / "00_glossary.ipynb").is_file()


def test_nothing_is_missing_stale_or_unbuilt():
    files, found = tr.expected()
    unbuilt = [str(p) for p, text in files.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    assert found == [] and unbuilt == [], "\n".join(found + unbuilt)


@pytest.mark.parametrize("en, text, zh", PAIRS, ids=[en.stem for en, _, _ in PAIRS])
def test_chinese_notebook_is_the_english_code_with_chinese_prose(en, text, zh):
    english, chinese = json.loads(en.read_text()), json.loads(zh.read_text())
    assert chinese["metadata"] == english["metadata"] and len(chinese["cells"]) == len(english["cells"])
    entries = tr.read_translations(text)
    for i, (e, c) in enumerate(zip(english["cells"], chinese["cells"])):
        assert (c["id"], c["cell_type"]) == (e["id"], e["cell_type"]), f"{zh.name} cell {i}"
        if e["cell_type"] == "code":
            assert c == e, f"{zh.name} cell {i}: a code cell or its outputs differ from the English"
            continue
        src = "".join(c["source"])
        # its own fingerprint, computed here with hashlib rather than through the module
        assert entries[e["id"]].en == hashlib.sha1("".join(e["source"]).encode()).hexdigest()[:12]
        assert re.search(r"[\u4e00-\u9fff]", src), f"{zh.name} cell {i} has no Chinese"
        # formulas survive translation: every $...$ of the English is in the Chinese (spacing aside: where the
        # English quotes the note, the Chinese quotes the note's own "$\mu_r=5.03$")
        flat = "".join(src.split())
        for formula in set(re.findall(r"\$\$.+?\$\$|\$[^$]+\$", "".join(e["source"]), re.S)):
            assert "".join(formula.split()) in flat, f"{zh.name} cell {i} lost the formula {formula!r}"


def test_chinese_prose_is_mostly_chinese():
    """Over each notebook's markdown, outside code and formulas, most letters are Chinese characters."""
    for _, text, zh in PAIRS:
        prose = "".join(e.text for e in tr.read_translations(text).values())
        prose = re.sub(r"```.*?```|`[^`]*`|\$\$.*?\$\$|\$[^$]*\$|\([^()]*\d{4}[^()]*\)|https?://\S+", "", prose, flags=re.S)
        han, latin = len(re.findall(r"[\u4e00-\u9fff]", prose)), len(re.findall(r"[A-Za-z]", prose))
        assert han > latin, f"{text.name}: {han} Chinese characters against {latin} Latin letters"


def test_glossary_opens_the_edition_with_the_notes_terms():
    glossary = (tr.TEXT / "00_glossary.md").read_text(encoding="utf-8")
    for term in ("群体相对策略优化", "相对优势", "解耦裁剪", "参考策略", "价值网络", "熵坍塌"):   # the note's own
        assert term in glossary, term
    nb = json.loads((tr.ZH / "00_glossary.ipynb").read_text())
    assert "".join(nb["cells"][0]["source"]).startswith("# ")


# ------------------------------------------------------------------ the format, on files written here


def english_notebook(*texts: str) -> dict:
    cells = [{"cell_type": "markdown", "id": f"c{i}", "metadata": {}, "source": tr.as_lines(t)}
             for i, t in enumerate(texts)]
    cells.insert(1, {"cell_type": "code", "id": "k", "metadata": {}, "source": ["print(1)"], "outputs": [],
                     "execution_count": 1})
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_round_trip_and_build(tmp_path):
    en = english_notebook("# Lesson 1 — Groups\n\nThe group mean is $\\mu$.", "Second cell.")
    path = tmp_path / "x.md"
    tr.write_translations(path, [("c0", tr.Entry(tr.fingerprint("# Lesson 1 — Groups\n\nThe group mean is $\\mu$."),
                                                 "# 第 1 课 — 群体\n\n组内均值是 $\\mu$。", 0)),
                                 ("c1", tr.Entry(tr.fingerprint("Second cell."), "第二个单元格。", 0))])
    entries = tr.read_translations(path)
    assert [e.line for e in entries.values()] == [1, 6]
    assert tr.problems(en, entries, path) == []
    zh = tr.build(en, entries)
    assert zh["cells"][0]["source"] == ["# 第 1 课 — 群体\n", "\n", "组内均值是 $\\mu$。"]
    assert zh["cells"][1] == en["cells"][1] and en["cells"][0]["source"][0] == "# Lesson 1 — Groups\n"


def test_stale_missing_untranslated_and_orphan_are_reported(tmp_path):
    path = tmp_path / "x.md"
    old = "The group mean is the baseline of every completion."
    path.write_text(f"<!-- cell c0 · en {hashlib.sha1(old.encode()).hexdigest()[:12]} -->\n旧的译文。\n\n"
                    f"<!-- cell gone · en {'0' * 12} -->\n已删除。\n\n"
                    f"<!-- cell c2 · en {hashlib.sha1(b'Third cell of the lesson.').hexdigest()[:12]} -->\n"
                    "Third cell of the lesson.\n", encoding="utf-8")
    en = english_notebook("The group mean is the baseline of each completion.", "New.", "Third cell of the lesson.")
    found = tr.problems(en, tr.read_translations(path), path)
    assert len(found) == 4
    assert f"{path}:1: cell 0 (c0) is stale" in found[0]
    assert found[1] == f"{path}: cell 2 (c1) has no translation"
    assert found[2] == f"{path}:7: cell 3 (c2) is still the English text"
    assert found[3] == f"{path}:4: cell gone is no longer in the English notebook"


@pytest.mark.parametrize("wrapped, rendered", [
    ("组内均值\n是基线。", "组内均值是基线。"),                     # Chinese on both sides: no gap
    ("并与\n`check` 核对", "并与 `check` 核对"),                    # Chinese and code: one space
    ("$A_n$\n为正", "$A_n$ 为正"),
    ("取正值。\nPyTorch 张量", "取正值。PyTorch 张量"),             # after full-width punctuation: none
    ("- 第一项\n- 第二项\n  续行", "- 第一项\n- 第二项续行"),      # list items stay; a continuation joins
    ("# 标题\n正文", "# 标题\n正文"),
    ("| 甲 |\n|---|", "| 甲 |\n|---|"),
    ("$$\nx = 1\n$$\n其中", "$$\nx = 1\n$$\n其中"),
    ("```\n甲\n乙\n```", "```\n甲\n乙\n```"),
    ("硬换行  \n下一行", "硬换行  \n下一行"),
    ("two English\nlines", "two English\nlines"),                # no Chinese at the break: as written
])
def test_wrapped_lines_join_where_chinese_meets_the_break(wrapped, rendered):
    assert tr.unwrap(wrapped) == rendered


@pytest.mark.parametrize("text, line, message", [
    ("<!-- cell c0 en 0123456789ab -->\n中文\n", 1, "malformed header"),
    ("前言\n<!-- cell c0 · en 0123456789ab -->\n中文\n", 1, "text before the first"),
    ("<!-- cell c0 · en 0123456789ab -->\n甲\n<!-- cell c0 · en 0123456789ab -->\n乙\n", 3, "translated twice"),
])
def test_malformed_files_name_the_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.md"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}:{line}: .*{message}"):
        tr.read_translations(path)


def test_check_fails_on_an_unbuilt_notebook(tmp_path, monkeypatch, capsys):
    """--check exits 1 and names the Chinese notebook that differs from what the build writes; a build fixes it."""
    en, text, _ = PAIRS[0]
    monkeypatch.setattr(tr, "ZH", tmp_path / "zh")
    monkeypatch.setattr(tr, "pairs", lambda: [(en, text, tmp_path / "zh" / en.name)])
    assert tr.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert f"{tmp_path / 'zh' / en.name}: not what the build writes" in out
    assert f"{tmp_path / 'zh' / '00_glossary.ipynb'}: not what the build writes" in out
    assert tr.main([]) == 0 and tr.main(["--check"]) == 0
    built = json.loads((tmp_path / "zh" / en.name).read_text())
    assert [c["source"] for c in built["cells"]] == [
        tr.as_lines(tr.read_translations(text)[c["id"]].text) if c["cell_type"] == "markdown" else c["source"]
        for c in json.loads(en.read_text())["cells"]]
