"""Colour data sets and image folders, read from small synthetic files in each set's on-disk format."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from stealbench.data.colour_sets import CIFAR10, CIFAR100, GTSRB, STL10, SVHN
from stealbench.data.digits import Digits
from stealbench.data.imagefolder import ImageFolder
from stealbench.errors import ConfigError, DataNotFoundError
from stealbench.plugins import get_catalog
from stealbench.pools import load_pool, match_shape
from stealbench.testing import check_dataset

RNG = np.random.default_rng(0)


def images(n: int, c: int = 3, h: int = 32, w: int = 32) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)


def labels(n: int, k: int = 10) -> np.ndarray:
    return np.arange(n) % k  # every class present, for stratified splits


def write_cifar(root, folder, files, label_key, n, k) -> dict[str, np.ndarray]:
    (root / folder).mkdir(parents=True)
    written = {}
    for name in files:
        x = images(n)
        # the official format: one pickled dict per batch, rows of 3072 bytes (R plane, G plane, B plane)
        with open(root / folder / name, "wb") as f:
            pickle.dump({"data": x.reshape(n, -1), label_key: labels(n, k).tolist()}, f)
        written[name] = x
    return written


def test_cifar10_reads_pickled_batches_as_float_tensors(tmp_path):
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = write_cifar(tmp_path, "cifar-10-batches-py", files, "labels", 20, 10)
    train_x, train_y, test_x, test_y = CIFAR10(root=str(tmp_path)).load()
    assert train_x.shape == (100, 3, 32, 32) and train_x.dtype == torch.float32 and test_x.shape == (20, 3, 32, 32)
    assert torch.equal(train_x[:20], torch.from_numpy(written["data_batch_1"]).float() / 255)  # channel order kept
    assert torch.equal(test_x, torch.from_numpy(written["test_batch"]).float() / 255)
    assert train_y.dtype == torch.int64 and train_y[:10].tolist() == list(range(10))
    check_dataset("cifar10", kwargs={"root": str(tmp_path)})  # the conformance checks of a plugin data set


def test_cifar100_uses_fine_labels(tmp_path):
    write_cifar(tmp_path, "cifar-100-python", ["train", "test"], "fine_labels", 200, 100)
    data = CIFAR100(root=str(tmp_path))
    train_x, train_y, _, _ = data.load()
    assert data.num_classes == 100 and int(train_y.max()) == 99 and train_x.shape == (200, 3, 32, 32)


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    scipy_io = pytest.importorskip("scipy.io", reason="SVHN's .mat files need scipy")
    x = images(30)
    y = labels(30) + 1  # SVHN's classes are 1..10, where 10 is the digit 0
    for name in ("train_32x32.mat", "test_32x32.mat"):
        scipy_io.savemat(tmp_path / name, {"X": x.transpose(2, 3, 1, 0), "y": y.reshape(-1, 1)})  # (H, W, C, N)
    train_x, train_y, _, _ = SVHN(root=str(tmp_path)).load()
    assert torch.equal(train_x, torch.from_numpy(x).float() / 255)
    assert train_y.tolist() == (y % 10).tolist()


def write_ppm(path, h, w, value):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, dtype=np.uint8)).save(path)


def test_gtsrb_reads_its_folder_layout_and_resizes_to_32(tmp_path):
    base = tmp_path / "gtsrb"
    for cls in range(3):
        for i in range(4):  # varying sizes, as in the real set
            write_ppm(base / "GTSRB" / "Training" / f"{cls:05d}" / f"{cls:05d}_{i:05d}.ppm", 30 + i, 40 + 2 * i,
                      40 * cls)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i in range(6):
        write_ppm(base / "GTSRB" / "Final_Test" / "Images" / f"{i:05d}.ppm", 50, 45, 10 * i)
        rows.append(f"{i:05d}.ppm;45;50;5;5;40;45;{i % 3}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    train_x, train_y, test_x, test_y = GTSRB(root=str(tmp_path)).load()
    assert train_x.shape == (12, 3, 32, 32) and test_x.shape == (6, 3, 32, 32)
    assert train_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and test_y.tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.allclose(train_x[4], torch.full((3, 32, 32), 40 / 255))  # a flat image stays flat when resized


def test_stl10_reads_column_major_binaries(tmp_path):
    (tmp_path / "stl10_binary").mkdir()
    x = images(20, h=96, w=96)
    for split in ("train", "test"):
        # STL-10 stores each channel column-major
        (tmp_path / "stl10_binary" / f"{split}_X.bin").write_bytes(x.transpose(0, 1, 3, 2).tobytes())
        (tmp_path / "stl10_binary" / f"{split}_y.bin").write_bytes((labels(20) + 1).astype(np.uint8).tobytes())
    train_x, train_y, _, _ = STL10(root=str(tmp_path)).load()
    assert torch.equal(train_x, torch.from_numpy(x).float() / 255)
    assert train_y.tolist() == labels(20).tolist()
    (tmp_path / "stl10_binary" / "test_X.bin").write_bytes(x[:3].tobytes())  # a truncated download
    with pytest.raises(DataNotFoundError, match="test_X.bin holds .* incomplete"):
        STL10(root=str(tmp_path)).load()


@pytest.mark.parametrize("cls,expected", [(CIFAR10, "cifar-10-batches-py/data_batch_1"),
                                          (CIFAR100, "cifar-100-python/train"), (SVHN, "train_32x32.mat"),
                                          (GTSRB, "gtsrb/GTSRB/Training"), (STL10, "stl10_binary/train_X.bin")])
def test_missing_colour_set_names_the_files_and_the_fix(tmp_path, cls, expected):
    with pytest.raises(DataNotFoundError) as info:
        cls(root=str(tmp_path)).splits()
    message = str(info.value)
    assert str(tmp_path / expected) in message and "--data.download true" in message and "--data.root" in message


def test_colour_sets_are_registered():
    datasets = get_catalog().datasets
    assert {"cifar10", "cifar100", "svhn", "gtsrb", "stl10", "imagefolder"} <= set(datasets)


def write_folder(root, split, classes, per_class, size=(28, 28), mode="L"):
    from PIL import Image

    for cls in classes:
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape = size if mode == "L" else (*size, 3)
            Image.fromarray(RNG.integers(0, 256, size=shape, dtype=np.uint8), mode).save(
                root / split / cls / f"{i}.png")


def test_imagefolder_loads_pngs_with_per_instance_classes_and_shape(tmp_path):
    for split in ("train", "test"):
        write_folder(tmp_path, split, ["cat", "dog", "emu"], 6, size=(20, 24), mode="RGB")
    data = ImageFolder(root=str(tmp_path))
    assert data.num_classes == 3 and data.input_shape == (3, 20, 24) and data.classes == ["cat", "dog", "emu"]
    assert ImageFolder.__dict__.get("num_classes") is None  # per instance, not a class attribute
    train_x, train_y, test_x, _ = data.load()
    assert train_x.shape == (18, 3, 20, 24) and train_y.tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert len(data.mean) == 3 and all(0.4 < m < 0.6 for m in data.mean)  # statistics of the training images
    check_dataset("imagefolder", kwargs={"root": str(tmp_path)})

    grey = ImageFolder(root=str(tmp_path), channels=1, image_size=16)
    assert grey.input_shape == (1, 16, 16) and grey.load()[0].shape == (18, 1, 16, 16)


def test_imagefolder_errors_say_what_to_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match="DIR/train/<class>"):
        ImageFolder(root=str(tmp_path))
    write_folder(tmp_path, "train", ["a", "b"], 2)
    write_folder(tmp_path, "test", ["a"], 2)
    with pytest.raises(ConfigError, match=r"only in train/: \['b'\]"):
        ImageFolder(root=str(tmp_path))
    write_folder(tmp_path, "test", ["b"], 1, size=(30, 30))
    with pytest.raises(ConfigError, match="--data.image_size"):  # sizes differ and no size was given
        ImageFolder(root=str(tmp_path)).load()
    assert ImageFolder(root=str(tmp_path), image_size=28).load()[2].shape == (3, 3, 28, 28)
    with pytest.raises(ConfigError, match="--data.channels"):
        ImageFolder(root=str(tmp_path), channels=4)


def test_pools_mix_colour_and_grey_sets(tmp_path):
    write_cifar(tmp_path, "cifar-100-python", ["train", "test"], "fine_labels", 200, 100)
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    write_cifar(tmp_path, "cifar-10-batches-py", files, "labels", 20, 10)
    victim = CIFAR10(root=str(tmp_path))
    eval_x = victim.splits().eval_x
    pool_x, pool_y = load_pool(CIFAR100(root=str(tmp_path)), victim, eval_x)  # CIFAR-100 against CIFAR-10
    assert pool_x.shape[1:] == (3, 32, 32) and int(pool_y.max()) >= 10
    for split in ("train", "test"):
        write_folder(tmp_path / "folder", split, ["x", "y"], 10)
    folder_pool, _ = load_pool(ImageFolder(root=str(tmp_path / "folder"), channels=1), victim, eval_x)
    assert folder_pool.shape[1:] == (3, 32, 32)  # grey 28x28 images as the victim's RGB 32x32 inputs
    grey_pool, _ = load_pool(victim, Digits(), Digits().splits().eval_x)  # a colour pool against a grey victim
    assert grey_pool.shape[1:] == (1, 8, 8)
    with pytest.raises(ConfigError, match="victim's own data set"):
        load_pool(CIFAR10(root=str(tmp_path)), victim, eval_x)


def test_match_shape_turns_colour_into_luma():
    red = torch.zeros(1, 3, 4, 4)
    red[:, 0] = 1.0
    assert torch.allclose(match_shape(red, (1, 4, 4)), torch.full((1, 1, 4, 4), 0.299))
    with pytest.raises(ConfigError, match="channels"):
        match_shape(torch.rand(1, 2, 4, 4), (3, 4, 4))
