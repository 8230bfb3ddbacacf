"""Print the README's settings table from streams.settings.Settings (names, defaults, docs).

.venv/bin/python scripts/settings_table.py
"""

from __future__ import annotations

import ast
import inspect

from streams import settings


def rows() -> list[tuple[str, object, str]]:
    """(env name, default, docstring) of every setting, in declaration order."""
    cls = ast.parse(inspect.getsource(settings.Settings)).body[0]
    assert isinstance(cls, ast.ClassDef)
    defaults = settings.Settings()
    out = []
    for i, node in enumerate(cls.body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
            doc = ""
            nxt = cls.body[i + 1] if i + 1 < len(cls.body) else None
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                doc = " ".join(str(nxt.value.value).split())
            default = getattr(defaults, name)
            if name == "data_dir":
                default = "<repo>/.regstate"
            out.append((f"REGSTATE_{name.upper()}", default, doc))
    return out


if __name__ == "__main__":
    print("| variable | default | meaning |")
    print("|---|---|---|")
    for env, default, doc in rows():
        print(f"| `{env}` | `{default}` | {doc} |")
