"""The restricted unpickler admits numpy/builtin data and refuses everything else."""

import os
import pickle

import numpy as np
import pytest

from aqa_jax.weights.safe_pickle import UnsafePickleError, safe_load, safe_loads


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/aqa_jax_pwned",))


def test_numpy_and_containers_round_trip(tmp_path):
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [np.float64(1.5), (1, "x")],
            "c": {"d": np.array(["s"]), "e": np.int64(3)}, 4: b"bytes"}
    path = tmp_path / "ok.pkl"
    for protocol in (2, 4, 5):
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        out = safe_load(path)
        np.testing.assert_array_equal(out["a"], data["a"])
        assert out["b"][0] == 1.5 and out["b"][1] == (1, "x") and out["c"]["e"] == 3
        assert out[4] == b"bytes"


def test_code_execution_is_refused(tmp_path):
    marker = "/tmp/aqa_jax_pwned"
    if os.path.exists(marker):
        os.remove(marker)
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        safe_loads(pickle.dumps(_Exploit()), source="evil.pkl")
    assert not os.path.exists(marker)
    with pytest.raises(UnsafePickleError, match="evil.pkl"):
        safe_loads(pickle.dumps(_Exploit()), source="evil.pkl")


def test_real_annotation_files_load(real_annotations):
    files = sorted(real_annotations.glob("*/*.pkl"))
    assert len(files) >= 12
    for f in files:
        assert safe_load(f) is not None, f
    mtl = safe_load(real_annotations / "mtl_aqa" / "final_annotations_dict.pkl")
    assert len(mtl) == 1412  # 1059 train + 353 test (reference aqa_methods.md)


def _opcode_pickle(*parts: bytes) -> bytes:
    return b"\x80\x02" + b"".join(parts) + b"."


@pytest.mark.parametrize("name,data", [
    # bytearray(200_000_000): 30 bytes of pickle
    ("bytearray", _opcode_pickle(b"cbuiltins\nbytearray\n", b"J\x00\xc2\xeb\x0b", b"\x85R")),
    # numpy.ndarray((200_000_000,)) by REDUCE, and by NEWOBJ (cls.__new__)
    ("ndarray", _opcode_pickle(b"cnumpy\nndarray\n", b"J\x00\xc2\xeb\x0b\x85\x85R")),
    ("ndarray", _opcode_pickle(b"cnumpy\nndarray\n", b"J\x00\xc2\xeb\x0b\x85\x85\x81")),
    # _reconstruct(ndarray, (200_000_000,), b"b")
    ("_reconstruct", _opcode_pickle(b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy\nndarray\n",
                                    b"J\x00\xc2\xeb\x0b\x85C\x01b\x87R")),
    # _codecs.encode chained through an expanding codec
    ("encode", _opcode_pickle(b"c_codecs\nencode\n", b"C\x01a", b"X\x03\x00\x00\x00hex\x86R")),
])
def test_allocations_are_capped_by_the_file_size(name, data):
    """A few bytes of pickle must not allocate hundreds of MB through an allowed constructor
    (issue 17 item 8): each is refused in one line naming the file, before allocating."""
    import tracemalloc

    tracemalloc.start()
    with pytest.raises(UnsafePickleError) as err:
        safe_loads(data, source="tiny.pkl")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(data) < 80 and peak < 10_000_000, (name, peak)
    assert str(err.value).startswith("tiny.pkl: ") and "\n" not in str(err.value)


def test_refusals_are_one_line_naming_the_file(tmp_path):
    truncated = tmp_path / "cut.pkl"
    truncated.write_bytes(pickle.dumps({"a": np.arange(100)})[:50])
    with pytest.raises(UnsafePickleError, match=f"^{truncated}: not a readable data pickle"):
        safe_load(truncated)
    # an array larger than the slack, built from bytes in the file, still loads
    big = tmp_path / "big.pkl"
    array = np.arange(1 << 19, dtype=np.float64)  # 4 MiB
    for protocol in (2, 5):
        big.write_bytes(pickle.dumps({"w": array}, protocol=protocol))
        np.testing.assert_array_equal(safe_load(big)["w"], array)
