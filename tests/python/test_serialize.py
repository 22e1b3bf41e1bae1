"""encode(): every supported type, the exact compact JSON json.dumps would write,
errors that name the path of the offending value, the depth and size limits,
and a random round trip through decode()."""

import collections
import enum
import json
import math
import pickle
import random

import pytest

import hushcall
from hushcall import _core


def compact(value):
    """What encode() must produce, byte for byte."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def encoded(value, **kwargs):
    buf = hushcall.encode(value, **kwargs)
    try:
        return buf._unsafe_bytes()
    finally:
        buf.wipe()


# ---- every type -------------------------------------------------------------

SCALARS = [
    None,
    True,
    False,
    0,
    1,
    -1,
    2**63 - 1,
    -(2**63),
    2**63,
    -(2**63) - 1,
    2**64,
    2**200,
    -(2**200),
    0.0,
    -0.0,
    1.5,
    -2.25,
    0.1,
    1e16,
    1e-7,
    123456789.125,
    5e-324,
    1.7976931348623157e308,
    "",
    "plain",
    "quote \" backslash \\ slash /",
    "\x00\x01\x1f\x7f \b\f\n\r\t",
    "caf\u00e9 \u20ac \u2028\u2029 \uffff",
    "astral \U0001f600 \U0010ffff",
]


@pytest.mark.parametrize("value", SCALARS, ids=repr)
def test_scalars_match_json_dumps(value):
    assert encoded(value) == compact(value)


def test_containers_and_nesting():
    value = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": ["a", 1, 2.5, None, True, {"deep": [[[]]]}]},
        ],
        "empty_obj": {},
        "empty_list": [],
        "tuple": (1, "two", (3.0,)),
        "n": 2**100,
    }
    assert encoded(value) == compact(value)


def test_bool_is_not_written_as_int():
    assert encoded([True, False, 1, 0]) == b"[true,false,1,0]"


def test_subclasses_are_written_as_their_base():
    class Color(enum.IntEnum):
        RED = 1

    class Big(int):
        def __str__(self):
            return "not the number"

        __repr__ = __str__

    class F(float):
        def __repr__(self):
            return "nope"

    class S(str):
        pass

    class L(list):
        pass

    class T(tuple):
        pass

    value = [Color.RED, Big(2**70), F(2.5), S("s\u00e9"), S("ascii"), L([1]), T((2,))]
    assert encoded(value) == b'[1,1180591620717411303424,2.5,"s\xc3\xa9","ascii",[1],[2]]'


def test_dict_subclass_order_is_its_items_order():
    od = collections.OrderedDict([("a", 1), ("b", 2), ("c", 3)])
    od.move_to_end("a")
    assert encoded(od) == compact(od) == b'{"b":2,"c":3,"a":1}'


def test_non_ascii_strings_leave_no_utf8_cache_behind():
    # The walk encodes non-ASCII text into locked scratch memory rather than
    # asking CPython for its UTF-8 form, which it would cache in the object.
    import sys

    s = "".join(["d\u00e9j\u00e0 ", "vu \U0001f600"])  # built at run time: not interned
    before = sys.getsizeof(s)
    assert encoded({"k": s}) == compact({"k": s})
    assert sys.getsizeof(s) == before


# ---- errors name the path ----------------------------------------------------

@pytest.mark.parametrize(
    "value, message",
    [
        (
            {"messages": [{"content": "a"}, {"content": "b"}, {"content": {1, 2}}]},
            "messages[2].content: object of type 'set' is not JSON serializable",
        ),
        ({"a": [b"bytes"]}, "a[0]: object of type 'bytes' is not JSON serializable"),
        ({"a": {"b": object()}}, "a.b: object of type 'object' is not JSON serializable"),
        ({"two words": [None, 1j]}, "['two words'][1]: object of type 'complex' is not JSON serializable"),
        ({"x": {"9lives": frozenset()}}, "x['9lives']: object of type 'frozenset' is not JSON serializable"),
        (set(), "<root>: object of type 'set' is not JSON serializable"),
        ([1, [2, [3, bytearray()]]], "[1][1][1]: object of type 'bytearray' is not JSON serializable"),
    ],
)
def test_unsupported_types_raise_type_error_with_path(value, message):
    with pytest.raises(TypeError) as info:
        hushcall.encode(value)
    assert str(info.value) == message


def test_user_class_is_named():
    class Patient:
        pass

    with pytest.raises(TypeError, match=r"^records\[0\]: object of type 'Patient' is not JSON serializable$"):
        hushcall.encode({"records": [Patient()]})


def test_non_str_keys_raise_type_error_with_path():
    with pytest.raises(TypeError) as info:
        hushcall.encode({"tools": [{"parameters": {1: "x"}}]})
    assert str(info.value) == "tools[0].parameters: dict keys must be str, not int"
    with pytest.raises(TypeError, match=r"^<root>: dict keys must be str, not NoneType$"):
        hushcall.encode({None: 1})


@pytest.mark.parametrize(
    "value, path, what",
    [
        ({"a": [float("nan")]}, "a[0]", "NaN"),
        ({"a": {"b": float("inf")}}, "a.b", "Infinity"),
        ([0.0, -math.inf], "[1]", "-Infinity"),
    ],
)
def test_nan_and_infinity_raise_value_error_with_path(value, path, what):
    with pytest.raises(ValueError) as info:
        hushcall.encode(value)
    assert str(info.value) == f"{path}: {what} cannot be written as JSON"


def test_surrogates_raise_value_error_with_path():
    # What surrogateescape leaves for undecodable bytes: not valid UTF-8.
    bad = b"caf\xff".decode("utf-8", "surrogateescape")
    with pytest.raises(ValueError) as info:
        hushcall.encode({"messages": [{"content": "ok"}, {"content": bad}]})
    text = str(info.value)
    assert text.startswith("messages[1].content: string is not valid UTF-8 text")
    assert "U+DCFF" in text
    assert not isinstance(info.value, UnicodeError)  # no chained error holding the string
    assert info.value.__context__ is None and info.value.__cause__ is None

    with pytest.raises(ValueError, match=r"^a\['k\\udc80'\]: dict key is not valid UTF-8 text"):
        hushcall.encode({"a": {"k\udc80": 1}})
    with pytest.raises(ValueError, match=r"^<root>: string is not valid UTF-8"):
        hushcall.encode("\ud800")


def test_valid_astral_characters_are_not_surrogates():
    assert encoded("\U0001f600") == "\"\U0001f600\"".encode()


def test_depth_limit_names_the_path():
    ok = []
    for _ in range(63):
        ok = [ok]
    assert encoded(ok) == compact(ok)  # 64 levels: the default limit
    with hushcall.decode(hushcall.encode(ok)) as r:  # and decode() takes what encode() made
        assert r.to_dict() == ok

    deep = [ok]
    with pytest.raises(ValueError, match=r"nesting too deep: more than 64 levels") as info:
        hushcall.encode(deep)
    assert str(info.value).startswith("[0]" * 64 + ": ")

    with pytest.raises(ValueError, match="nesting too deep"):
        hushcall.encode({"a": {"b": {"c": 1}}}, max_depth=2)
    assert encoded({"a": {"b": 1}}, max_depth=2) == b'{"a":{"b":1}}'


def test_cycles_end_at_the_depth_limit():
    a = []
    a.append(a)
    with pytest.raises(ValueError, match="reference cycle"):
        hushcall.encode(a)
    d = {}
    d["self"] = d
    with pytest.raises(ValueError, match=r"^self\.self\.self"):
        hushcall.encode(d)


def test_size_limit_raises_invalid_request_error_before_any_io():
    with pytest.raises(hushcall.InvalidRequestError) as info:
        hushcall.encode({"content": "x" * 100}, max_bytes=64)
    e = info.value
    assert isinstance(e, hushcall.APIError) and isinstance(e, hushcall.HushcallError)
    assert e.status_code is None
    assert e.kind == "limit"
    assert "64" in str(e) and "x" * 10 not in str(e)

    assert encoded("x" * 62, max_bytes=64) == b'"' + b"x" * 62 + b'"'  # exactly 64 bytes
    with pytest.raises(hushcall.InvalidRequestError):
        hushcall.encode("x" * 63, max_bytes=64)


def test_default_size_limit_is_ten_mebibytes():
    assert _core.DEFAULT_MAX_REQUEST_BYTES == 10 * 1024 * 1024
    with pytest.raises(hushcall.InvalidRequestError):
        hushcall.encode({"content": "x" * (10 * 1024 * 1024)})
    # A non-ASCII string too large on its own fails the same way.
    with pytest.raises(hushcall.InvalidRequestError):
        hushcall.encode({"content": "\u00e9" * 40}, max_bytes=64)


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        hushcall.encode(1, max_bytes=0)
    with pytest.raises(ValueError):
        hushcall.encode(1, max_depth=0)
    with pytest.raises(ValueError):
        hushcall.encode(1, max_depth=_core.MAX_DEPTH_LIMIT + 1)
    with pytest.raises(TypeError):
        hushcall.encode(1, 100)  # limits are keyword-only


# ---- SecureBuffer ------------------------------------------------------------

def test_secure_buffer_basics():
    buf = hushcall.encode({"content": "secret-value"})
    assert isinstance(buf, hushcall.SecureBuffer)
    assert len(buf) == len(b'{"content":"secret-value"}')
    assert isinstance(buf.locked, bool)
    assert not buf.wiped
    assert "secret-value" not in repr(buf)
    assert repr(buf).startswith("<hushcall.SecureBuffer len=")
    buf.wipe()
    buf.wipe()  # idempotent
    assert buf.wiped and not buf.locked
    assert repr(buf) == "<hushcall.SecureBuffer (wiped)>"
    with pytest.raises(hushcall.WipedError):
        len(buf)
    with pytest.raises(hushcall.WipedError):
        buf._unsafe_bytes()
    with pytest.raises(hushcall.WipedError):
        hushcall.decode(buf)


def test_secure_buffer_is_locked_when_mlock_works():
    info = hushcall.get_memory_protection_info()
    buf = hushcall.encode([1])
    if info["mlock_available"]:
        assert buf.locked
    buf.wipe()


def test_secure_buffer_context_manager_wipes():
    with hushcall.encode([1, 2]) as buf:
        assert len(buf) == 5
    assert buf.wiped


def test_secure_buffer_cannot_be_copied_or_made():
    buf = hushcall.encode([1])
    with pytest.raises(TypeError):
        pickle.dumps(buf)
    with pytest.raises(TypeError):
        bytes(buf)  # no buffer protocol: no way to copy it out by accident
    with pytest.raises(TypeError):
        memoryview(buf)
    with pytest.raises(TypeError):
        hushcall.SecureBuffer()
    buf.wipe()


# ---- the exception table -----------------------------------------------------

EXPECTED_CLASSES = {
    "HUSH_E_ARGUMENT": "InvalidArgumentError",
    "HUSH_E_NOMEM": "SecureMemoryError",
    "HUSH_E_LIMIT": "InvalidRequestError",
    "HUSH_E_JSON": "MalformedJSONError",
    "HUSH_E_TYPE": "InvalidArgumentError",
    "HUSH_E_NOT_FOUND": "HushcallError",
    "HUSH_E_BASE64": "InvalidArgumentError",
    "HUSH_E_KEY": "SecurityError",
    "HUSH_E_PASSWORD": "SecurityError",
    "HUSH_E_PERMISSIONS": "SecurityError",
    "HUSH_E_IO": "HushcallError",
    "HUSH_E_EXISTS": "HushcallError",
    "HUSH_E_CRYPTO": "SecurityError",
    "HUSH_E_FORMAT": "SecurityError",
    "HUSH_E_UNSUPPORTED": "SecurityError",
    "HUSH_E_AUTH": "SecurityError",
    "HUSH_E_PIN": "SecurityError",
    "HUSH_E_ATTESTATION": "SecurityError",
    "HUSH_E_BAD_REQUEST": "InvalidRequestError",
    "HUSH_E_UNAUTHORIZED": "AuthenticationError",
    "HUSH_E_FORBIDDEN": "ForbiddenError",
    "HUSH_E_RATE_LIMITED": "RateLimitError",
    "HUSH_E_SERVER": "ServerError",
    "HUSH_E_UNAVAILABLE": "ServiceUnavailableError",
    "HUSH_E_HTTP": "APIError",
    "HUSH_E_CONNECTION": "APIConnectionError",
    "HUSH_E_TIMEOUT": "APITimeoutError",
    "HUSH_E_TLS": "APIConnectionError",
    "HUSH_E_CIRCUIT_OPEN": "CircuitOpenError",
    "HUSH_E_CANCELLED": "CallCancelledError",
    "HUSH_E_TRUNCATED": "IncompleteStreamError",
    "HUSH_E_INTERNAL": "HushcallError",
}


def test_every_status_maps_to_the_documented_class():
    table = _core._status_table()
    assert {name for _, name, _, _ in table} == set(EXPECTED_CLASSES)
    for code, name, kind, cls in table:
        assert cls is getattr(hushcall, EXPECTED_CLASSES[name]), name
        assert issubclass(cls, hushcall.HushcallError)
        assert kind == name[len("HUSH_E_"):].lower()
        with pytest.raises(cls) as info:
            _core._raise_status(code, "what went wrong")
        assert type(info.value) is cls
        assert info.value.kind == kind
        assert str(info.value) == "what went wrong"


def test_http_errors_carry_the_status_code():
    codes = {name: code for code, name, _, _ in _core._status_table()}
    with pytest.raises(hushcall.AuthenticationError) as info:
        _core._raise_status(codes["HUSH_E_UNAUTHORIZED"], "unauthorized", http_status=401)
    assert info.value.status_code == 401 and info.value.error_details is None
    assert info.value.message == "unauthorized"
    with pytest.raises(hushcall.APIError) as info:
        _core._raise_status(codes["HUSH_E_HTTP"], "unexpected HTTP status 404", http_status=404)
    assert type(info.value) is hushcall.APIError and info.value.status_code == 404
    with pytest.raises(hushcall.MalformedJSONError) as info:
        _core._raise_status(codes["HUSH_E_JSON"], "unexpected end of input", offset=17)
    assert info.value.offset == 17 and isinstance(info.value, ValueError)
    with pytest.raises(hushcall.HushcallError) as info:
        _core._raise_status(codes["HUSH_E_INTERNAL"])
    assert str(info.value) == "internal error"  # hush_strerror when there is no message
    with pytest.raises(ValueError):
        _core._raise_status(0)


def test_exceptions_keep_nomyo_signatures():
    assert hushcall.AuthenticationError("x").status_code == 401
    assert hushcall.InvalidRequestError("x").status_code == 400
    assert hushcall.ForbiddenError("x").status_code == 403
    assert hushcall.RateLimitError("x").status_code == 429
    assert hushcall.ServerError("x").status_code == 500
    assert hushcall.ServiceUnavailableError("x").status_code == 503
    e = hushcall.APIError("boom", 418, {"detail": "teapot"})
    assert (e.message, e.status_code, e.error_details, str(e)) == ("boom", 418, {"detail": "teapot"}, "boom")
    assert issubclass(hushcall.APITimeoutError, hushcall.APIConnectionError)
    assert issubclass(hushcall.WipedError, ReferenceError)
    assert issubclass(hushcall.SecureMemoryError, MemoryError)
    e2 = pickle.loads(pickle.dumps(hushcall.RateLimitError("slow down", 429, {"retry": 1})))
    assert (e2.message, e2.status_code) == ("slow down", 429)


# ---- decode() input errors ----------------------------------------------------

def test_decode_of_malformed_json():
    with pytest.raises(hushcall.MalformedJSONError) as info:
        hushcall.decode(b'{"a": [1, 2,]}')
    assert info.value.offset == 12
    assert info.value.kind == "json"
    with pytest.raises(ValueError):
        hushcall.decode(b'{"a": 1, "a": 2}')  # duplicate keys are refused


def test_decode_limits_and_types():
    with pytest.raises(hushcall.InvalidRequestError) as info:
        hushcall.decode(b"[" * 65 + b"]" * 65)
    assert info.value.kind == "limit"
    assert len(hushcall.decode(b"[" * 65 + b"]" * 65, max_depth=65)) == 1
    with pytest.raises(hushcall.InvalidRequestError):
        hushcall.decode(b'"' + b"x" * 100 + b'"', max_bytes=64)
    with pytest.raises(TypeError, match="SecureBuffer or a bytes-like object"):
        hushcall.decode('{"a": 1}')
    with pytest.raises(ValueError):
        hushcall.decode(b"1", max_depth=0)


# ---- round trip ----------------------------------------------------------------

_ALPHABET = (
    [chr(c) for c in range(0x20, 0x7F)] * 4
    + ["\x00", "\x08", "\x0c", "\n", "\r", "\t", "\x1f", "\x7f", '"', "\\", "/"]
    + ["\u00e9", "\u00ff", "\u0100", "\u20ac", "\u2028", "\ud7ff", "\ue000", "\uffff"]
    + ["\U00010000", "\U0001f600", "\U0010ffff"]
)


def _random_str(rng):
    return "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 24)))


def _random_float(rng):
    return rng.choice(
        [
            rng.uniform(-1e6, 1e6),
            rng.random() * 10.0 ** rng.randint(-320, 300),
            -rng.random() * 10.0 ** rng.randint(-20, 20),
            float(rng.randint(-(2**53), 2**53)),
            0.0,
            -0.0,
            1e16,
            1e22,
        ]
    )


def _random_value(rng, depth=0):
    kinds = ["null", "bool", "int", "bigint", "float", "str"]
    if depth < 6:
        kinds += ["list", "tuple", "dict", "dict"]
    kind = rng.choice(kinds)
    if kind == "null":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-(2**63), 2**63 - 1)
    if kind == "bigint":
        return rng.choice([1, -1]) * rng.randint(2**63, 2**256)
    if kind == "float":
        return _random_float(rng)
    if kind == "str":
        return _random_str(rng)
    n = rng.randint(0, 6)
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(n)]
    if kind == "tuple":
        return tuple(_random_value(rng, depth + 1) for _ in range(n))
    return {_random_str(rng): _random_value(rng, depth + 1) for _ in range(n)}


@pytest.mark.parametrize("seed", range(200))
def test_random_round_trip(seed):
    rng = random.Random(seed)
    value = _random_value(rng)
    expected = json.loads(json.dumps(value))
    buf = hushcall.encode(value)
    assert buf._unsafe_bytes() == compact(value)
    resp = hushcall.decode(buf)
    buf.wipe()
    assert resp.to_dict() == expected
    resp.wipe()
