"""``graphopt solve ggm`` end to end on small files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphopt.cli import main
from graphopt.solvers.ggm import solve

pytestmark = pytest.mark.usefixtures("restore_threads")


def test_solve_ggm_from_csv_data_writes_precision_report_and_plot(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6))
    data = tmp_path / "data.csv"
    np.savetxt(data, x, delimiter=",", header="a,b,c,d,e,f", comments="")
    output = tmp_path / "out" / "precision.npy"
    plot = tmp_path / "out" / "precision.png"
    code = main(
        [
            "solve",
            "ggm",
            str(data),
            "--data",
            "--lam",
            "0.1",
            "-o",
            str(output),
            "--plot",
            str(plot),
            "--quiet",
        ]
    )
    assert code == 0
    precision = np.load(output)
    expected = solve(np.cov(x, rowvar=False, bias=True), lam=0.1).precision
    np.testing.assert_allclose(precision, expected)
    report = json.loads((tmp_path / "out" / "precision.json").read_text())
    assert report["converged"] and report["n_iter"] > 0
    assert report["objective"] == json.loads(capsys.readouterr().out)["objective"]
    assert {"solve_seconds", "total_seconds"} <= set(report["timings"])
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_solve_ggm_from_covariance_with_groups_file_and_bcd(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((30, 5))
    s = np.cov(x, rowvar=False, bias=True)
    np.save(tmp_path / "s.npy", s)
    (tmp_path / "groups.json").write_text(json.dumps([[[0, 1], [0, 2]], [[3, 4]]]))
    code = main(
        [
            "solve",
            "ggm",
            str(tmp_path / "s.npy"),
            "--penalty",
            "l2p",
            "--p",
            "0.9",
            "--solver",
            "bcd",
            "--lam",
            "0.5",
            "--groups",
            str(tmp_path / "groups.json"),
            "--quiet",
            "--report",
            str(tmp_path / "r.json"),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["solver"] == "bcd" and report["kkt_residual"] is None
    assert np.load(tmp_path / "s.precision.npy").shape == (5, 5)


def test_solve_ggm_reports_bad_input_as_error(tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.ones((3, 4)))
    assert main(["solve", "ggm", str(tmp_path / "bad.npy"), "--lam", "0.1", "--quiet"]) == 2
    assert "square" in capsys.readouterr().err


def test_solve_ggm_unknown_penalty_lists_choices(tmp_path, capsys):
    np.save(tmp_path / "s.npy", np.eye(3))
    assert main(["solve", "ggm", str(tmp_path / "s.npy"), "--lam", "0.1", "--penalty", "scad"]) == 2
    assert "l1" in capsys.readouterr().err


def test_solve_ggm_passes_penalty_options_as_yaml_scalars(tmp_path):
    s = np.cov(np.random.default_rng(2).standard_normal((40, 5)), rowvar=False, bias=True)
    np.save(tmp_path / "s.npy", s)
    common = ["solve", "ggm", str(tmp_path / "s.npy"), "--lam", "0.1", "--penalty", "l2p"]
    common += ["--groups", "node", "--quiet"]
    assert main([*common, "--penalty-option", "p=0.7", "-o", str(tmp_path / "a.npy")]) == 0
    assert main([*common, "--p", "0.7", "-o", str(tmp_path / "b.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    expected = solve(s, penalty="l2p", p=0.7, lam=0.1, groups="node").precision
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), expected)


def test_solve_ggm_reports_a_bad_penalty_option_naming_it(tmp_path, capsys):
    np.save(tmp_path / "s.npy", np.eye(3))
    args = ["solve", "ggm", str(tmp_path / "s.npy"), "--lam", "0.1", "--quiet"]
    assert main([*args, "--penalty-option", "gamma=2"]) == 2
    assert "penalty 'l1' has no option 'gamma'" in capsys.readouterr().err
    assert main([*args, "--penalty-option", "novalue"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
