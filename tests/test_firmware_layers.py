"""The firmware's layers as its folders show them, checked from the sources:
which layer may import which, and no import cycles (lazy imports inside
functions count: a cycle that only closes at run time is still a cycle).

    kiosk/hw/       hardware layer and drivers: hal, board, one file per device
    kiosk/core/     controller, operations, stock, jobs, journal, climate
    kiosk/link/     the link to the host
    kiosk/service/  the field team's REPL tools
    kiosk/*.py      shared leaves (contract, files, schema, config, clock) and app (wires all)
"""

from __future__ import annotations

import ast
from pathlib import Path

from kiosk_host import paths

KIOSK = paths.FIRMWARE_DIR / "kiosk"

# layer -> layers it may import (besides itself and the shared leaves).
ALLOWED = {
    "hw": set(),
    "core": {"hw"},
    "link": {"hw"},
    "service": {"hw", "core", "link", "app"},
    "leaf": {"hw"},
    "app": {"hw", "core", "link", "service"},
}
LEAVES = {"kiosk.contract", "kiosk.files", "kiosk.schema", "kiosk.config", "kiosk.clock", "kiosk.version",
          "kiosk.text"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(paths.FIRMWARE_DIR).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every kiosk module path imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("kiosk")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kiosk"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if (paths.FIRMWARE_DIR / (sub.replace(".", "/") + ".py")).exists()
                          or (paths.FIRMWARE_DIR / sub.replace(".", "/")).is_dir() else node.module)
    return found


def _graph() -> dict[str, set[str]]:
    mods = {_module_name(p): p for p in KIOSK.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in mods and i != m} for m, p in mods.items()}


def _layer(mod: str) -> str:
    parts = mod.split(".")
    if len(parts) >= 2 and parts[1] in ("hw", "core", "link", "service"):
        return parts[1]
    return "app" if mod == "kiosk.app" else "leaf"


def test_each_layer_imports_only_what_it_may():
    bad = []
    for mod, deps in _graph().items():
        mine = _layer(mod)
        for d in deps:
            theirs = _layer(d)
            if d in LEAVES or theirs == mine or d in ("kiosk", f"kiosk.{mine}"):
                continue
            if theirs not in ALLOWED[mine]:
                bad.append(f"{mod} ({mine}) imports {d} ({theirs})")
    assert not bad, "layer rules broken:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = _graph()
    cycles = []

    def visit(node: str, stack: list[str], on: set[str], done: set[str]) -> None:
        on.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in on:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, stack, on, done)
        stack.pop()
        on.discard(node)
        done.add(node)

    done: set[str] = set()
    for m in sorted(graph):
        if m not in done:
            visit(m, [], set(), done)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_only_the_hardware_layer_touches_the_machine():
    """`machine`, `rp2`, `esp32` and `network` are imported only in kiosk/hw/."""
    bad = []
    for p in KIOSK.rglob("*.py"):
        if p.parent.name == "hw":
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{_module_name(p)} imports {n}" for n in names if n.split(".")[0] in ("machine", "rp2", "esp32", "network")]
    assert not bad, "\n".join(bad)


def test_the_bridge_reads_the_firmwares_operation_table():
    from kiosk_host import contract
    from kiosk_host.bridge.service import OPS

    assert OPS is contract.OPS
    assert {"pickup", "restock", "home", "jog", "selftest", "unlock", "service_start", "service_end",
            "clear_excursion", "cancel", "verify_bin"} <= set(OPS)
    assert OPS["pickup"] == {"order": str, "bin": int}
