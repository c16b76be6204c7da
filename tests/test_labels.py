"""Chinese labels of codes live on their enums (``catalog.models.Labelled``), one place per label: no
module keeps a dict of codes to Chinese text beside them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("catalog", "warehouse", "guiji", "quality", "desensitize", "sharing", "assets", "pipelines")
CJK = re.compile(r"[\u3400-\u9fff]")


def label_dicts(source: str) -> list[int]:
    """Lines of module-level assignments whose value holds a dict literal of Chinese strings only
    (``{"ods": "贴源层", …}``, also inside an expression: ``{…} | {"x": "中文"}``)."""
    found = set()
    for stmt in ast.parse(source).body:
        if not isinstance(stmt, ast.Assign | ast.AnnAssign) or stmt.value is None:
            continue
        for node in ast.walk(stmt.value):
            if isinstance(node, ast.Dict) and node.values and all(
                    isinstance(v, ast.Constant) and isinstance(v.value, str) and CJK.search(v.value)
                    for v in node.values):
                found.add(stmt.lineno)
    return sorted(found)


def test_chinese_labels_of_codes_live_on_enums_not_in_dicts() -> None:
    assert label_dicts('A = {"ods": "贴源层"}\nB: dict = {}\nC = {k: "x" for k in ()} | {"m": "邮件"}\n') == [1, 3]
    assert label_dicts('HEADERS = {"a": "甲", "n": 1}\nD = {"a": "ok"}\ndef f():\n    return {"a": "甲"}\n') == []
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            lines = label_dicts(path.read_text(encoding="utf-8"))
            if lines:
                found[path.relative_to(REPO).as_posix()] = lines
    assert found == {}, "a code's Chinese label belongs on its enum (catalog.models.Labelled), not in a dict: " \
                        + ", ".join(f"{p}:{ln}" for p, ln in found.items())
