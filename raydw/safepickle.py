"""Read a pickled data file without running code from it: the one unpickler for every pickle raydw reads as data.

The CIFAR-10/100 files are pickles by design, so a file under `data.root` is a program as much as a dataset: a plain
`pickle.load` runs whatever callable the file names (`os.system`, ...). This unpickler admits only what those files
hold: dicts, lists, strings, bytes, numbers and numpy arrays (rebuilt through numpy's own array constructors). Any
other global a file names is refused before it is called, and the file is named with the global. Torch-free.
Model weights are not read here: they go through `torch.load(weights_only=True)` (raydw.models.convert, --trust).
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

# The callables a pickled numpy array or scalar names (numpy 1 and 2 spell the module differently), and the one
# Python 3 uses to pickle bytes under protocol 2. Nothing else: no builtins (getattr, eval), no module functions.
ALLOWED = frozenset({
    *((m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray") for n in ("_reconstruct", "scalar")),
    *((m, "_frombuffer") for m in ("numpy.core.numeric", "numpy._core.numeric")),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),
})


class UnsafePickleError(ValueError):
    """A pickled data file names something that could run code; it was not loaded."""


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, fh, path: str, **kw):
        super().__init__(fh, **kw)
        self._path = path

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._path}: refused: the pickle names {module}.{name}, which a data file does not need and which could "
            "run code; raydw reads pickled data files with numpy arrays, lists, dicts, strings and numbers only. "
            "Replace the file with the real one (`raydw data prepare` / `raydw data verify`)")

    def persistent_load(self, pid):  # a protocol feature data files never use
        raise UnsafePickleError(f"{self._path}: refused: the pickle holds a persistent id, which a data file does not")


def load(path: str | Path, encoding: str = "latin1"):
    """The object pickled in `path`, or UnsafePickleError naming the file and the global it refused (or ValueError
    for a damaged pickle). `encoding`: how Python 2 str were pickled (the real CIFAR files: latin1)."""
    with open(path, "rb") as fh:
        return loads_from(fh, str(path), encoding)


def loads(data: bytes, what: str = "<bytes>", encoding: str = "latin1"):
    return loads_from(io.BytesIO(data), what, encoding)


def loads_from(fh, what: str, encoding: str):
    try:
        return _DataUnpickler(fh, what, encoding=encoding).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, KeyError, TypeError,
            ValueError, MemoryError) as e:
        raise ValueError(f"{what}: not a readable pickle ({type(e).__name__}: {str(e)[:200]})") from None
