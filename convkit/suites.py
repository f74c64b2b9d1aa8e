"""The named suites of ``convkit bench`` and asv: layers as case spec strings.

Each layer is written as the ``--case`` spec that :func:`convkit.cases.parse_case` reads, so
a suite's layer can be timed on its own by pasting its spec. This module is plain data and
imports nothing: asv reads the case names from the checkout's copy of it while an older
commit of convkit is installed (``benchmarks/common.py``).
"""

#: Small layers: the whole suite, all backends, runs in about a minute on 2 cores.
QUICK: tuple[str, ...] = (
    "name=rgb32-3x3,n=8,c=3,o=16,hw=32,k=3,p=1",
    "name=mnist28-5x5,n=16,c=1,o=8,hw=28,k=5",
    "name=dense28-3x3,n=4,c=32,o=32,hw=28,k=3,p=1",
    "name=strided28-3x3,n=4,c=32,o=64,hw=28,k=3,s=2,p=1",
    "name=pointwise28-1x1,n=4,c=64,o=64,hw=28,k=1",
    "name=depthwise28-3x3,n=4,c=64,o=64,hw=28,k=3,p=1,g=64",
)

#: Layers people run: ResNet-style 3x3 blocks, a strided 3x3, a pointwise 1x1, a depthwise
#: 3x3, the 7x7 stride-2 stem, and the small RGB and MNIST layers of from-scratch tutorials.
STANDARD: tuple[str, ...] = (
    "name=resnet56-3x3-64,n=8,c=64,o=64,hw=56,k=3,p=1",
    "name=resnet28-3x3-128,n=8,c=128,o=128,hw=28,k=3,p=1",
    "name=resnet14-3x3-256,n=8,c=256,o=256,hw=14,k=3,p=1",
    "name=strided56-3x3-64to128,n=8,c=64,o=128,hw=56,k=3,s=2,p=1",
    "name=pointwise28-1x1-128to256,n=8,c=128,o=256,hw=28,k=1",
    "name=depthwise56-3x3-128,n=8,c=128,o=128,hw=56,k=3,p=1,g=128",
    "name=stem224-7x7-s2,n=2,c=3,o=64,hw=224,k=7,s=2,p=3",
    "name=cifar32-3x3-3to32,n=32,c=3,o=32,hw=32,k=3,p=1",
    "name=mnist28-3x3-1to32,n=32,c=1,o=32,hw=28,k=3",
)

#: Layers where the algorithm decides: large dense kernels (where an FFT's cost, which hardly
#: depends on the kernel size, wins), ConvNeXt's 7x7 and RepLKNet's 31x31 depthwise layers,
#: and ResNet's 3x3 layers at batch 1 (Winograd's fewer multiplications, little parallelism).
KERNELS: tuple[str, ...] = (
    "name=dense28-7x7-64,n=8,c=64,o=64,hw=28,k=7,p=3",
    "name=dense28-11x11-64,n=8,c=64,o=64,hw=28,k=11,p=5",
    "name=dense32-15x15-32,n=4,c=32,o=32,hw=32,k=15,p=7",
    "name=depthwise56-7x7-96,n=8,c=96,o=96,hw=56,k=7,p=3,g=96",
    "name=depthwise56-31x31-128,n=8,c=128,o=128,hw=56,k=31,p=15,g=128",
    "name=b1-resnet56-3x3-64,n=1,c=64,o=64,hw=56,k=3,p=1",
    "name=b1-resnet28-3x3-128,n=1,c=128,o=128,hw=28,k=3,p=1",
    "name=b1-resnet14-3x3-256,n=1,c=256,o=256,hw=14,k=3,p=1",
)

SUITES: dict[str, tuple[str, ...]] = {"quick": QUICK, "standard": STANDARD, "kernels": KERNELS}
