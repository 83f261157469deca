"""MNIST and Fashion-MNIST through torchvision, loaded once as tensors."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from .. import hookimpl
from ..errors import DataNotFoundError
from .base import StoredDataset


def _missing(raw: Path, cls) -> bool:
    return any(not (raw / name.removesuffix(".gz")).is_file() for name, _ in cls.resources)


def damaged_idx_files(raw: Path, names: list[str]) -> list[str]:
    """Problems of the IDX files (MNIST's format: magic, sizes, then the data) that exist under `raw`.

    torchvision reports a truncated file as a missing data set; reading the header gives the size the file must
    have.
    """
    problems = []
    for name in names:
        path = raw / name
        if not path.exists():
            continue
        if not path.is_file():
            problems.append(f"{name} is not a file")
            continue
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_ITEM_SIZE or head[3] == 0:
                problems.append(f"{name} does not start with an IDX header ({size} bytes)")
                continue
            dims_raw = handle.read(4 * head[3])
        if len(dims_raw) < 4 * head[3]:
            problems.append(f"{name} is truncated ({size} bytes, shorter than its header)")
            continue
        count = 1
        for i in range(head[3]):
            count *= int.from_bytes(dims_raw[4 * i: 4 * i + 4], "big")
        expected = 4 + 4 * head[3] + count * _IDX_ITEM_SIZE[head[2]]
        if size != expected:
            problems.append(f"{name} has {size} bytes, its header says {expected}"
                            + (" (truncated)" if size < expected else ""))
    return problems


#: IDX type code -> bytes per item
_IDX_ITEM_SIZE = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


class _TorchvisionGrey28(StoredDataset):
    torchvision_name: str = ""
    num_classes = 10
    input_shape = (1, 28, 28)

    def load(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        import torchvision.datasets as tvd  # lazy: keeps `stealbench list` fast

        cls = getattr(tvd, self.torchvision_name)
        raw = Path(self.root).resolve() / self.torchvision_name / "raw"
        try:
            train = cls(self.root, train=True, download=self.download)
            test = cls(self.root, train=False, download=self.download)
        except (RuntimeError, ValueError, OSError, EOFError) as exc:
            damaged = damaged_idx_files(raw, [name.removesuffix(".gz") for name, _ in cls.resources])
            if damaged:  # torchvision says "not found" for a truncated file too; say which file and why
                raise DataNotFoundError(
                    f"{self.torchvision_name} under {raw} is damaged: {'; '.join(damaged)}. Replace the damaged "
                    f"file(s) with a good copy (e.g. from ../shared/data/{self.torchvision_name}/raw), or delete "
                    f"them and pass --data.download true on a machine with internet."
                ) from exc
            if not isinstance(exc, RuntimeError) or not _missing(raw, cls):
                raise DataNotFoundError(
                    f"{self.torchvision_name} under {raw} could not be read: {str(exc).splitlines()[0]}. "
                    f"Replace its files with a good copy, or delete them and pass --data.download true."
                ) from exc
            where = Path(self.root).resolve()
            raise DataNotFoundError(
                f"{self.torchvision_name} not found under {where} (expected {raw}). "
                f"Pass --data.root pointing at the folder that holds {self.torchvision_name}/ "
                f"(e.g. --data.root ../shared/data), or --data.download true on a machine with internet."
            ) from exc
        # .data is the whole uint8 tensor: no per-item PIL decoding
        return (train.data.unsqueeze(1).float() / 255.0, train.targets.long(),
                test.data.unsqueeze(1).float() / 255.0, test.targets.long())

    def config(self) -> dict:
        return {**super().config(), "root": self.root, "download": self.download}


class MNIST(_TorchvisionGrey28):
    """MNIST handwritten digits, 28x28 grey, 60k train / 10k test (torchvision)."""

    registry_key = "mnist"
    torchvision_name = "MNIST"
    mean = (0.1307,)
    std = (0.3081,)


class FashionMNIST(_TorchvisionGrey28):
    """Fashion-MNIST clothing images, 28x28 grey, 60k train / 10k test (torchvision)."""

    registry_key = "fashion-mnist"
    torchvision_name = "FashionMNIST"
    mean = (0.2860,)
    std = (0.3530,)


@hookimpl
def register_datasets(register):
    register("mnist", MNIST)
    register("fashion-mnist", FashionMNIST)
