"""Valid model files of every kind and tools to damage them, for the rnnfast.io tests and the fuzz run.

Run as a script it is the child that measures loads: ``python _io_craft.py FILE...`` loads each file under an
address-space limit and prints one JSON line per file (outcome, message, tracemalloc peak) and a last line
with the growth of the process's peak RSS (``ru_maxrss``) over the loads.
"""
import io
import json
import os
import resource
import struct
import sys
import tracemalloc
import zipfile

import numpy as np

import rnnfast as rf
from rnnfast import io as rio

INDEX = "rnnfast.json"


# ---------------------------------------------------------------------------------------- valid files
def _data(seed=0, n=24, T=5, F=3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, T, F)).astype(np.float32), rng


def make_valid_files(directory):
    """One small file of each kind in ``directory``: name -> path."""
    X, rng = _data()
    y_cls = np.array(["up", "down", "flat"])[rng.integers(0, 3, len(X))]
    y_reg = rng.standard_normal((len(X), 2))
    tokens = rng.integers(1, 12, (len(X), 6))
    kw = dict(hidden_size=4, epochs=1, batch_size=8, random_state=0, n_threads=1, verbose=0)
    out = {}

    def save(name, obj, **save_kw):
        out[name] = os.path.join(directory, f"{name}.rnnfast")
        obj.save(out[name], **save_kw)

    save("classifier", rf.LSTMClassifier(**kw).fit(X, y_cls))
    save("regressor", rf.GRURegressor(**kw, num_layers=2, bidirectional=True).fit(X, y_reg))
    save("tokens", rf.RNN(**kw, embedding_dim=3, return_sequences=True).fit(tokens, np.roll(tokens, -1, 1)))
    save("no_optimizer", rf.LSTM(**kw, dropout=0.1, pooling="mean").fit(X, y_cls), include_optimizer=False)
    seq = rf.nn.Sequential(rf.nn.Embedding(12, 4, padding_idx=0, seed=0), rf.nn.Stateful(rf.nn.LSTM(4, 5, seed=1)),
                           rf.nn.Dropout(0.2), rf.nn.LastStep(), rf.nn.Linear(5, 3, seed=2))
    save("sequential", seq)
    return out


# ---------------------------------------------------------------------------------------- editing
def read_members(path):
    """Every member of a ZIP file: name -> bytes (order kept)."""
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def write_members(path, members, compression=zipfile.ZIP_STORED):
    """A ZIP file of ``members`` (a dict, or a list of (name, bytes) pairs to allow duplicate names)."""
    items = members.items() if isinstance(members, dict) else members
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, data in items:
            z.writestr(name, data)
    return path


def edit_index(src, dst, edit):
    """Copy ``src`` to ``dst`` with its index passed through ``edit(index)`` (which changes it in place)."""
    members = read_members(src)
    index = json.loads(members[INDEX])
    edit(index)
    members[INDEX] = json.dumps(index).encode()
    return write_members(dst, members)


def npy_bytes(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def central_records(data):
    """Offsets of the central directory records ("PK\\x01\\x02") of a ZIP file's bytes."""
    out, i = [], data.find(b"PK\x01\x02")
    while i >= 0:
        out.append(i)
        i = data.find(b"PK\x01\x02", i + 4)
    return out


#: Fields of a central directory record: name -> (offset, struct format).
CENTRAL_FIELDS = {"flags": (8, "<H"), "method": (10, "<H"), "crc": (16, "<I"), "compressed_size": (20, "<I"),
                  "file_size": (24, "<I"), "header_offset": (42, "<I")}


def patch_central(data, record, field, value):
    """``data`` with one field of its ``record``-th central directory record set to ``value``."""
    off, fmt = CENTRAL_FIELDS[field]
    pos = central_records(data)[record] + off
    value &= (1 << (8 * struct.calcsize(fmt))) - 1
    return data[:pos] + struct.pack(fmt, value) + data[pos + struct.calcsize(fmt):]


def compressed_zeros_archive(path, nbytes, kind="test.kind"):
    """An archive whose one array is ``nbytes`` of zeros (float64), stored DEFLATE-compressed (a few MB)."""
    n = nbytes // 8
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (n,)})
    index = {"format": "rnnfast", "version": 1, "kind": kind, "config": {}, "extra": {},
             "arrays": {"w": {"file": "arrays/0.npy", "dtype": "<f8", "shape": [n]}}}
    chunk = bytes(1 << 24)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr(INDEX, json.dumps(index), compress_type=zipfile.ZIP_STORED)
        with z.open("arrays/0.npy", "w", force_zip64=True) as f:
            f.write(header.getvalue())
            left = n * 8
            while left:
                f.write(chunk[:min(len(chunk), left)])
                left -= min(len(chunk), left)
    return path


# ---------------------------------------------------------------------------------------- the measuring child
def _limit_address_space(extra_bytes):
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra_bytes, resource.RLIM_INFINITY))


def _measure(path):
    tracemalloc.start()
    try:
        rf.load(path)
        outcome, message = "ok", ""
    except rio.FormatError as e:
        outcome, message = "FormatError", str(e)
    except BaseException as e:  # noqa: BLE001 - reported, the parent asserts on it
        outcome, message = type(e).__name__, str(e)[:300]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"file": path, "outcome": outcome, "message": message, "peak_mb": peak / 2 ** 20}


def child_main(paths):
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _limit_address_space(1 << 30)  # a regression gives MemoryError here, not a swapping machine
    for p in paths:
        print(json.dumps(_measure(p)), flush=True)
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(json.dumps({"maxrss_growth_mb": growth}), flush=True)


if __name__ == "__main__":
    child_main(sys.argv[1:])
