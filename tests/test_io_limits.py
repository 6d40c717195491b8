"""Issue 13's damaged and hostile model files: each is refused with FormatError, at little memory.

Every file is loaded in one child process under an address-space limit (1 GiB above its size at start), so a
regression fails with a MemoryError there instead of exhausting the machine; the child reports each load's
outcome and tracemalloc peak, and the growth of its peak RSS.
"""
import json
import os
import struct
import sys
import warnings
import zipfile

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import io as rio

from _child import run_python
from _io_craft import (INDEX, central_records, compressed_zeros_archive, edit_index, make_valid_files, patch_central,
                       read_members, write_members)

HERE = os.path.dirname(os.path.abspath(__file__))


def _set_config(key, value):
    def edit(index):
        index["config"][key] = value
        if key in index["extra"].get("fitted", {}).get("arch", {}):
            index["extra"]["fitted"]["arch"][key] = value
    return edit


def _set_fitted(key, value):
    def edit(index):
        if value is KeyError:
            del index["extra"]["fitted"][key]
        else:
            index["extra"]["fitted"][key] = value
    return edit


def _raw_index(valid, dst, text):
    members = read_members(valid)
    members[INDEX] = text
    return write_members(dst, members)


def _array_member(valid, dst, data):
    members = read_members(valid)
    name = json.loads(members[INDEX])["arrays"]
    members[next(iter(name.values()))["file"]] = data
    return write_members(dst, members)


def _patched(valid, dst, record, field, value):
    with open(valid, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(patch_central(data, record, field, value))
    return dst


def _deep_json(valid, dst):
    index = json.loads(read_members(valid)[INDEX])
    text = json.dumps(index)
    deep = "[" * 100000 + "]" * 100000
    return _raw_index(valid, dst, text.replace('"config": {', '"config": {"deep": ' + deep + ", ", 1).encode())


def _huge_npy_header(valid, dst):
    return _array_member(valid, dst, b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{'descr'")


def _duplicate_index(valid, dst):
    members = read_members(valid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name": the point here
        return write_members(dst, list(members.items()) + [(INDEX, members[INDEX])])


def _extra_member(valid, dst):
    return write_members(dst, dict(read_members(valid), **{"arrays/../evil.txt": b"hello"}))


def _nested_path(valid, dst):
    members = read_members(valid)
    index = json.loads(members[INDEX])
    ent = next(iter(index["arrays"].values()))
    members["arrays/sub/../" + ent["file"][len("arrays/"):]] = members.pop(ent["file"])
    ent["file"] = "arrays/sub/../" + ent["file"][len("arrays/"):]
    members[INDEX] = json.dumps(index).encode()
    return write_members(dst, members)


def _state_dict_checkpoint(valid, dst):
    rio.save_archive(dst, "model.state_dict", {}, {"w": np.zeros(2)})
    return dst


# case -> (valid file it starts from, how it is damaged, what the FormatError says)
CASES = {
    "compressed_1gib_array": (None, lambda v, d: compressed_zeros_archive(d, 1 << 30, "estimator.LSTM"),
                              "compressed"),
    "hidden_size_4000": ("classifier", lambda v, d: edit_index(v, d, _set_config("hidden_size", 4000)),
                         "the configuration makes float32 [16000, 3]"),
    "hidden_size_30000": ("classifier", lambda v, d: edit_index(v, d, _set_config("hidden_size", 30000)),
                          "the configuration makes float32 [120000, 3]"),
    "vocab_size_1e9": ("tokens", lambda v, d: edit_index(v, d, _set_fitted("vocab_size", 10 ** 9)), "vocab_size"),
    "vocab_size_1e9_float": ("tokens", lambda v, d: edit_index(v, d, _set_fitted("vocab_size", 1e9)), "vocab_size"),
    "label_dtype_U100000000": ("classifier", lambda v, d: edit_index(
        v, d, lambda ix: ix["extra"]["classes"].update(dtype="<U100000000")), "wider than its labels"),
    "dev_zero": (None, lambda v, d: "/dev/zero", "not a regular file"),
    "deep_json": ("classifier", _deep_json, "nested 100002 deep"),
    "int_4000_digits": ("classifier", lambda v, d: edit_index(v, d, _set_config("hidden_size", 10 ** 3999)),
                        "4000 digits"),
    "zip_method_99": ("classifier", lambda v, d: _patched(v, d, 1, "method", 99), "compressed (method 99)"),
    "huge_npy_header": ("classifier", _huge_npy_header, "header of 4294967280 bytes"),
    "deflated_garbage": ("classifier", lambda v, d: _deflated_garbage(v, d), "compressed (method 8)"),
    "bad_utf8_index": ("classifier", lambda v, d: _raw_index(v, d, b"\xff\xfe{}"), "UnicodeDecodeError"),
    "missing_fitted_field": ("classifier", lambda v, d: edit_index(v, d, _set_fitted("n_outputs", KeyError)),
                             "fitted must be an object holding"),
    "mistyped_n_outputs": ("classifier", lambda v, d: edit_index(v, d, _set_fitted("n_outputs", "3")),
                           "n_outputs must be an int"),
    "n_threads_string": ("classifier", lambda v, d: edit_index(v, d, _set_config("n_threads", "many")),
                         "n_threads"),
    "n_threads_zero": ("classifier", lambda v, d: edit_index(v, d, _set_config("n_threads", 0)), "n_threads"),
    "nan_lr": ("classifier", lambda v, d: edit_index(v, d, _set_config("lr", float("nan"))), "lr must be"),
    "encrypted_flag": ("classifier", lambda v, d: _patched(v, d, 0, "flags", 1), "encrypted"),
    "member_past_the_end": ("classifier", lambda v, d: _patched(v, d, 1, "file_size", 2 ** 31),
                            "does not hold"),
    "duplicate_names": ("classifier", _duplicate_index, "duplicate member names"),
    "extra_member": ("classifier", _extra_member, "members not in the index"),
    "nested_path": ("classifier", _nested_path, "damaged entry"),
    "bad_crc": ("classifier", lambda v, d: _patched(v, d, 1, "crc", 0), "Bad CRC-32"),
    "sequential_hidden_1e6": ("sequential", lambda v, d: edit_index(
        v, d, lambda ix: ix["config"]["layers"][1]["layer"]["config"].update(hidden_size=10 ** 6)),
        "the configuration makes float32 [4000000, 4]"),
    "sequential_unknown_layer": ("sequential", lambda v, d: edit_index(
        v, d, lambda ix: ix["config"]["layers"][0].update({"class": "os.system"})), "unknown layer"),
    "state_dict_checkpoint": (None, _state_dict_checkpoint, "holds only a state dict"),
}


def _deflated_garbage(valid, dst):
    members = read_members(valid)
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in members.items():
            z.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED if name != INDEX else zipfile.ZIP_STORED)
    with open(dst, "rb") as f:
        raw = bytearray(f.read())
    start = raw.find(b"PK\x03\x04", 100) + 60  # inside the first deflated member's data
    raw[start:start + 16] = os.urandom(16)
    with open(dst, "wb") as f:
        f.write(bytes(raw))
    return dst


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    valid = make_valid_files(str(d))
    paths = {name: make(valid.get(src), str(d / f"{name}.rnnfast")) for name, (src, make, _) in CASES.items()}
    r = run_python([os.path.join(HERE, "_io_craft.py"), *paths.values()], cwd=HERE, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    by_file = {line["file"]: line for line in lines[:-1]}
    return {name: (p, by_file[p]) for name, p in paths.items()}, lines[-1]["maxrss_growth_mb"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_file_gives_format_error_at_little_memory(results, case):
    cases, _ = results
    path, r = cases[case]
    assert r["outcome"] == "FormatError", r
    assert CASES[case][2] in r["message"], r["message"]
    assert "\n" not in r["message"] and "<function" not in r["message"]
    size = os.path.getsize(path)
    if size < 2 ** 20:
        assert r["peak_mb"] < 100, r
    else:  # the compressed GiB: its declared array is 1 GiB, its load costs nothing
        assert r["peak_mb"] < 10, r


def test_peak_rss_of_all_hostile_loads(results):
    _, growth = results
    assert growth < 100, f"the loads raised the child's peak RSS by {growth:.0f} MB"


def test_budget_is_documented_and_overridable(tmp_path):
    assert rio.DEFAULT_MAX_BYTES == 2 * 1024 ** 3 and "DEFAULT_MAX_BYTES" in rio.__doc__
    valid = make_valid_files(str(tmp_path))
    size = os.path.getsize(valid["classifier"])
    with pytest.raises(rio.FormatError, match="more than max_bytes"):
        rf.load(valid["classifier"], max_bytes=size - 1)
    assert rf.load(valid["classifier"], max_bytes=size).classes_.tolist() == ["down", "flat", "up"]
    with pytest.raises(TypeError, match="max_bytes"):
        rf.load(valid["classifier"], max_bytes="1 GB")
    with pytest.raises(ValueError, match="max_bytes"):
        rf.load(valid["classifier"], max_bytes=0)


def test_directory_and_missing_file(tmp_path):
    with pytest.raises(rio.FormatError, match="not a regular file"):
        rf.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        rf.load(tmp_path / "missing.rnnfast")


def test_n_threads_in_a_file_is_range_checked(tmp_path):
    """A file's n_threads is an int in [1, rnnfast.MAX_THREADS] or null: the issue's file with 100000 (which
    loaded, then crashed the process in predict) is refused at load."""
    valid = make_valid_files(str(tmp_path))
    for value in (None, 1, rf.MAX_THREADS):
        est = rf.load(edit_index(valid["classifier"], str(tmp_path / "t.rnnfast"), _set_config("n_threads", value)))
        assert est.n_threads == value
    for value in (True, 1.5, -1, rf.MAX_THREADS + 1, 100000):
        with pytest.raises(rio.FormatError, match="n_threads"):
            rf.load(edit_index(valid["classifier"], str(tmp_path / "t.rnnfast"), _set_config("n_threads", value)))


def test_json_limits():
    assert rio.parse_json(b'{"a": [1, 2.5, "x", null]}') == {"a": [1, 2.5, "x", None]}
    for bad, match in ((b"[" * 40 + b"]" * 40, "deep"), (b"1" * 41, "digits"), (b'{"a": 1, "a": 2}', "duplicate"),
                       (b'"\\u00e9 ok"', None)):
        if match is None:
            assert rio.parse_json(bad) == "\u00e9 ok"
            continue
        with pytest.raises(ValueError, match=match):
            rio.parse_json(bad)
    assert rio.parse_json(b'["[[[[[[", "]]]]"]') == ["[[[[[[", "]]]]"]  # brackets in strings do not count


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def _rename_slot(index):
    name = next(k for k in index["arrays"] if k.startswith("optimizer/") and k.endswith("/exp_avg"))
    index["arrays"][name[:-len("exp_avg")] + "exp_avgX"] = index["arrays"].pop(name)


def _flip_last_data_byte(valid, dst):
    with open(valid, "rb") as f:
        data = bytearray(f.read())
    first_record = central_records(bytes(data))[0]
    data[first_record - 5] ^= 0xFF  # inside the last member's array data, just before the central directory
    with open(dst, "wb") as f:
        f.write(bytes(data))
    return dst


def test_damage_found_late_costs_under_twice_the_declared_arrays(tmp_path):
    """Damage only the arrays' data or the optimizer's details reveal: refused before the network is built."""
    X = np.random.default_rng(0).standard_normal((16, 4, 64)).astype(np.float32)
    est = rf.LSTMClassifier(hidden_size=192, epochs=0, random_state=0, n_threads=1).fit(X, np.arange(16) % 2)
    valid = str(tmp_path / "big.rnnfast")
    est.save(valid)
    declared = sum(a.nbytes for a in rio.load_archive(valid)[2].values())
    paths = {"slot": edit_index(valid, str(tmp_path / "slot.rnnfast"), _rename_slot),
             "hyper": edit_index(valid, str(tmp_path / "hyper.rnnfast"),
                                 lambda ix: ix["extra"]["optimizer"]["hyper"].update(lr=-1.0)),
             "crc": _flip_last_data_byte(valid, str(tmp_path / "crc.rnnfast")), "valid": valid}
    r = run_python([os.path.join(HERE, "_io_craft.py"), *paths.values()], cwd=HERE, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    got = {line["file"]: line for line in map(json.loads, r.stdout.splitlines()[:-1])}
    for name, path in paths.items():
        res = got[path]
        assert res["outcome"] == ("ok" if name == "valid" else "FormatError"), res
        if name != "valid":
            assert res["peak_mb"] * 2 ** 20 < 2 * declared, (name, res["peak_mb"], declared / 2 ** 20)
