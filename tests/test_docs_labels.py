"""Every equation label cited from code exists in docs/ (no dangling addresses)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITE = re.compile(r"\[eq:([A-Za-z0-9_-]+)\]")
DEFINE = re.compile(r"^:label:\s*eq:([A-Za-z0-9_-]+)\s*$", re.M)


def _defined():
    labels = {}
    for page in sorted((ROOT / "docs").rglob("*.md")):
        for name in DEFINE.findall(page.read_text(encoding="utf-8")):
            labels.setdefault(name, []).append(page.name)
    return labels


def _cited():
    cited = {}
    for src in sorted((ROOT / "probgen").rglob("*.py")):
        for name in CITE.findall(src.read_text(encoding="utf-8")):
            cited.setdefault(name, set()).add(str(src.relative_to(ROOT)))
    return cited


def test_every_cited_label_is_defined_in_docs():
    defined = _defined()
    dangling = {k: sorted(v) for k, v in _cited().items() if k not in defined}
    assert not dangling, f"labels cited in code but missing from docs/: {dangling}"


def test_labels_are_unique():
    dup = {k: v for k, v in _defined().items() if len(v) > 1}
    assert not dup, f"labels defined more than once: {dup}"


def test_code_cites_labels():
    # guards the regexes themselves: the project does cite equations
    assert len(_cited()) >= 5 and len(_defined()) >= 5
