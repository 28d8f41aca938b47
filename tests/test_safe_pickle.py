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
