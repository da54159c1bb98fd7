"""A minimal stand-in for pytest, for GPU machines where pytest is not installed and
cannot be: runs the test files given on the command line, supporting what fused_rnn's
CUDA tests use (module-level pytestmark skipif, stacked mark.parametrize, autouse
and named fixtures without arguments, pytest.raises with match). Prints one line per failure and a
pytest-like "N passed, M failed" line; exits 1 on any failure.

    python scripts/mini_pytest.py tests/test_cuda.py [...]
"""
import contextlib
import importlib.util
import inspect
import itertools
import os
import re
import sys
import traceback
import types


class _Mark:
    def __init__(self, name, args, kwargs):
        self.name, self.args, self.kwargs = name, args, kwargs

    def __call__(self, fn):
        fn.__dict__.setdefault("_marks", []).append(self)
        return fn


class _MarkFactory:
    def __getattr__(self, name):
        return lambda *a, **k: _Mark(name, a, k)


@contextlib.contextmanager
def _raises(exc, match=None):
    try:
        yield
    except exc as e:
        if match is not None and not re.search(match, str(e)):
            raise AssertionError(f"exception {e!r} does not match {match!r}")
        return
    raise AssertionError(f"did not raise {exc}")


def _fixture(fn=None, autouse=False, **_):
    def wrap(f):
        f._fixture_autouse = autouse
        return f
    return wrap(fn) if fn is not None else wrap


def _install_stub():
    stub = types.ModuleType("pytest")
    stub.mark = _MarkFactory()
    stub.raises = _raises
    stub.fixture = _fixture
    stub.skip = lambda msg="": (_ for _ in ()).throw(_Skip(msg))
    sys.modules["pytest"] = stub


class _Skip(Exception):
    pass


def _cases(fn):
    """Every parameter combination of fn's stacked parametrize marks."""
    axes = []
    for m in fn.__dict__.get("_marks", []):
        if m.name == "parametrize":
            names = [n.strip() for n in m.args[0].split(",")]
            values = [v if len(names) > 1 else (v,) for v in m.args[1]]
            axes.append([dict(zip(names, v)) for v in values])
    for combo in itertools.product(*axes):
        kw = {}
        for d in combo:
            kw.update(d)
        yield kw


def run_file(path):
    # what tests/conftest.py does under pytest: shared helpers import as top-level modules
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    spec = importlib.util.spec_from_file_location(path.replace("/", "_")[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    marks = getattr(mod, "pytestmark", [])
    marks = marks if isinstance(marks, list) else [marks]
    for m in marks:
        if m.name == "skipif" and m.args and m.args[0]:
            print(f"{path}: skipped ({m.kwargs.get('reason', '')})")
            return 0, 0, 1
    autouse = [f for f in vars(mod).values() if getattr(f, "_fixture_autouse", False)]
    named = {n: f for n, f in vars(mod).items() if hasattr(f, "_fixture_autouse")}
    passed = failed = skipped = 0
    for name, fn in list(vars(mod).items()):
        if not (name.startswith("test_") and callable(fn)):
            continue
        for kw in _cases(fn):
            label = f"{path}::{name}[{', '.join(f'{k}={v}' for k, v in kw.items())}]"
            gens = [f() for f in autouse]
            try:
                for g in gens:
                    next(g)
                # fixtures named by the test's arguments (no arguments themselves)
                for arg in inspect.signature(fn).parameters:
                    if arg not in kw and arg in named:
                        value = named[arg]()
                        if inspect.isgenerator(value):
                            gens.append(value)
                            value = next(value)
                        kw[arg] = value
                fn(**kw)
                passed += 1
            except _Skip:
                skipped += 1
            except Exception:
                failed += 1
                print(f"FAILED {label}\n{traceback.format_exc()}")
            finally:
                for g in gens:
                    with contextlib.suppress(StopIteration):
                        next(g)
    return passed, failed, skipped


def main(paths):
    _install_stub()
    sys.path.insert(0, os.getcwd())  # the package under test, as `python -m pytest` has it
    totals = [0, 0, 0]
    for p in paths:
        for k, v in enumerate(run_file(p)):
            totals[k] += v
    print(f"{totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    return 1 if totals[1] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
