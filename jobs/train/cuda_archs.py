"""TORCH_CUDA_ARCH_LIST in the form DeepSpeed's op builder reads.

PyTorch accepts architecture-specific suffixes (`9.0a`, `10.0f`) and names (`Hopper`,
`Ampere+Tegra`); DeepSpeed 0.19's builder turns each entry into `int(major), int(minor)` and
fails on them (`invalid literal for int() with base 10: '0a'`) the moment it JIT-compiles an
op, e.g. fused Adam at the first training step. Some CUDA images export such a list. The train
job rewrites the variable before DeepSpeed starts, and the trainer image's build runs this file
as a script on its TORCH_CUDA_ARCH_LIST before pre-compiling the ops, so both read one rule.
The plain compute capability is what DeepSpeed's Adam kernels need: code for `sm_90` runs on
every 9.0 device; the `a`/`f` variants only add instructions those kernels do not use.

Standard library only: the image build runs it before the package is installed.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping

VARIABLE = "TORCH_CUDA_ARCH_LIST"
# PyTorch's named architectures (torch.utils.cpp_extension._get_cuda_arch_flags), combined
# names first so that `Ampere+Tegra` is not read as `Ampere`.
NAMED = {
    "kepler+tesla": "3.7",
    "kepler": "3.5+PTX",
    "maxwell+tegra": "5.3",
    "maxwell": "5.0;5.2+PTX",
    "pascal": "6.0;6.1+PTX",
    "volta+tegra": "7.2",
    "volta": "7.0+PTX",
    "turing": "7.5+PTX",
    "ampere+tegra": "8.7",
    "ampere": "8.0;8.6+PTX",
    "ada": "8.9+PTX",
    "hopper": "9.0+PTX",
    "blackwell+tegra": "11.0",
    "blackwell": "10.0;10.3;12.0;12.1+PTX",
    "rubin": "10.7+PTX",
}
# major.minor, an optional architecture-specific (a) or family (f) suffix, optional +PTX.
ENTRY = re.compile(r"(\d+)\.(\d+)[af]?(\+PTX)?", re.IGNORECASE)


def normalise(value: str) -> str:
    """`value` with names expanded and suffixes dropped, deduplicated, in ascending order;
    an architecture keeps `+PTX` when any of its entries had it. Empty stays empty.

    Raises ValueError naming an entry that is not a CUDA architecture."""
    archs: dict[tuple[int, int], bool] = {}
    for entry in re.split(r"[;\s]+", value.strip()):
        if not entry:
            continue
        for part in NAMED.get(entry.lower(), entry).split(";"):
            match = ENTRY.fullmatch(part)
            if match is None:
                raise ValueError(
                    f"{VARIABLE}: {entry!r} is not a CUDA architecture; use compute "
                    "capabilities such as '8.0;9.0' or names such as 'Hopper'"
                )
            arch = (int(match.group(1)), int(match.group(2)))
            archs[arch] = archs.get(arch, False) or match.group(3) is not None
    return ";".join(f"{ma}.{mi}{'+PTX' if ptx else ''}" for (ma, mi), ptx in sorted(archs.items()))


def environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variable to set in `environ` so that DeepSpeed can read it: empty when it is
    unset or already readable."""
    value = environ.get(VARIABLE)
    if value is None:
        return {}
    readable = normalise(value)
    return {} if readable == value else {VARIABLE: readable}


if __name__ == "__main__":  # the trainer image's build: print the readable list
    print(normalise(sys.argv[1]))
