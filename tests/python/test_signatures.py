"""Every callable of hushcall._core carries an Argument Clinic text signature
(`name($self, /, arg)\\n--\\n\\n`, or `Name(args)\\n--\\n\\n` in a type's doc), so
inspect.signature works on it, and that signature is the one documented in
python/hushcall/_core.pyi: the same parameters, kinds and defaults. A method
whose docstring lacks the Clinic form, or whose form disagrees with the stub,
fails here by name."""

import ast
import inspect
import pathlib

import pytest

from hushcall import _core

STUB = pathlib.Path(__file__).resolve().parents[2] / "python" / "hushcall" / "_core.pyi"

# What a PyMethodDef entry becomes: a builtin function in the module, a
# method or classmethod descriptor in a type (whose __new__, a builtin
# function too, is the constructor: see test_constructor).
FUNCTION_TYPE = type(_core.encode)
METHOD_TYPE = type(vars(_core.Response)["get"])
CLASSMETHOD_TYPE = type(vars(_core.KeyPair)["generate"])


def stub_tree():
    return ast.parse(STUB.read_text(encoding="utf-8"))


def stub_functions(body):
    """name -> FunctionDef for the plain defs of a stub body (no properties
    or overloads: those document slots and getters, not PyMethodDef entries)."""
    found = {}
    for node in body:
        if not isinstance(node, ast.FunctionDef):
            continue
        decorators = {d.id for d in node.decorator_list if isinstance(d, ast.Name)}
        if decorators & {"property", "overload"}:
            continue
        found[node.name] = node
    return found


def stub_classes():
    return {n.name: n for n in stub_tree().body if isinstance(n, ast.ClassDef)}


def literal(node):
    """A default as the stub writes it; Ellipsis means 'not stated'."""
    return ast.literal_eval(node)


def stub_parameters(func, drop_first):
    """[(name, kind, has_default, default)] of a stub def, without self/cls."""
    args = func.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    params = []
    for i, (arg, default) in enumerate(zip(positional, defaults)):
        kind = (
            inspect.Parameter.POSITIONAL_ONLY
            if i < len(args.posonlyargs)
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        params.append((arg.arg, kind, default))
    if args.vararg is not None:
        params.append((args.vararg.arg, inspect.Parameter.VAR_POSITIONAL, None))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        params.append((arg.arg, inspect.Parameter.KEYWORD_ONLY, default))
    if args.kwarg is not None:
        params.append((args.kwarg.arg, inspect.Parameter.VAR_KEYWORD, None))
    if drop_first:
        params = params[1:]
    return [(name, kind, default is not None, default) for name, kind, default in params]


def assert_matches(where, signature, stub_params):
    actual = list(signature.parameters.values())
    assert [(p.name, p.kind) for p in actual] == [(n, k) for n, k, _, _ in stub_params], (
        f"{where}: signature {signature} does not match the stub"
    )
    for p, (name, _, has_default, default) in zip(actual, stub_params):
        assert (p.default is not inspect.Parameter.empty) == has_default, (
            f"{where}: {name} has a default in one of signature and stub only"
        )
        if has_default and literal(default) is not Ellipsis:
            assert p.default == literal(default), f"{where}: {name} defaults differ"


def text_signature(obj, where):
    sig = getattr(obj, "__text_signature__", None)
    assert sig, f"{where}: docstring lacks the Argument Clinic signature form"
    return inspect.signature(obj)


def module_functions():
    return sorted(n for n, v in vars(_core).items() if isinstance(v, FUNCTION_TYPE))


def core_types():
    return sorted(n for n, v in vars(_core).items() if isinstance(v, type) and
                  v.__module__ == "hushcall._core" and not issubclass(v, BaseException))


def type_methods():
    return sorted((t, m) for t in core_types()
                  for m, v in vars(getattr(_core, t)).items()
                  if isinstance(v, (METHOD_TYPE, CLASSMETHOD_TYPE)))


def constructible_types():
    """Types with their own __new__ or __init__: Python code may call them."""
    return [t for t in core_types()
            if "__new__" in vars(getattr(_core, t)) or "__init__" in vars(getattr(_core, t))]


def test_the_enumeration_sees_every_part():
    # A guard against the lists below going empty and the tests passing on nothing.
    assert {"encode", "decode", "get_memory_protection_info",
            "wipe_environment_variable"} <= set(module_functions())
    assert ("Response", "get") in type_methods() and ("KeyPair", "generate") in type_methods()
    assert {"Client", "Engine", "Server", "Tpm", "ReplayCache"} <= set(constructible_types())


@pytest.mark.parametrize("name", module_functions())
def test_module_function(name):
    func = getattr(_core, name)
    sig = text_signature(func, name)
    stub = stub_functions(stub_tree().body)
    assert name in stub, f"{name} is missing from _core.pyi"
    assert_matches(name, sig, stub_parameters(stub[name], drop_first=False))


@pytest.mark.parametrize("type_name,method", type_methods())
def test_method(type_name, method):
    where = f"{type_name}.{method}"
    cls = getattr(_core, type_name)
    descriptor = vars(cls)[method]
    sig = text_signature(descriptor, where)
    if method in ("__enter__", "__reduce__"):
        # Protocol methods the stub leaves to object's: they take nothing.
        assert list(sig.parameters) == ["self"], f"{where}: takes no arguments"
        return
    stub_class = stub_classes().get(type_name)
    assert stub_class is not None, f"{type_name} is missing from _core.pyi"
    stub = stub_functions(stub_class.body)
    assert method in stub, f"{where} is missing from _core.pyi"
    params = stub_parameters(stub[method], drop_first=True)
    if isinstance(descriptor, CLASSMETHOD_TYPE):
        sig = inspect.signature(getattr(cls, method))  # bound to the class: $type gone
    else:
        params = [("self", inspect.Parameter.POSITIONAL_ONLY, False, None)] + params
    assert_matches(where, sig, params)


@pytest.mark.parametrize("type_name", constructible_types())
def test_constructor(type_name):
    cls = getattr(_core, type_name)
    sig = text_signature(cls, type_name)
    stub_class = stub_classes().get(type_name)
    assert stub_class is not None, f"{type_name} is missing from _core.pyi"
    init = stub_functions(stub_class.body).get("__init__")
    assert init is not None, f"{type_name}.__init__ is missing from _core.pyi"
    assert_matches(type_name, sig, stub_parameters(init, drop_first=True))


def test_documented_defaults_are_the_cores():
    # The signatures spell the core's limits out; they must not drift from them.
    assert inspect.signature(_core.encode).parameters["max_bytes"].default == \
        _core.DEFAULT_MAX_REQUEST_BYTES
    assert inspect.signature(_core.decode).parameters["max_bytes"].default == \
        _core.DEFAULT_MAX_RESPONSE_BYTES
    for func in (_core.encode, _core.decode):
        assert inspect.signature(func).parameters["max_depth"].default == \
            _core.DEFAULT_MAX_DEPTH


def test_prose_survives_the_signature():
    # The Clinic header is stripped from __doc__; the prose below it stays.
    assert _core.Client.__doc__.startswith("A client of one NOMYO-compatible endpoint")
    assert _core.Response.get.__doc__ == "A member (or, for an array, an element) or default."
    assert "Test hook" in _core._raise_status.__doc__
