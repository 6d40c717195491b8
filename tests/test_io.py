"""rnnfast.io: the pickle-free, versioned, atomic file format."""
import json
import os
import zipfile

import numpy as np
import pytest

from rnnfast import io as rio


def _sample(tmp_path):
    p = tmp_path / "m.rnnfast"
    arrays = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "ids": np.array([1, 2, 3]),
              "flag": np.array([True, False])}
    rio.save_archive(p, "test.kind", {"a": 1, "b": [1, 2]}, arrays, extra={"h": [0.5]})
    return p, arrays


def test_round_trip(tmp_path):
    p, arrays = _sample(tmp_path)
    kind, config, got, extra = rio.load_archive(p, kind="test.kind")
    assert kind == "test.kind" and config == {"a": 1, "b": [1, 2]} and extra == {"h": [0.5]}
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == v.dtype


def test_refuses_object_arrays_and_non_json(tmp_path):
    with pytest.raises(TypeError, match="numeric"):
        rio.save_archive(tmp_path / "x", "k", {}, {"o": np.array([object()])})
    with pytest.raises(TypeError, match="JSON"):
        rio.save_archive(tmp_path / "x", "k", {"f": object()}, {})
    assert not os.path.exists(tmp_path / "x")


def test_atomic_keeps_old_file_on_failure(tmp_path, monkeypatch):
    p, arrays = _sample(tmp_path)
    before = p.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(rio.os, "replace", boom)
    with pytest.raises(RuntimeError):
        rio.save_archive(p, "test.kind", {}, {"w": np.zeros(3)})
    assert p.read_bytes() == before
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "foreign_zip", "bad_json", "newer",
                                    "wrong_shape", "pickle", "missing_array"])
def test_damaged_or_foreign_files(tmp_path, damage):
    p, _ = _sample(tmp_path)
    data = p.read_bytes()
    if damage == "truncate":
        p.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        p.write_bytes(os.urandom(300))
    elif damage == "empty":
        p.write_bytes(b"")
    else:
        with zipfile.ZipFile(p) as z:
            members = {n: z.read(n) for n in z.namelist()}
        index = json.loads(members["rnnfast.json"])
        if damage == "foreign_zip":
            members = {"hello.txt": b"hi"}
        elif damage == "bad_json":
            members["rnnfast.json"] = b"{not json"
        elif damage == "newer":
            index["version"] = 99
        elif damage == "wrong_shape":
            index["arrays"]["w"]["shape"] = [4, 3]
        elif damage == "pickle":
            import io as _io
            buf = _io.BytesIO()
            np.lib.format.write_array(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
            members[index["arrays"]["w"]["file"]] = buf.getvalue()
        elif damage == "missing_array":
            del members[index["arrays"]["w"]["file"]]
        if damage not in ("foreign_zip", "bad_json"):
            members["rnnfast.json"] = json.dumps(index).encode()
        with zipfile.ZipFile(p, "w") as z:
            for n, b in members.items():
                z.writestr(n, b)
    with pytest.raises(rio.FormatError):
        rio.load_archive(p)


def test_wrong_kind(tmp_path):
    p, _ = _sample(tmp_path)
    with pytest.raises(rio.FormatError, match="expected"):
        rio.load_archive(p, kind="other")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        rio.load_archive(tmp_path / "nope")
