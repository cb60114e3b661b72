"""TORCH_CUDA_ARCH_LIST made readable for DeepSpeed's op builder (jobs/train/cuda_archs.py):
the rule, the job applying it before anything else, the image build's script form, and
DeepSpeed's own parser failing on the raw list and reading the rewritten one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from longreach.contract.errors import BAD_INPUT_EXIT_CODE, InputError
from longreach.jobs.train import cuda_archs
from longreach.jobs.train.__main__ import readable_archs

from .helpers import make_setup, progress, run

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("raw", "readable"),
    [
        ("9.0a", "9.0"),
        ("8.0;8.6;9.0a", "8.0;8.6;9.0"),
        ("7.5 8.0 9.0a+PTX", "7.5;8.0;9.0+PTX"),
        ("10.0f;12.0a;9.0", "9.0;10.0;12.0"),  # ascending by number, not by text
        ("9.0;9.0a+PTX;9.0a", "9.0+PTX"),  # one entry per architecture, +PTX kept
        ("Hopper", "9.0+PTX"),
        ("Ampere+Tegra;Ampere", "8.0;8.6+PTX;8.7"),
        ("8.0+ptx", "8.0+PTX"),
        ("  8.0 ;; 9.0  ", "8.0;9.0"),
        ("8.0;9.0+PTX", "8.0;9.0+PTX"),
        ("", ""),
    ],
)
def test_normalise(raw: str, readable: str) -> None:
    assert cuda_archs.normalise(raw) == readable


@pytest.mark.unit
@pytest.mark.parametrize("raw", ["9", "sm_90", "9.0b", "Hoper", "9.0;native"])
def test_an_unreadable_entry_is_named(raw: str) -> None:
    with pytest.raises(ValueError, match=r"TORCH_CUDA_ARCH_LIST: '.+' is not a CUDA architecture"):
        cuda_archs.normalise(raw)


@pytest.mark.unit
def test_the_job_rewrites_only_what_deepspeed_cannot_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    environ = {"TORCH_CUDA_ARCH_LIST": "8.0;9.0a", "OTHER": "x"}
    readable_archs(environ)
    assert environ == {"TORCH_CUDA_ARCH_LIST": "8.0;9.0", "OTHER": "x"}
    assert "TORCH_CUDA_ARCH_LIST='8.0;9.0a' read as '8.0;9.0'" in capsys.readouterr().out
    for untouched in ({"TORCH_CUDA_ARCH_LIST": "8.0;9.0+PTX"}, {}):
        before = dict(untouched)
        readable_archs(untouched)
        assert untouched == before
    with pytest.raises(InputError, match="'Hoper' is not a CUDA architecture"):
        readable_archs({"TORCH_CUDA_ARCH_LIST": "Hoper"})


@pytest.mark.unit
def test_the_image_build_runs_it_as_a_script_before_the_package_is_installed() -> None:
    # As images/trainer/Dockerfile does: by path, with no longreach package importable.
    script = REPO / "jobs" / "train" / "cuda_archs.py"
    r = subprocess.run(
        [sys.executable, "-P", "-S", "-I", str(script), "8.0;8.6;9.0a;10.0f+PTX"],
        capture_output=True, text=True, timeout=60, cwd="/",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "8.0;8.6;9.0;10.0+PTX"
    dockerfile = (REPO / "images" / "trainer" / "Dockerfile").read_text()
    assert "jobs/train/cuda_archs.py" in dockerfile


@pytest.mark.integration
def test_deepspeed_reads_the_rewritten_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """DeepSpeed's fused Adam builder, in both its modes: the pre-compile (image build) and
    the JIT one (first training step), fails on the raw list and reads the rewritten one."""
    from deepspeed.ops.op_builder.fused_adam import FusedAdamBuilder

    raw = "8.0;9.0a"
    readable = cuda_archs.normalise(raw)
    builder = FusedAdamBuilder()
    for jit in (False, True):
        builder.jit_mode = jit
        for value in (raw, readable):
            # DeepSpeed rewrites the variable itself: monkeypatch restores it afterwards.
            monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", value)
            builder._jit_arch_list = value if jit else None
            if value == raw:
                with pytest.raises(ValueError, match="invalid literal for int"):
                    builder.compute_capability_args()
                continue
            args = builder.compute_capability_args()
            if jit:  # PyTorch makes the flags from the variable DeepSpeed leaves behind
                assert args == [] and os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0+PTX"
            else:
                assert "-gencode=arch=compute_90,code=sm_90" in args


@pytest.mark.integration
def test_an_unreadable_list_fails_the_job_as_bad_input(
    tmp_path: Path, tiny_model: Path, vocab_size: int
) -> None:
    setup = make_setup(str(tmp_path / "store"), tmp_path, tiny_model, vocab_size)
    setup.env["TORCH_CUDA_ARCH_LIST"] = "Hoper;9.0"
    proc = run(setup, timeout=120)
    assert proc.returncode == BAD_INPUT_EXIT_CODE, proc.stderr[-2000:]
    assert "'Hoper' is not a CUDA architecture" in proc.stderr.strip().splitlines()[-1]
    report = progress(setup)
    assert report.state == "failed" and "TORCH_CUDA_ARCH_LIST" in report.error
