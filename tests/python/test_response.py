"""Response: a view over a document in locked memory. Every access style, the
errors for missing keys, wipe() killing every view, repr never showing content,
and collection of the last view wiping the document."""

import copy
import gc
import os
import pickle
import threading

import pytest

import hushcall

# Distinctive content that must never appear in a repr.
CANARY = "CANARY-c0ntent-7f3a9e"
TOOL_CANARY = "CANARY-t00l-args-55d1"


def sample():
    return {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": CANARY},
                "finish_reason": "stop",
            },
            {
                "index": 1,
                "message": {"role": "assistant", "content": "second " + CANARY,
                            "tool_calls": [{"arguments": TOOL_CANARY}]},
                "finish_reason": "stop",
            },
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
        "numbers": [0, -1, 2**70, -(2**70), 1.5, -0.0, 1e300],
        "flags": [True, False, None],
        "_metadata": {
            "payload_id": "3f2b1c4e-aaaa-4bbb-8ccc-123456789abc",
            "processed_at": 1700000000,
            "is_encrypted": True,
            "encryption_algorithm": "hybrid-aes256-rsa4096",
            "nested": {"not": "shown"},
        },
    }


def make(value=None):
    buf = hushcall.encode(sample() if value is None else value)
    try:
        return hushcall.decode(buf)
    finally:
        buf.wipe()


# ---- access -------------------------------------------------------------------

def test_item_and_attribute_access():
    r = make()
    assert r["choices"][0]["message"]["content"] == CANARY
    assert r.choices[0].message.content == CANARY
    assert r.choices[-1].message.content == "second " + CANARY
    assert r.choices[-2].index == 0
    assert r.usage.total_tokens == 30
    assert r._metadata.payload_id.startswith("3f2b")
    assert r["_metadata"]["is_encrypted"] is True
    r.wipe()


def test_leaf_types():
    r = make()
    content = r.choices[0].message.content
    assert type(content) is hushcall.ZeroOnFreeStr and isinstance(content, str)
    assert list(r.numbers) == [0, -1, 2**70, -(2**70), 1.5, -0.0, 1e300]
    assert [type(x) for x in r.numbers] == [int, int, int, int, float, float, float]
    assert r.flags[0] is True and r.flags[1] is False and r.flags[2] is None
    assert isinstance(r.choices, hushcall.Response)
    assert isinstance(r.choices[0], hushcall.Response)
    r.wipe()


def test_numbers_like_json_loads():
    r = hushcall.decode(b'[1e400, -1e400, 1E2, 10, 1.0, -0, 123456789012345678901234567890]')
    assert r.to_dict() == [float("inf"), float("-inf"), 100.0, 10, 1.0, 0,
                           123456789012345678901234567890]
    assert type(r[2]) is float and type(r[3]) is int
    r.wipe()


def test_unicode_leaves():
    text = "caf\u00e9 \u0100\u20ac \U0001f600 \x00 end"
    r = make({"s": text, text: 1})
    assert r.s == text
    assert r[text] == 1
    assert r.keys() == ["s", text]
    r.wipe()


def test_slices_of_arrays():
    r = make({"a": [0, 1, 2, 3, 4]})
    assert r.a[1:4] == [1, 2, 3]
    assert r.a[::-2] == [4, 2, 0]
    assert r.a[10:] == []
    r.wipe()


def test_missing_keys_and_indices():
    r = make()
    with pytest.raises(KeyError) as info:
        r["nope"]
    assert info.value.args == ("nope",)
    with pytest.raises(KeyError):
        r[0]  # an object is indexed by name
    with pytest.raises(KeyError):
        r[("a", "b")]
    with pytest.raises(KeyError):
        r["bad\udc80"]  # cannot be a member's name
    with pytest.raises(IndexError):
        r.choices[2]
    with pytest.raises(IndexError):
        r.choices[-3]
    with pytest.raises(IndexError):
        r.choices[2**100]
    with pytest.raises(TypeError):
        r.choices["0"]
    with pytest.raises(AttributeError):
        r.nope
    with pytest.raises(AttributeError):
        r.choices.nope  # arrays have no members
    assert not hasattr(r, "nope")
    assert getattr(r, "nope", 5) == 5
    r.wipe()


def test_real_attributes_win_over_members():
    r = make({"keys": "member", "wipe": 1, "get": 2, "__len__": 3, "_repr_html_": 4,
              "_repr_markdown_": 5, "_ipython_display_": 6, "value": 7})
    assert callable(r.keys) and r["keys"] == "member"
    assert callable(r.wipe) and r["wipe"] == 1
    assert r.value == 7
    # Special and IPython display names are never looked up as members.
    with pytest.raises(AttributeError):
        r._repr_markdown_
    with pytest.raises(AttributeError):
        r._ipython_display_
    assert r["_repr_markdown_"] == 5
    assert callable(r._repr_html_)
    r.wipe()


def test_mapping_methods():
    r = make()
    assert r.keys() == ["id", "object", "choices", "usage", "numbers", "flags", "_metadata"]
    assert r.usage.values() == [10, 20, 30]
    assert r.usage.items() == [("prompt_tokens", 10), ("completion_tokens", 20),
                               ("total_tokens", 30)]
    assert r.get("id") == "chatcmpl-123"
    assert r.get("nope") is None
    assert r.get("nope", 7) == 7
    assert r.get(3, "x") == "x"
    assert r.numbers.get(0) == 0 and r.numbers.get(-1) == 1e300
    assert r.numbers.get(99, "d") == "d" and r.numbers.get("a", "d") == "d"
    assert r.flags.values() == [True, False, None]
    with pytest.raises(TypeError):
        r.flags.keys()
    with pytest.raises(TypeError):
        r.flags.items()
    r.wipe()


def test_len_iteration_and_in():
    r = make()
    assert len(r) == 7 and len(r.choices) == 2 and len(r.usage) == 3
    assert list(r) == r.keys()
    assert [c.index for c in r.choices] == [0, 1]
    assert "choices" in r and "nope" not in r and 1 not in r
    assert 30 in r.usage.values()
    assert 1.5 in r.numbers and 2**70 in r.numbers and 7 not in r.numbers
    assert True in r.flags and None in r.flags
    it = iter(r.usage)
    assert next(it) == "prompt_tokens"
    assert list(it) == ["completion_tokens", "total_tokens"]
    assert list(it) == []
    r.wipe()


def test_to_dict_is_a_plain_deep_copy():
    r = make()
    d = r.to_dict()
    assert d == sample()
    assert type(d) is dict and type(d["choices"]) is list
    assert type(r.choices.to_dict()) is list
    r.wipe()
    assert d["choices"][0]["message"]["content"] == CANARY  # the copy outlives the wipe


def test_scalar_root():
    r = hushcall.decode(b'"just a string"')
    assert r.to_dict() == "just a string"
    assert repr(r) == "<hushcall.Response string>"
    with pytest.raises(TypeError):
        len(r)
    with pytest.raises(TypeError):
        r[0]
    with pytest.raises(TypeError):
        iter(r)
    with pytest.raises(TypeError):
        "x" in r
    r.wipe()


# ---- wipe --------------------------------------------------------------------

def test_wipe_invalidates_every_view_taken_before():
    r = make()
    choices = r.choices
    message = r.choices[0].message
    it = iter(r.usage)
    r.wipe()
    assert r.wiped and choices.wiped and message.wiped
    for access in (
        lambda: r["choices"],
        lambda: r.choices,
        lambda: choices[0],
        lambda: message.content,
        lambda: message["content"],
        lambda: len(message),
        lambda: list(choices),
        lambda: next(it),
        lambda: "role" in message,
        lambda: message.get("role"),
        lambda: message.keys(),
        lambda: message.to_dict(),
    ):
        with pytest.raises(hushcall.WipedError) as info:
            access()
        assert str(info.value) == "this response was wiped; its views are no longer valid"
        assert isinstance(info.value, hushcall.HushcallError)
        assert info.value.kind == "wiped"
    r.wipe()  # idempotent
    assert repr(r) == repr(message) == "<hushcall.Response (wiped)>"


def test_wipe_through_a_child_view_wipes_the_document():
    r = make()
    message = r.choices[0].message
    message.wipe()
    with pytest.raises(hushcall.WipedError):
        r.id


def test_context_manager_wipes():
    with make() as r:
        message = r.choices[0].message
        assert message.content == CANARY
    assert r.wiped
    with pytest.raises(hushcall.WipedError):
        message.content

    with pytest.raises(RuntimeError):
        with make() as r2:
            raise RuntimeError("inside")
    assert r2.wiped


def test_wipe_during_a_walk_is_deferred_safely():
    r = make({"items": list(range(50))})
    items = r["items"]

    class WipesOnCompare:
        def __eq__(self, other):
            r.wipe()
            return False

    assert (WipesOnCompare() in items) is False  # the walk finished on live memory
    with pytest.raises(hushcall.WipedError):
        items[0]


def test_collecting_the_last_view_wipes():
    gc.collect()
    base = hushcall.get_memory_protection_info()["mapped_bytes"]
    r = make()
    assert hushcall.get_memory_protection_info()["mapped_bytes"] > base
    message = r.choices[0].message
    del r
    assert message.content == CANARY  # a child view keeps the document alive
    del message
    assert hushcall.get_memory_protection_info()["mapped_bytes"] == base

    # Views caught in a reference cycle go with the cycle collector.
    r = make()
    holder = [r.choices]
    holder.append(holder)
    del r, holder
    gc.collect()
    assert hushcall.get_memory_protection_info()["mapped_bytes"] == base


def test_fork_child_sees_views_as_wiped():
    r = make()
    buf = hushcall.encode([CANARY])
    pid = os.fork()
    if pid == 0:  # child: secure memory was not inherited
        code = 1
        try:
            r.choices[0].message.content
        except hushcall.WipedError as e:
            code = 0 if "fork" in str(e) else 2
        except BaseException:
            code = 3
        if code == 0 and not (r.wiped and buf.wiped and repr(r) == "<hushcall.Response (wiped)>"):
            code = 4
        try:
            buf._unsafe_bytes()
            code = 5
        except hushcall.WipedError:
            pass
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert r.choices[0].message.content == CANARY  # the parent's copy is intact
    assert buf._unsafe_bytes() == ('["%s"]' % CANARY).encode()
    r.wipe()
    buf.wipe()


# ---- repr never shows content ---------------------------------------------------

def test_repr_shows_shape_and_metadata_only():
    r = make()
    text = repr(r)
    assert CANARY not in text and TOOL_CANARY not in text and "chatcmpl-123" not in text
    assert text.startswith("<hushcall.Response object keys=['id', 'object', 'choices', 'usage',")
    assert "'payload_id': '3f2b1c4e-aaaa-4bbb-8ccc-123456789abc'" in text
    assert "'processed_at': 1700000000" in text
    assert "'is_encrypted': True" in text
    assert "'encryption_algorithm': 'hybrid-aes256-rsa4096'" in text
    assert "'nested': <object len=1>" in text and "shown" not in text
    assert str(r) == text and f"{r}" == text
    assert repr(r.choices) == "<hushcall.Response array len=2>"
    assert repr(r.choices[1].message) == \
        "<hushcall.Response object keys=['role', 'content', 'tool_calls']>"
    for view in (r.choices, r.choices[0], r.choices[1].message, r._metadata):
        assert CANARY not in repr(view) and TOOL_CANARY not in repr(view)
    r.wipe()


def test_repr_for_jupyter():
    r = make()
    html = r._repr_html_()
    assert CANARY not in html and TOOL_CANARY not in html
    assert html.startswith("<pre>&lt;hushcall.Response object") and "payload_id" in html

    class Printer:
        def __init__(self):
            self.out = []

        def text(self, s):
            self.out.append(s)

    p = Printer()
    r._repr_pretty_(p, False)
    assert p.out == [repr(r)]
    r.wipe()


def test_repr_of_many_keys_is_cut():
    r = make({f"k{i}": i for i in range(40)})
    assert "... (40 in all)" in repr(r) and "'k31'" in repr(r) and "'k32'" not in repr(r)
    r.wipe()


def test_response_cannot_be_copied_or_made():
    r = make()
    with pytest.raises(TypeError):
        pickle.dumps(r)
    with pytest.raises(TypeError):
        copy.copy(r)
    with pytest.raises(TypeError):
        copy.deepcopy(r.choices)
    with pytest.raises(TypeError):
        hushcall.Response()
    r.wipe()


def test_decode_from_threads():
    buf = hushcall.encode(sample())
    errors = []

    def work():
        try:
            for _ in range(50):
                with hushcall.decode(buf) as r:
                    assert r.choices[0].message.content == CANARY
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    buf.wipe()
    assert errors == []
