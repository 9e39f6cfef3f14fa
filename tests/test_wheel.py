"""The built wheel is the whole tool: installed outside the checkout, it finds its shipped
spaces, device profiles and predictors (nas.catalog, importlib.resources) and runs an
experiment from an empty folder.

No network: the wheel is built with this environment's setuptools (--no-build-isolation),
and the fresh venv sees this environment's libraries (its site-packages folders on
sys.path, pip included) through a .pth file. Folders a .pth adds are not site folders, so
the .pth files in them, like the editable install of this checkout, stay inactive there
(the test checks that nas is imported from the new venv).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "nas", "search_spaces", "latency_luts", "predictors")
TINY = {
    "name": "wheel", "seed": 0, "threads": 1, "space": "tiny_mbconv",
    "dataset": {"source": "digits", "test_fraction": 0.9},
    "devices": {"local-cpu": {"latency": {"profile": {"warmup": 1, "repeats": 5, "rounds": 1, "passes": 1,
                                                      "calibrate": 0}}},
                "pi4-ort": {"latency": {"like": "local-cpu"}, "energy": "analytic"}},
    "objectives": ["max accuracy"],
    "budgets": ["latency@local-cpu <= 100 ms", "energy@pi4-ort <= 500 mJ"],
    "accuracy": {"supernet": {"split": "val", "calib_images": 16}},
    "train": {"epochs": 1, "batch_size": 32, "calib_images": 16, "sampling": {"random_subnets": 0}},
    "search": {"controller": {"name": "random"}, "budget": 2},
    "export": False,
}


def clean_env() -> dict[str, str]:
    """This process's environment without what would point the new venv back at the checkout."""
    drop = ("PYTHONPATH", "HWNAS_SPACES", "HWNAS_LUTS", "HWNAS_PREDICTORS")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run(*cmd: str | Path, cwd: Path) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}): {proc.stderr[-3000:]}"
    return proc.stdout


def build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the checkout (a stray profiled LUT included, which must not ship)."""
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(REPO / name, src / name)
    (src / "latency_luts" / "local-cpu" / "tiny_mbconv.csv").write_text("key\n")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "-w", tmp / "dist", src, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("hwnas-*.whl")
    return wheel


def fresh_venv(folder: Path, wheel: Path) -> Path:
    """A venv outside the checkout with the wheel installed; its libraries are this environment's."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=folder).strip())
    ours = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    (site / "zz_libraries.pth").write_text("".join(f"{p}\n" for p in ours))
    run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
        "--ignore-installed", wheel, cwd=folder)
    return python


def test_the_wheel_installed_elsewhere_lists_the_shipped_data_and_runs_an_experiment(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"nas/_shipped/{p.relative_to(REPO).as_posix()}"
               for p in [*REPO.glob("search_spaces/**/*.yaml"), *REPO.glob("latency_luts/*/device.yaml"),
                         *REPO.glob("predictors/*/*.npz"), *REPO.glob("predictors/*/*.json")]}
    assert {"nas/_shipped/search_spaces/reference/mobilenetv2.yaml", "nas/_shipped/latency_luts/local-cpu/device.yaml",
            "nas/_shipped/predictors/edgegpu/nb201_latency.npz", "nas/_shipped/predictors/reference/nb201.json",
            "nas/space/nb201_order.npy"} <= names
    assert shipped <= names, sorted(shipped - names)
    assert not [n for n in names if n.endswith(".csv")]  # a LUT profiled here belongs to this machine
    packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "nas").rglob("__init__.py")}
    assert {f"{p}/__init__.py" for p in packages} <= names, "a package of nas/ is missing from pyproject's list"

    python = fresh_venv(tmp_path / "venv", wheel)
    empty = tmp_path / "empty"
    empty.mkdir()
    where = run(python, "-c", "import nas; print(nas.__file__)", cwd=empty)
    assert Path(where.strip()).is_relative_to(tmp_path / "venv")
    hwnas = tmp_path / "venv" / "bin" / "hwnas"
    spaces = run(hwnas, "space", "list", cwd=empty)
    assert {"tiny_mbconv", "nb201", "ofa_mbv3", "mobilenetv2"} <= {line.split()[0] for line in spaces.splitlines()[1:]}
    devices = json.loads(run(hwnas, "devices", "list", "--json", cwd=empty))
    assert {d["name"] for d in devices} == {p.parent.name for p in REPO.glob("latency_luts/*/device.yaml")}

    (empty / "wheel.yaml").write_text(yaml.safe_dump(TINY))
    run(hwnas, "run", "wheel.yaml", "--runs", "runs", "--quiet", cwd=empty)
    (run_dir,) = (empty / "runs").glob("wheel-*")
    assert (run_dir / "report.html").is_file()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    assert json.loads((run_dir / "environment.json").read_text())["hwnas_commit"] is None  # no checkout here
    installed = Path(where.strip()).parent
    assert not list(installed.rglob("*.csv"))  # the profiled LUT went to the run, not into the package
