"""Print the README's settings tables from the code (names, defaults, docs).

.venv/bin/python scripts/settings_table.py            # streams.settings.Settings
.venv/bin/python scripts/settings_table.py alerting   # the alerting consumer's own settings
"""

from __future__ import annotations

import ast
import inspect
import sys

from streams import settings
from streams.alerting import runner as alerting


def rows(cls: type[settings.Settings] = settings.Settings) -> list[tuple[str, object, str]]:
    """(env name, default, docstring) of every setting ``cls`` declares, in declaration order."""
    node = ast.parse(inspect.getsource(cls)).body[0]
    assert isinstance(node, ast.ClassDef)
    defaults = cls()
    out = []
    for i, item in enumerate(node.body):
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            name = item.target.id
            doc = ""
            nxt = node.body[i + 1] if i + 1 < len(node.body) else None
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
                doc = " ".join(str(nxt.value.value).split())
            default = getattr(defaults, name)
            if name == "data_dir":
                default = "$XDG_DATA_HOME/regstate"
            out.append((f"REGSTATE_{name.upper()}", default, doc))
    return out


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "settings"
    cls = alerting.AlertingSettings if which == "alerting" else settings.Settings
    print("| variable | default | meaning |")
    print("|---|---|---|")
    for env, default, doc in rows(cls):
        print(f"| `{env}` | `{default}` | {doc} |")
