"""Fuzzing ``rf.load``: random bytes, byte mutations and truncations of valid files of every kind (estimator
classifier, regressor, token model, one saved without its optimizer, a Sequential checkpoint), patched ZIP
directory fields (sizes, methods, flags, offsets), restructured archives (dropped, duplicated, extra,
renamed, nested or compressed members) and random edits of the JSON index.

Every outcome must be a load or :class:`rnnfast.io.FormatError`: never another exception, never a crash,
never much memory (tracemalloc peak under 100 MB; the files are under 1 MB). A mutation the ZIP checksums
cannot see (timestamps, unused header fields) must load the same model.

Under pytest the number of examples is the hypothesis profile's (``pytest --hypothesis-profile=fuzz`` for a
long run). As a script it is a plain loop for release checks::

    python tests/test_io_fuzz.py --count 100000 [--seed 0] [--save-failures DIR]

which prints the outcomes by mutation and exits 1 if any load raised anything but FormatError (a MemoryError
under its 1 GiB address-space limit included) or the process's peak RSS grew by 100 MB or more over the run
(a bound on every single load's peak, measured without tracemalloc's cost).
"""
import argparse
import io
import json
import os
import random
import resource
import signal
import sys
import tempfile
import time
import tracemalloc
import zipfile
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rnnfast as rf  # noqa: E402
from rnnfast import io as rio  # noqa: E402

from _io_craft import CENTRAL_FIELDS, INDEX, central_records, make_valid_files, patch_central  # noqa: E402

PEAK_LIMIT_MB = 100


# ---------------------------------------------------------------------------------------- mutations
def _members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i), i.compress_type) for i in z.infolist()]


def _zip(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, payload, method in members:
            z.writestr(name, payload, compress_type=method)
    return buf.getvalue()


def flip_bytes(data, rnd):
    b = bytearray(data)
    for _ in range(rnd.randint(1, 8)):
        b[rnd.randrange(len(b))] = rnd.randrange(256)
    return bytes(b)


def truncate(data, rnd):
    return data[:rnd.randrange(len(data))]


def random_bytes(data, rnd):
    prefix = rnd.choice([b"", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY"])
    return prefix + rnd.randbytes(rnd.randrange(0, 2048))


_INTERESTING = [0, 1, 2, 8, 12, 14, 99, 0x21, 0x41, 0x800, 2 ** 15, 2 ** 16 - 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1]


def patch_directory(data, rnd):
    records = central_records(data)
    value = rnd.choice(_INTERESTING + [rnd.randrange(2 ** 32)])
    return patch_central(data, rnd.randrange(len(records)), rnd.choice(sorted(CENTRAL_FIELDS)), value)


_NAMES = ["arrays/../rnnfast.json", "/etc/passwd", "arrays/0.npy", "arrays/sub/0.npy", "rnnfast.json", "..",
          "arrays/99999.npy", "\u00e9\u00e8.npy", "a" * 300, "arrays/"]


def restructure(data, rnd):
    members = _members(data)
    i = rnd.randrange(len(members))
    op = rnd.choice(["drop", "duplicate", "extra", "rename", "compress", "reorder", "empty"])
    if op == "drop":
        del members[i]
    elif op == "duplicate":
        members.insert(rnd.randrange(len(members) + 1), members[i])
    elif op == "extra":
        members.append((rnd.choice(_NAMES), rnd.randbytes(rnd.randrange(64)), zipfile.ZIP_STORED))
    elif op == "rename":
        members[i] = (rnd.choice(_NAMES), *members[i][1:])
    elif op == "compress":
        members[i] = (members[i][0], members[i][1], rnd.choice([zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                                                 zipfile.ZIP_LZMA]))
    elif op == "reorder":
        rnd.shuffle(members)
    else:
        members[i] = (members[i][0], b"", members[i][2])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name"
        return _zip(members)


def random_json(rnd, depth=0):
    pick = rnd.randrange(12 if depth < 3 else 10)
    scalars = [None, True, False, 0, -1, 1, 2 ** 31, 10 ** 9, 2 ** 64, -(10 ** 30), float("nan"), float("inf"),
               1e308, 0.5, "", "float32", "float64", "<U100000000", "|O", "<f8", "x" * 1000, "os.system",
               "\udcff", "estimator.LSTM", "nn.Sequential", "Stateful", "LSTM"]
    if pick < 9:
        return rnd.choice(scalars)
    if pick == 9:
        return rnd.randint(-2 ** 40, 2 ** 40)
    if pick == 10:
        return [random_json(rnd, depth + 1) for _ in range(rnd.randrange(4))]
    return {rnd.choice(["class", "config", "layer", "file", "dtype", "shape", "x"]): random_json(rnd, depth + 1)
            for _ in range(rnd.randrange(4))}


def _slots(node, out):
    """Every (container, key) of a JSON tree."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append((node, k))
        _slots(v, out)
    return out


def edit_index(data, rnd):
    members = _members(data)
    i = next(j for j, m in enumerate(members) if m[0] == INDEX)
    index = json.loads(members[i][1])
    node, key = rnd.choice(_slots(index, []))
    op = rnd.randrange(4)
    if op == 0 and isinstance(node, dict):
        del node[key]
    elif op == 1 and isinstance(node, dict):
        node[rnd.choice(["n_threads", "hidden_size", "x", "dtype"])] = random_json(rnd)
    else:
        node[key] = random_json(rnd)
    members[i] = (INDEX, json.dumps(index).encode(), zipfile.ZIP_STORED)
    return _zip(members)


MUTATIONS = {f.__name__: f for f in (flip_bytes, truncate, random_bytes, patch_directory, restructure, edit_index)}


# ---------------------------------------------------------------------------------------- one load
def _content(obj):
    model = obj if isinstance(obj, rf.nn.Sequential) else obj.model_
    return {k: v.tobytes() for k, v in model.state_dict().items()}


def try_load(data, path, original=None, measure=True):
    """Load ``data`` written to ``path``: ("loaded" | "FormatError" | exception name, message, peak MB).

    With ``original`` (the unmutated object), a file that loads must hold the same weights. ``measure``:
    the tracemalloc peak of the load (else 0; the loop bounds every load by its process's peak RSS)."""
    with open(path, "wb") as f:
        f.write(data)
    if measure:
        tracemalloc.start()
    try:
        obj = rf.load(path)
        outcome, message = "loaded", ""
        if original is not None and _content(obj) != _content(original):
            outcome, message = "loaded-different", "a mutation the checksums cannot see changed the weights"
    except rio.FormatError as e:
        outcome, message = "FormatError", str(e)
    except Exception as e:  # noqa: BLE001 - the finding this fuzzing looks for
        outcome, message = type(e).__name__, f"{e}"[:300]
    finally:
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20 if measure else 0.0
        if measure:
            tracemalloc.stop()
    return outcome, message, peak


# ---------------------------------------------------------------------------------------- hypothesis
KINDS = ["classifier", "regressor", "tokens", "no_optimizer", "sequential"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    files = make_valid_files(str(d))
    data = {k: open(p, "rb").read() for k, p in files.items()}
    originals = {k: rf.load(p) for k, p in files.items()}
    return str(d / "case.rnnfast"), data, originals


def _check(corpus, kind, mutation, rnd, ok=("loaded", "FormatError")):
    path, data, originals = corpus
    mutated = MUTATIONS[mutation](data[kind], rnd)
    checked = originals[kind] if mutation in ("flip_bytes", "patch_directory") else None
    outcome, message, peak = try_load(mutated, path, checked)
    assert outcome in ok, (kind, mutation, outcome, message)
    assert peak < PEAK_LIMIT_MB, (kind, mutation, peak)


_FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("mutation", ["flip_bytes", "patch_directory", "restructure", "edit_index"])
@_FUZZ
@given(kind=st.sampled_from(KINDS), rnd=st.randoms(use_true_random=False))
def test_mutations(corpus, mutation, kind, rnd):
    """Byte flips (a load must hold the same weights); crafted ZIP directories (huge or wrong declared sizes,
    compression methods, flags, offsets); restructured archives (dropped, duplicated, extra, renamed or nested,
    compressed, reordered, emptied members); JSON index edits (any value replaced, removed or added)."""
    _check(corpus, kind, mutation, rnd)


@_FUZZ
@given(kind=st.sampled_from(KINDS), rnd=st.randoms(use_true_random=False))
def test_truncations(corpus, kind, rnd):
    _check(corpus, kind, "truncate", rnd, ok=("FormatError",))


@_FUZZ
@given(data=st.binary(max_size=4096), prefix=st.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY"]))
def test_random_bytes(corpus, data, prefix):
    outcome, message, _ = try_load(prefix + data, corpus[0])
    assert outcome == "FormatError", (outcome, message)


# ---------------------------------------------------------------------------------------- the long loop
def fuzz_loop(count, seed=0, save_failures=None, report_every=10000, stop=None):
    """``count`` mutated files through ``rf.load`` (fewer if ``stop()`` becomes true); returns (Counter of
    (mutation, outcome), failures)."""
    rnd = random.Random(seed)
    # files in memory where there is a tmpfs: the loop measures loads, not the disk
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as d:
        files = make_valid_files(d)
        data = {k: open(p, "rb").read() for k, p in files.items()}
        originals = {k: rf.load(p) for k, p in files.items()}
        path = os.path.join(d, "case.rnnfast")
        tally, failures, t0 = Counter(), [], time.time()
        for i in range(count):
            if stop is not None and stop():
                break
            kind, mutation = rnd.choice(KINDS), rnd.choice(sorted(MUTATIONS))
            mutated = MUTATIONS[mutation](data[kind], rnd)
            checked = originals[kind] if mutation in ("flip_bytes", "patch_directory") else None
            outcome, message, peak = try_load(mutated, path, checked, measure=False)
            bad = outcome not in ("loaded", "FormatError")
            tally[mutation, outcome] += 1
            if bad:
                failures.append((i, kind, mutation, outcome, message, peak))
                if save_failures:
                    os.makedirs(save_failures, exist_ok=True)
                    with open(os.path.join(save_failures, f"{i}-{kind}-{mutation}.rnnfast"), "wb") as f:
                        f.write(mutated)
            if report_every and (i + 1) % report_every == 0:
                with open("/proc/self/statm") as f:
                    rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
                print(f"{i + 1} files, {len(failures)} failures, {time.time() - t0:.0f} s, RSS {rss:.0f} MB",
                      file=sys.stderr, flush=True)
    return tally, failures


def main(argv=None):
    p = argparse.ArgumentParser(description="Fuzz rnnfast.load with mutated model files (a release check).")
    p.add_argument("--count", type=int, default=int(os.environ.get("RNNFAST_FUZZ_COUNT", 100000)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-failures", default=None, help="write each failing file to this directory")
    args = p.parse_args(argv)
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.time()
    stopped = []
    signal.signal(signal.SIGTERM, lambda *a: stopped.append(True))  # `timeout` ends the run with a report
    tally, failures = fuzz_loop(args.count, args.seed, args.save_failures, stop=lambda: bool(stopped))
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(f"{sum(tally.values())} mutated files (seed {args.seed}) in {time.time() - t0:.0f} s; peak RSS grew "
          f"{growth:.1f} MB over the run (a bound on every load's); {len(failures)} failures")
    for (mutation, outcome), n in sorted(tally.items()):
        print(f"  {mutation:16s} {outcome:18s} {n}")
    for f in failures[:20]:
        print("  FAILURE", f)
    return 1 if failures or growth >= PEAK_LIMIT_MB else 0


if __name__ == "__main__":
    sys.exit(main())
