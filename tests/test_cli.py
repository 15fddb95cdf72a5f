"""The ``graphopt`` console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import graphopt
from graphopt.cli import main

pytestmark = pytest.mark.usefixtures("restore_threads")


def test_version_flag(capsys):
    try:
        main(["--version"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert capsys.readouterr().out.strip() == f"graphopt {graphopt.__version__}"


def test_plugins_lists_builtins_with_their_distribution(capsys):
    assert main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    expected = [
        {
            "kind": e.kind,
            "name": e.name,
            "plugin": e.plugin,
            "distribution": e.distribution,
            "version": e.version,
            "object": e.reference,
        }
        for e in graphopt.registry.entries()
    ]
    assert listing["entries"] == expected
    assert listing["failures"] == []


def test_plugins_table_has_header_and_one_row_per_entry(capsys):
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["KIND", "NAME", "PLUGIN", "DISTRIBUTION", "VERSION"]
    assert len(lines) - 1 == len(graphopt.registry.entries())


def test_console_script_is_installed():
    exe = str(Path(sys.executable).parent / "graphopt")
    if not Path(exe).exists():
        exe = shutil.which("graphopt") or exe
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert graphopt.__version__ in out.stdout


# -- a user's mistake is one line and exit 2, never a traceback ------------------------------


def covariance(p: int = 5) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((8 * p, p))
    return np.cov(x, rowvar=False, bias=True)


def fail(capsys, argv: list[str]) -> str:
    """Run the CLI expecting a user error: exit 2, one ``graphopt: error:`` line."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("graphopt: error: ") and "\n" not in err, err
    assert "Traceback" not in err and "allow_pickle" not in err and "usecols" not in err
    return err.removeprefix("graphopt: error: ")


def damaged_files(folder: Path) -> dict[str, Path]:
    """One file per way a matrix file can be broken."""
    s = covariance()
    np.save(folder / "good.npy", s)
    raw = (folder / "good.npy").read_bytes()
    files = {
        "empty": folder / "empty.npy",
        "truncated_npy": folder / "short.npy",
        "corrupted_header": folder / "header.npy",
        "not_numpy": folder / "text.npy",
        "pickled": folder / "objects.npy",
        "truncated_npz": folder / "short.npz",
        "sparse_missing_member": folder / "missing.npz",
        "pickled_npz": folder / "objects.npz",
        "folder": folder / "a_folder.npy",
    }
    files["empty"].write_bytes(b"")
    files["truncated_npy"].write_bytes(raw[:-16])
    files["corrupted_header"].write_bytes(raw[:10] + b"{'descr': <f8 garbage" + raw[31:])
    files["not_numpy"].write_bytes(b"hello, this is not numpy")
    np.save(files["pickled"], np.array([1, "a", None], dtype=object), allow_pickle=True)
    np.savez(folder / "whole.npz", a=s)
    whole = (folder / "whole.npz").read_bytes()
    files["truncated_npz"].write_bytes(whole[: len(whole) // 2])
    sp.save_npz(folder / "sparse.npz", sp.csr_array(np.abs(s)))
    with (
        zipfile.ZipFile(folder / "sparse.npz") as full,
        zipfile.ZipFile(files["sparse_missing_member"], "w") as partial,
    ):
        for member in full.namelist():
            if member != "indptr.npy":
                partial.writestr(member, full.read(member))
    np.savez(files["pickled_npz"], a=np.array([1, "x"], dtype=object))
    files["folder"].mkdir()
    return files


NPY_CASES = ["empty", "truncated_npy", "corrupted_header", "not_numpy", "pickled", "folder"]
NPZ_CASES = ["empty", "truncated_npz", "sparse_missing_member", "pickled_npz", "folder"]


@pytest.mark.parametrize("case", NPY_CASES)
def test_solve_names_a_damaged_input_file(tmp_path, capsys, case):
    bad = damaged_files(tmp_path)[case]
    message = fail(capsys, ["solve", "ggm", bad, "--lam", "0.1", "--quiet"])
    assert message.startswith(f"{bad}: ")


@pytest.mark.parametrize("case", sorted(set(NPY_CASES + NPZ_CASES)))
def test_eigen_names_a_damaged_input_file(tmp_path, capsys, case):
    bad = damaged_files(tmp_path)[case]
    message = fail(capsys, ["eigen", bad, "-k", "2", "--out", tmp_path / "pairs.npz"])
    assert message.startswith(f"{bad}: ")
    assert not (tmp_path / "pairs.npz").exists()


def test_pickled_data_is_refused_in_plain_words(tmp_path, capsys):
    bad = damaged_files(tmp_path)["pickled"]
    message = fail(capsys, ["solve", "ggm", bad, "--lam", "0.1"])
    assert "Python objects" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1,2,3\n4,abc,6\n7,8,9\n", "could not convert string 'abc'"),
        ("1,2,3\n4,5\n", "number of columns changed"),
        ("a,b\n", "holds no numbers"),
        ("1,nan\nnan,1\n", "NaN or infinite"),
    ],
)
def test_csv_errors_name_the_file(tmp_path, capsys, text, expected):
    path = tmp_path / "data.csv"
    path.write_text(text)
    message = fail(capsys, ["solve", "ggm", path, "--lam", "0.1", "--quiet"])
    assert message.startswith(f"{path}: ") and expected in message


def test_binary_csv_and_broken_groups_json_name_their_file(tmp_path, capsys):
    np.save(tmp_path / "s.npy", covariance())
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    assert fail(capsys, ["solve", "ggm", binary, "--lam", "0.1"]).startswith(f"{binary}: ")
    groups = tmp_path / "groups.json"
    groups.write_text("[[[0, 1]],")
    message = fail(capsys, ["solve", "ggm", tmp_path / "s.npy", "--lam", "0.1", "--groups", groups])
    assert message.startswith(f"{groups}: invalid JSON")


def test_output_never_overwrites_the_input(tmp_path, capsys):
    source = tmp_path / "S.npy"
    np.save(source, covariance())
    before = source.read_bytes()
    message = fail(capsys, ["solve", "ggm", source, "--lam", "0.1", "-o", source])
    assert message.startswith(f"--output {source}: is also the input")
    assert source.read_bytes() == before
    relative = os.path.relpath(source)  # the same file spelled differently
    assert "is also the input" in fail(
        capsys, ["solve", "ggm", source, "--lam", "0.1", "-o", relative]
    )


def test_outputs_never_overwrite_each_other(tmp_path, capsys):
    source = tmp_path / "S.npy"
    np.save(source, covariance())
    precision = tmp_path / "P.json"  # the default report is OUTPUT with .json: the same file
    message = fail(capsys, ["solve", "ggm", source, "--lam", "0.1", "-o", precision])
    assert message == f"--report {precision}: is also --output; choose another output path"
    assert not precision.exists()
    plot = tmp_path / "P.npy"
    assert "is also --output" in fail(
        capsys, ["solve", "ggm", source, "--lam", "0.1", "-o", plot, "--plot", plot]
    )
    sp.save_npz(tmp_path / "A.npz", sp.csr_array(np.abs(covariance())))
    out = tmp_path / "pairs.npz"
    assert "is also --out" in fail(
        capsys, ["eigen", tmp_path / "A.npz", "-k", "2", "--out", out, "--report", out]
    )
    assert "is also the input MATRIX" in fail(
        capsys, ["eigen", tmp_path / "A.npz", "-k", "2", "--out", tmp_path / "A.npz"]
    )


def test_output_paths_that_cannot_be_written_are_refused_before_solving(
    tmp_path, capsys, monkeypatch
):
    source = tmp_path / "S.npy"
    np.save(source, covariance())
    folder = tmp_path / "out"
    folder.mkdir()
    assert "is a folder" in fail(capsys, ["solve", "ggm", source, "--lam", "0.1", "-o", folder])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    message = fail(capsys, ["solve", "ggm", source, "--lam", "0.1", "-o", blocker / "P.npy"])
    assert message.endswith(f"{blocker} is a file, not a folder")
    import graphopt.cli.files as files

    real_access = os.access
    monkeypatch.setattr(
        files.os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode)
    )
    message = fail(capsys, ["solve", "ggm", source, "--lam", "0.1", "-o", folder / "P.npy"])
    assert message == f"--output {folder / 'P.npy'}: cannot write in {folder} (permission denied)"


def test_a_write_that_fails_names_the_file(tmp_path, capsys, monkeypatch):
    """Root ignores permissions, so a read-only folder is simulated at the write."""
    import graphopt.io

    source = tmp_path / "S.npy"
    np.save(source, covariance())

    def denied(path, write):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(graphopt.io, "atomic_write", denied)
    target = tmp_path / "P.npy"
    message = fail(capsys, ["solve", "ggm", source, "--lam", "0.1", "-o", target, "--quiet"])
    assert message == f"{target}: Permission denied"


def test_a_missing_device_is_named(tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "S.npy", covariance())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = fail(capsys, ["solve", "ggm", tmp_path / "S.npy", "--lam", "0.1", "--device", "cuda"])
    assert message.startswith("--device: ") and "no cuda device" in message
    message = fail(capsys, ["solve", "ggm", tmp_path / "S.npy", "--lam", "0.1", "--device", "gpu0"])
    assert message.startswith("--device: device must be a torch device")


@pytest.mark.parametrize(
    ("options", "label"),
    [
        (["--lam", "nan"], "--lam"),
        (["--lam", "-1"], "--lam"),
        (["--lam", "0.1", "--tol", "0"], "--tol"),
        (["--lam", "0.1", "--max-iter", "0"], "--max-iter"),
        (["--lam", "0.1", "--penalty", "scad"], "--penalty"),
        (["--lam", "0.1", "--solver", "magic"], "--solver"),
        (["--lam", "0.1", "--penalty", "l2p", "--p", "3"], "--p"),
        (["--lam", "0.1", "--groups", "important:x"], "--groups"),
        (["--lam", "0.1", "--groups", "important:9"], "--groups"),
    ],
)
def test_solve_option_errors_name_the_option(tmp_path, capsys, options, label):
    np.save(tmp_path / "S.npy", covariance())
    message = fail(capsys, ["solve", "ggm", tmp_path / "S.npy", "--quiet", *options])
    assert message.startswith(f"{label}: "), message


def test_data_errors_name_the_input_file(tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.array([[1.0, 2.0], [0.0, 1.0]]))
    assert fail(capsys, ["solve", "ggm", bad, "--lam", "0.1"]).startswith(
        f"{bad}: S must be symmetric"
    )
    np.save(bad, covariance() * (1 + 1j))
    assert fail(capsys, ["solve", "ggm", bad, "--lam", "0.1"]).startswith(f"{bad}: ")
    np.save(bad, np.ones((1, 4)))
    assert "at least 2 samples" in fail(capsys, ["solve", "ggm", bad, "--data", "--lam", "0.1"])


@pytest.mark.parametrize(
    ("options", "label"),
    [(["-k", "99"], "-k"), (["-k", "2", "--method", "magic"], "--method")],
)
def test_eigen_option_errors_name_the_option(tmp_path, capsys, options, label):
    sp.save_npz(tmp_path / "A.npz", sp.csr_array(np.abs(covariance())))
    argv = ["eigen", tmp_path / "A.npz", "--out", tmp_path / "p.npz", *options]
    assert fail(capsys, argv).startswith(f"{label}: ")


def test_plugins_unknown_kind_names_the_option(capsys):
    assert fail(capsys, ["plugins", "--kind", "nope"]).startswith("--kind: unknown kind")


def test_argparse_errors_use_the_same_form(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["solve", "ggm", "S.npy", "--lam", "x"])
    assert exit_.value.code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("graphopt: error: argument --lam: invalid float value: 'x'")
    )


def test_a_genuine_bug_keeps_its_traceback(tmp_path, monkeypatch):
    import graphopt.ggm

    np.save(tmp_path / "S.npy", covariance())

    def broken(*args, **kwargs):
        raise RuntimeError("an internal bug")

    monkeypatch.setattr(graphopt.ggm, "solve", broken)
    with pytest.raises(RuntimeError, match="an internal bug"):
        main(["solve", "ggm", str(tmp_path / "S.npy"), "--lam", "0.1", "--quiet"])


# -- --threads ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--threads", "1", "plugins", "--json"],
        ["plugins", "--json", "--threads", "1"],
    ],
)
def test_threads_is_accepted_before_and_after_the_command(argv, capsys, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", torch.get_num_threads)
    torch.set_num_threads(2)
    assert main(argv) == 0
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"


def test_threads_reach_nested_subcommands(tmp_path, capsys):
    np.save(tmp_path / "S.npy", covariance())
    torch.set_num_threads(2)
    assert (
        main(["solve", "ggm", str(tmp_path / "S.npy"), "--lam", "0.1", "--quiet", "--threads", "1"])
        == 0
    )
    assert torch.get_num_threads() == 1


def test_threads_from_the_environment_and_their_errors(capsys, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("GRAPHOPT_THREADS", "2")
    assert main(["plugins", "--json"]) == 0
    assert torch.get_num_threads() == 2
    assert main(["--threads", "1", "plugins", "--json"]) == 0  # the flag wins
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("GRAPHOPT_THREADS", "many")
    assert fail(capsys, ["plugins"]) == "GRAPHOPT_THREADS must be an integer >= 1; got 'many'"
    with pytest.raises(SystemExit):
        main(["--threads", "0", "plugins"])
    assert "argument --threads: must be an integer >= 1; got 0" in capsys.readouterr().err


def test_the_default_thread_count_defers_to_omp_num_threads(monkeypatch):
    from graphopt import threads

    monkeypatch.delenv("GRAPHOPT_THREADS", raising=False)
    assert threads.requested_threads(None, {}) == threads.DEFAULT_THREADS
    assert threads.requested_threads(None, {"OMP_NUM_THREADS": "4"}) is None
    assert threads.requested_threads(None, {"GRAPHOPT_THREADS": "3", "OMP_NUM_THREADS": "4"}) == 3
    assert threads.requested_threads(2, {"GRAPHOPT_THREADS": "3"}) == 2


def test_set_threads_sets_torch_blas_and_the_exported_variables():
    from threadpoolctl import threadpool_info

    from graphopt.threads import set_threads

    assert set_threads(1) == 1
    assert torch.get_num_threads() == 1
    assert all(pool["num_threads"] == 1 for pool in threadpool_info())
    assert {os.environ[name] for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")} == {"1"}
    for bad in (0, -1, 1.5, True, "x"):
        with pytest.raises(ValueError, match="threads must be an integer >= 1"):
            set_threads(bad)
