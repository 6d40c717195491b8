"""Keep an uncompiled source tree from shadowing the installed rnnfast.

``python -m pytest tests/`` run from the checkout root puts the root on ``sys.path`` (``python -m`` adds the
current folder), where ``rnnfast/`` has no compiled kernels unless they were built in place
(``pip install -e .``, or the kernel copied in): importing it would fail instead of testing the installed
package. ``bench/conftest.py`` applies the same rule to ``python -m pytest bench/``.
"""
import importlib.machinery
import os


def has_built_kernels(root):
    """Whether ``root/rnnfast/_kernels`` holds the compiled ``_recurrent`` extension for this interpreter."""
    kernels = os.path.join(root, "rnnfast", "_kernels")
    return any(os.path.exists(os.path.join(kernels, "_recurrent" + suffix))
               for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def without_unbuilt_source_tree(paths, root):
    """``paths`` (a ``sys.path``) without the entries naming ``root`` ("" is the current folder) when the
    checkout at ``root`` has no built kernels; unchanged otherwise."""
    if has_built_kernels(root):
        return list(paths)
    root = os.path.abspath(root)
    return [p for p in paths if os.path.abspath(p or os.curdir) != root]
