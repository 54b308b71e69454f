"""Integrity checks of the kernel around every cell: scores a student cannot forge.

nbgrader scores a test cell by its outputs: no error output means full points. Student
code runs in the same interpreter as the tests, so it can try to change what the tests
mean: an IPython input transformer that rewrites the test cells, a patched builtin
(``AssertionError``, ``isinstance``...), a replaced helper or module function
(``math.isclose``), a trace function, an edited ``sys.modules``, an import hook, a
replaced ``showtraceback``/custom exception handler, IPython event callbacks, or an
``execute_result`` that nbgrader would read as partial credit.

:class:`GuardedExecute` (nbgrader's execute step with :class:`RobustExecute`'s rules)
asks the kernel for a fingerprint of all of that before the first cell and after every
cell, through ``user_expressions`` (which input transformers never see). A change made by
a student cell, or by student code while a test ran, is tampering: that test cell and
every later one get an error output ``TamperDetected`` naming the change (0 points, named
in the grades CSV), and later test cells are not even sent to the kernel.

Limits, stated plainly: the checks run inside the student's interpreter. They catch the
attacks above and their obvious variants; a student who reads this module could still
build a kernel that lies to the probe. The sandbox (``sandbox.py``) is what keeps hidden
tests, solutions and the gradebook out of reach whatever the kernel does.
"""

from __future__ import annotations

import ast
import json
import queue
import secrets
import time
from typing import Any

from jupyter_core.utils import ensure_async, run_sync
from nbformat import NotebookNode
from nbgrader import utils
from traitlets import Float, Type

from .execute import RobustExecute
from .sandbox import SandboxKernelManager

TAMPER = "TamperDetected"
WATCHED_MODULES = ("builtins", "sys", "math", "numpy", "os", "json", "re", "copy", "yaml",
                   "pandas", "operator", "functools", "collections", "unittest", "inspect")
SHELL_METHODS = ("run_cell", "run_cell_async", "run_ast_nodes", "run_code", "transform_cell",
                 "showtraceback", "_showtraceback", "showsyntaxerror", "get_exception_only",
                 "user_expressions", "ev", "ex", "run_line_magic", "should_run_async")

# Runs in the kernel with ARGS = {"nonce": str, "modules": [names]}; sets RESULT (JSON).
PROBE = r'''
import sys, builtins, threading, types, json
ip = get_ipython_()
def ids(seq):
    return [f"{getattr(x, '__module__', '?')}:{getattr(x, '__qualname__', type(x).__qualname__)}@{id(x)}" for x in seq]
def origin(x):
    code = getattr(x, "__code__", None)
    return getattr(code, "co_filename", "") if code else ""
st = {"nonce": ARGS["nonce"]}
tm = ip.input_transformer_manager
st["input transformers"] = ids(ip.input_transformers_cleanup) + ids(ip.input_transformers_post) + ids(getattr(tm, "cleanup_transforms", [])) + ids(getattr(tm, "line_transforms", [])) + ids(getattr(tm, "token_transformers", []))
st["AST transformers"] = ids(ip.ast_transformers)
st["trace or profile functions"] = ids([f for f in (sys.gettrace(), sys.getprofile(), threading.gettrace(), threading.getprofile()) if f is not None])
st["exception display"] = ids([sys.excepthook, ip.CustomTB]) + [repr(ip.custom_exceptions)]
st["streams and display hooks"] = ids([type(sys.stdout), type(sys.stderr), sys.displayhook, ip.displayhook, ip.display_pub])
st["IPython shell methods"] = {n: id(getattr(type(ip), n, None)) for n in SHELL} | {"instance:" + n: id(v) for n, v in vars(ip).items() if n in SHELL}
st["IPython event callbacks"] = {e: {str(id(f)): [getattr(f, "__module__", None) or "", origin(f)] for f in cbs} for e, cbs in ip.events.callbacks.items()}
st["import hooks"] = {str(id(f)): [getattr(f, "__module__", None) or type(f).__module__, origin(f)] for f in list(sys.meta_path) + list(sys.path_hooks)}
st["namespace builtins"] = str(id(ip.user_ns.get("__builtins__"))) + "/" + str(id(ip.user_global_ns.get("__builtins__")))
st["modules"] = {n: id(m) for n, m in list(sys.modules.items())}
fns = {}
bound = [n for n, v in list(ip.user_ns.items()) if isinstance(v, types.ModuleType)]
for name in sorted(set(ARGS["modules"]) | {ip.user_ns[n].__name__ for n in bound}):
    mod = sys.modules.get(name)
    if mod is None:
        continue
    for attr, val in list(vars(mod).items()):
        if (attr == "_" or (attr.startswith("__") and attr not in ("__import__", "__build_class__"))) or isinstance(val, types.ModuleType):
            continue
        if callable(val):
            fns[f"{name}.{attr}"] = [id(val), getattr(val, "__module__", None) or "", origin(val)]
st["functions"] = fns
st["names"] = {n: id(v) for n, v in list(ip.user_ns.items()) if not n.startswith("_") and n not in ("In", "Out", "get_ipython", "exit", "quit") and (callable(v) or isinstance(v, types.ModuleType))}
RESULT = json.dumps(st)
'''


def probe_expression(nonce: str, modules: list[str]) -> str:
    """A Python expression, evaluated in the kernel's namespace, returning the JSON state."""
    args = json.dumps({"nonce": nonce, "modules": modules})
    shell = json.dumps(list(SHELL_METHODS))
    setup = ("from IPython import get_ipython as get_ipython_\n"
             f"ARGS = {args}\nSHELL = {shell}\n")
    return (f"(lambda g: (exec({json.dumps(setup + PROBE)}, g), g['RESULT'])[1])"
            "({'__name__': '__mlops_probe__'})")


def _library(module: str, filename: str) -> bool:
    """Was this callable made by an installed library (not by student code)?"""
    import sys

    if not module or module.split(".")[0] in ("__main__", "__mlops_probe__"):
        return False
    if not filename:  # builtin functions and C types: defined by extension modules
        return True
    if filename == f"<frozen {module}>":  # the interpreter's frozen stdlib (importlib's
        return True                        # FileFinder path hook, which Prefect adds again)
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, "/opt/venv", "/usr/lib/python3"}
    return filename.startswith(tuple(p.rstrip("/") + "/" for p in prefixes))


def changes(before: dict, after: dict, *, rebinds: set[str] | None = None,
            trusted: set[str] = frozenset()) -> list[str]:
    """What changed between two probe results that a student must not change.

    ``trusted`` are names bound by the course's own cells (helpers); ``rebinds`` the names
    the cell that ran may rebind itself (None: any name, for the course's own cells)."""
    found = []
    for key in ("input transformers", "AST transformers", "trace or profile functions",
                "exception display", "streams and display hooks", "namespace builtins"):
        if before.get(key) != after.get(key):
            found.append(f"{key} changed")
    shell_b, shell_a = before.get("IPython shell methods", {}), after.get("IPython shell methods", {})
    for name in sorted(set(shell_b) | set(shell_a)):
        if shell_b.get(name) != shell_a.get(name):
            found.append(f"IPython shell method {name.split(':')[-1]} replaced")
    for key in ("IPython event callbacks", "import hooks"):
        b, a = before.get(key, {}), after.get(key, {})
        if key == "import hooks":
            b, a = {"": b}, {"": a}
        for group in sorted(set(b) | set(a)):
            old, new = b.get(group, {}), a.get(group, {})
            if any(k not in new for k in old):
                found.append(f"{key} removed" + (f" ({group})" if group else ""))
            for k, (module, filename) in new.items():
                if k not in old and not _library(module, filename):
                    found.append(f"{key} added by student code" + (f" ({group})" if group else ""))
    mods_b, mods_a = before.get("modules", {}), after.get("modules", {})
    gone = sorted(n for n in mods_b if n not in mods_a)
    replaced = sorted(n for n in mods_b if n in mods_a and mods_a[n] != mods_b[n])
    if gone:
        found.append(f"sys.modules entries removed: {', '.join(gone[:3])}")
    if replaced:
        found.append(f"sys.modules entries replaced: {', '.join(replaced[:3])}")
    fns_b, fns_a = before.get("functions", {}), after.get("functions", {})
    for name in sorted(fns_b):
        new = fns_a.get(name)
        if new is None:
            continue  # the module was unloaded: reported with sys.modules
        if new[0] != fns_b[name][0] and not _library(new[1], new[2]):
            found.append(f"{name} replaced")
    names_b, names_a = before.get("names", {}), after.get("names", {})
    for name in sorted(trusted):
        if name in names_b and names_a.get(name) != names_b[name] and (
                rebinds is not None and name not in rebinds):
            found.append(f"test helper {name} replaced")
    return found


def bound_names(source: str) -> set[str]:
    """Names a cell binds itself (assignment, def, class, import, for, with, del)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            out.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).split(".")[0] for a in node.names)
    return out


def _ends_with_expression(source: str) -> bool:
    """Can this cell show a result (its last statement an expression, not a print call)?"""
    try:
        body = ast.parse(source).body
    except SyntaxError:
        return False
    if not body or not isinstance(body[-1], ast.Expr):
        return False
    value = body[-1].value
    return not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and value.func.id == "print")


def cause(evalue: str) -> str:
    """The tampering named in a ``TamperDetected`` error (also of a test not run)."""
    prefix = "not run: the kernel was tampered with earlier ("
    return evalue[len(prefix):-1] if evalue.startswith(prefix) else evalue


class GuardedExecute(RobustExecute):
    """``RobustExecute`` that checks the kernel's integrity before and after every cell."""

    kernel_manager_class = Type(SandboxKernelManager, klass=object).tag(config=True)
    probe_timeout_s = Float(30.0, help="seconds the integrity probe may take").tag(config=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("kernel_manager_class", SandboxKernelManager)
        super().__init__(*args, **kwargs)

    def preprocess(self, nb: NotebookNode, resources: Any = None, km: Any = None):
        self._ref: dict | None = None
        self._tampered: list[str] = []
        self._trusted: set[str] = set()
        return super().preprocess(nb, resources, km)

    def preprocess_cell(self, cell: NotebookNode, resources: Any, index: int):
        if cell.cell_type != "code":
            return super().preprocess_cell(cell, resources, index)
        test = utils.is_grade(cell) and not utils.is_solution(cell)
        trusted = test or utils.is_locked(cell)
        if self._ref is None:
            self._ref = self._probe()
        if test and self._tampered:
            cell.outputs = []
            self._fail_cell(cell, TAMPER, "not run: the kernel was tampered with earlier ("
                            + self._tampered[0] + ")")
            return cell, resources
        cell, resources = super().preprocess_cell(cell, resources, index)
        now = self._probe()
        if now is None or self._ref is None:
            found = ["the kernel did not answer the integrity check"]
        else:
            found = changes(self._ref, now, trusted=self._trusted,
                            rebinds=bound_names(cell.source) if test else (
                                None if trusted else set()))
        results = [o for o in cell.outputs if o.get("output_type") == "execute_result"]
        if test and (len(results) > 1 or (results and not _ends_with_expression(cell.source))):
            found.append("an execute_result appeared in a test cell that has no result")
        if test and results and any(o.get("output_type") == "error" for o in cell.outputs):
            # nbgrader would read the first execute_result as partial credit: an error wins
            cell.outputs = [o for o in cell.outputs if o.get("output_type") != "execute_result"]
        gid = cell.metadata.get("nbgrader", {}).get("grade_id", f"cell {index + 1}")
        if found:
            what = f"{', '.join(found[:3])} in {gid}"
            if not self._tampered:
                self._tampered.append(what)
            if test:
                cell.outputs = [o for o in cell.outputs if o.get("output_type") != "execute_result"]
                self._fail_cell(cell, TAMPER, what)
        if now is not None:
            if trusted and not found:
                self._trusted |= {n for n in now.get("names", {})
                                  if now["names"][n] != (self._ref or {}).get("names", {}).get(n)}
            self._ref = now
        return cell, resources

    def _replace_kernel(self, index: int) -> None:
        super()._replace_kernel(index)
        self._ref = self._probe()  # a new interpreter: new object ids

    def _probe(self) -> dict | None:
        """The kernel's integrity fingerprint, or None if it did not answer properly."""
        nonce = secrets.token_hex(8)
        expr = probe_expression(nonce, list(WATCHED_MODULES))

        async def ask() -> dict | None:
            assert self.kc is not None
            msg_id = self.kc.execute("", silent=True, store_history=False,
                                     user_expressions={"probe": expr})
            deadline = time.monotonic() + self.probe_timeout_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=left))
                except queue.Empty:
                    return None
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                out = msg["content"].get("user_expressions", {}).get("probe", {})
                if out.get("status") != "ok":
                    return None
                state = json.loads(ast.literal_eval(out["data"]["text/plain"]))
                return state if state.get("nonce") == nonce else None
            return None

        try:
            return run_sync(ask)()
        except Exception:  # noqa: BLE001 - a kernel that cannot answer is not trusted
            return None
