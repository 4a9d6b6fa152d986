"""The tutorial notebooks: stored without outputs, in sync with their generator, and each
one runs top to bottom (with nbclient, on the tiny settings of `MMKERAS_QUICK=1`)."""

import importlib.util
import os
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks extra is not installed")
nbclient = pytest.importorskip("nbclient", reason="the notebooks extra is not installed")

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
NAMES = [p.name for p in NOTEBOOKS]
EXPECTED = ["01_quickstart.ipynb", "02_fusion_zoo.ipynb", "03_ensembles.ipynb",
            "04_robustness_and_attention.ipynb", "05_explain.ipynb"]


def _generator():
    spec = importlib.util.spec_from_file_location("build_notebooks", NOTEBOOK_DIR / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_notebook_is_committed():
    assert NAMES == EXPECTED
    assert sorted(_generator().NOTEBOOKS) == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code
    for cell in code:
        assert cell.outputs == [], f"{path.name} cell {cell.id} has outputs"
        assert cell.execution_count is None, f"{path.name} cell {cell.id} has an execution count"
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_matches_generator(path):
    """The .ipynb equals what notebooks/build_notebooks.py writes: edit the generator, rerun it."""
    built = nbformat.writes(_generator().build(path.name))
    assert path.read_text(encoding="utf-8") == built + "\n", (
        f"{path.name} is out of date: run `python notebooks/build_notebooks.py`")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_parameters_cell_comes_first(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    for name in ("QUICK", "DATA", "DATA_OPTIONS", "DATA_DIR", "EPOCHS", "BATCH_SIZE"):
        assert f"{name} = " in code[0].source, f"{path.name}: parameters cell lacks {name}"


def test_kernel_is_this_interpreter():
    """The `python3` kernel the notebooks name runs this environment's Python (a fresh
    install needs no `ipykernel install` step: ipykernel ships the spec under sys.prefix)."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    executable = spec.argv[0]
    if executable == "python":  # the native spec: the kernel uses sys.executable
        executable = sys.executable
    assert pathlib.Path(executable).resolve() == pathlib.Path(sys.executable).resolve()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_runs(path, tmp_path, monkeypatch):
    """Executes every cell in a fresh kernel on tiny synthetic data; any error fails.

    The kernel starts in a temporary folder (exports go to temporary folders too), so
    nothing is written into the repository.
    """
    monkeypatch.setenv("MMKERAS_QUICK", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's tempfile (exports) lands here too
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # The plots render: every notebook draws at least one figure.
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} drew no figure"
