"""Built-in paper reproductions, registered through the same hook a plugin uses to ship its own.

Each is a grid file with `paper:`, `utility:` and `claims:` sections (stealbench.reproduce); the small version a
`--quick` run uses sits beside it as `<stem>_quick.yaml`. The files are package data, so an installed stealbench
(not only a source checkout) can run them.
"""

from pathlib import Path

from .. import hookimpl

HERE = Path(__file__).resolve().parent


@hookimpl
def register_reproductions(register):
    register("lee2018", HERE / "lee2018.yaml",
             "Lee et al. 2018, reverse sigmoid: the abstract's claims on MNIST (+ ART CopycatCNN anchor)")
    register("lee2018_cifar10", HERE / "lee2018_cifar10.yaml",
             "Lee et al. 2018 on CIFAR-10 (a GPU machine with the data on disk)")
