"""tests/_source_tree.py: an uncompiled checkout root leaves sys.path; a built one (or any other entry) stays."""
import importlib.machinery
import os

from _source_tree import has_built_kernels, without_unbuilt_source_tree  # tests/, put on sys.path by conftest.py


def _checkout(tmp_path, built):
    kernels = tmp_path / "rnnfast" / "_kernels"
    kernels.mkdir(parents=True)
    (kernels / "_recurrent.pyx").write_text("")
    if built:
        (kernels / ("_recurrent" + importlib.machinery.EXTENSION_SUFFIXES[0])).write_bytes(b"")
    return str(tmp_path)


def test_unbuilt_root_is_dropped_in_every_spelling(tmp_path, monkeypatch):
    root = _checkout(tmp_path, built=False)
    monkeypatch.chdir(root)
    paths = ["", root, root + os.sep, os.curdir, "/elsewhere", os.path.dirname(root)]
    assert not has_built_kernels(root)
    assert without_unbuilt_source_tree(paths, root) == ["/elsewhere", os.path.dirname(root)]


def test_built_root_stays(tmp_path):
    root = _checkout(tmp_path, built=True)
    paths = ["", root, "/elsewhere"]
    assert has_built_kernels(root) and without_unbuilt_source_tree(paths, root) == paths


def test_this_run_imports_a_compiled_rnnfast():
    import rnnfast
    from rnnfast._kernels import _recurrent

    assert _recurrent.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert os.path.dirname(os.path.dirname(_recurrent.__file__)) == os.path.dirname(rnnfast.__file__)
