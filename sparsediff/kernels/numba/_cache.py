"""Where sparsediff's compiled Numba kernels are cached: outside the package.

Numba's default for ``cache=True`` writes the compiled code into the
``__pycache__`` folder next to the source whenever that folder is writable,
that is, into ``site-packages/sparsediff`` for a non-editable install. Files
that the installer did not put there outlive ``pip uninstall``, and the folder
they keep alive turns ``sparsediff`` into a namespace package for the next
install (``cannot import name '__version__' from 'sparsediff'``).

Importing this module puts one more locator in Numba's list, right after the
one for ``NUMBA_CACHE_DIR`` (so that variable still wins): for source files
inside the sparsediff package only, the cache goes to ``sparsediff/numba``
under the user's cache directory (``$XDG_CACHE_HOME`` or ``~/.cache`` on
Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows), one
sub-folder per installed copy. Every module with ``cache=True`` kernels imports
it before defining them. Where Numba's internals differ from what is expected
here, or the user cache directory is not writable, Numba's own locators apply
unchanged; nothing is printed or logged either way.
"""

import os
import sys

__all__ = ["PACKAGE_DIR", "cache_dir", "install"]

#: The installed ``sparsediff`` package folder (real path).
PACKAGE_DIR = os.path.realpath(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

_installed = None


def cache_dir():
    """The folder under which sparsediff's kernels are cached by default."""
    try:
        from numba.misc.appdirs import AppDirs

        base = AppDirs(appname="sparsediff", appauthor=False).user_cache_dir
    except Exception:  # numba without its vendored appdirs
        if sys.platform == "win32":
            root = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
        elif sys.platform == "darwin":
            root = os.path.expanduser("~/Library/Caches")
        else:
            root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        base = os.path.join(root, "sparsediff")
    return os.path.join(base, "numba")


def _inside_package(py_file):
    try:
        path = os.path.realpath(py_file)
    except (OSError, ValueError):
        return False
    return path.startswith(PACKAGE_DIR + os.sep)


def _make_locator(base):
    class SparsediffCacheLocator(base):
        """Numba's user-wide locator, rooted at :func:`cache_dir`, for
        sparsediff's own source files only."""

        def __init__(self, py_func, py_file):
            super().__init__(py_func, py_file)
            self._cache_path = os.path.join(
                cache_dir(), self.get_suitable_cache_subpath(py_file))

        def get_cache_path(self):
            return self._cache_path

        @classmethod
        def from_function(cls, py_func, py_file):
            if not _inside_package(py_file):
                return None
            return super().from_function(py_func, py_file)

    return SparsediffCacheLocator


def install():
    """Insert the locator in Numba's list (once); returns whether it is in use.

    Never raises: on an unexpected Numba the default locators stay as they are.
    """
    global _installed
    if _installed is not None:
        return _installed
    _installed = False
    try:
        from numba.core import caching

        impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl
        user_wide = (getattr(caching, "UserWideCacheLocator", None)
                     or caching._UserWideCacheLocator)
        provided = (getattr(caching, "UserProvidedCacheLocator", None)
                    or getattr(caching, "_UserProvidedCacheLocator", None))
        classes = impl._locator_classes
        if not isinstance(classes, list):
            return _installed
        locator = _make_locator(user_wide)
        # after NUMBA_CACHE_DIR's locator, before the in-tree one
        where = classes.index(provided) + 1 if provided in classes else 0
        classes.insert(where, locator)
        _installed = True
    except Exception:  # a Numba whose caching internals differ: keep its defaults
        _installed = False
    return _installed


install()
