"""Machine-readable and pipe-friendly output: ``--json`` of info, verify, telescope, boost and lmc is one
JSON document on stdout (progress and notes on stderr); piped text has no box drawing; ``telecli info``
describes a run that is still being recorded or was interrupted (steps so far, the resume command).

Tiny fixtures only (poly task, 3-layer MLP of width 12, 20 steps; boost on 40-row mixtures of diabetes
with 20 SGD steps and 10 trees); the CLI is driven in-process, so stdout is never a terminal here.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest

from helpers import assert_one_line_error, cli, sets, write_cfg  # noqa: E402
from telecli import report
from telecli.cli import resume_command
from telecli.store.trajectory import MANIFEST, SHARD_DIR, write_manifest

BOX = "│┃━─┏┌└╭"


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A complete tiny run in several shards."""
    root = tmp_path_factory.mktemp("output")
    run = root / "run"
    code, _, err = cli("record", write_cfg(root), "--out", run, "--quiet", *sets("store.shard_mb=0.01"))
    assert code == 0, err
    return run


def as_json(*args, code: int = 0) -> dict:
    got, out, err = cli(*args, "--json")
    assert got == code, err
    return json.loads(out)  # exactly one document: anything else on stdout fails here


def no_box(text: str) -> None:
    assert text.strip() and not any(c in text for c in BOX), text


def _manifest(run: Path) -> dict:
    return json.loads((run / MANIFEST).read_text())


# ------------------------------------------------------------------------------------------------- info


def test_info_json_has_the_summary_and_text_has_no_box_drawing(run):
    d = as_json("info", run)
    for key in ("run_id", "status", "task", "model", "parameters", "dtype", "loss", "optimizer", "steps",
                "first_step", "last_step", "contiguous", "shards", "bytes", "parent", "training_loss", "versions"):
        assert key in d, key
    assert d["status"] == "complete" and d["resume"] is None
    assert (d["steps"], d["first_step"], d["last_step"], d["contiguous"]) == (21, 0, 20, True)
    assert d["parameters"] == 6 * 12 + 12 + 12 * 12 + 12 + 12 + 1 and d["dtype"] == "float64"
    assert d["shards"] == len(_manifest(run)["shards"]) >= 2 and d["bytes"] > 0
    assert d["task"]["name"] == "poly" and d["model"]["name"] == "mlp" and d["optimizer"]["name"] == "sgd"
    assert set(d["training_loss"]) == {"first", "last"} and d["parent"] is None
    code, out, err = cli("info", run)
    assert code == 0 and err == "", err
    no_box(out)
    assert "status: complete" in out and "stored steps: 21 steps from 0 to 20" in out


def test_info_on_a_run_with_no_shards_yet(run, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(run, part)
    m = _manifest(part)
    m.update(shards=[], last_step=0, status="running")
    write_manifest(part, m)  # as the writer seals it, killed before its first shard
    shutil.rmtree(part / SHARD_DIR)
    d = as_json("info", part)
    assert d["status"] == "running" and d["steps"] == 0 and d["shards"] == 0 and d["last_step"] is None
    argv = json.loads((part / "provenance.json").read_text())["command"]
    assert d["resume"] == resume_command(argv) and d["resume"].endswith("--resume")
    code, out, err = cli("info", part)
    assert code == 0, err
    no_box(out)
    assert "stored steps: none yet" in out and f"resume: {d['resume']}" in out
    v = as_json("verify", part)  # integrity holds; nothing to check the recipe on yet
    assert v["sound"] is True and v["recipe"]["checked"] is False and "no recorded steps" in v["recipe"]["skipped"]
    # no telecli command line recorded (the Recorder in a user's loop, or an older run): said in words
    (part / "provenance.json").unlink()
    assert "--resume" in as_json("info", part)["resume"]


@pytest.mark.parametrize("status", ["interrupted", "failed: RuntimeError"])
def test_info_on_an_interrupted_run(run, tmp_path, status):
    part = tmp_path / "part"
    shutil.copytree(run, part)
    m = _manifest(part)
    kept = m["shards"][:2]
    for s in m["shards"][2:]:
        (part / s["file"]).unlink()
    m.update(shards=kept, last_step=kept[-1]["last_step"], status=status)
    write_manifest(part, m)
    d = as_json("info", part)
    assert d["status"] == status and d["complete"] is False and d["note"]
    assert d["last_step"] == kept[-1]["last_step"] < 20 and d["steps"] == d["last_step"] + 1
    assert d["resume"] == resume_command(json.loads((part / "provenance.json").read_text())["command"])
    code, out, _ = cli("info", part)
    assert code == 0
    no_box(out)
    assert f"status: {status}" in out and "so far" in out and "--resume" in out


def test_info_on_a_folder_without_run_json_is_one_line_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    for name in ("empty", "other"):
        for extra in ((), ("--json",)):
            code, out, err = cli("info", tmp_path / name, *extra)
            assert_one_line_error(code, err, MANIFEST)
            assert out == ""


# ----------------------------------------------------------------------------------------------- verify


def test_verify_json_sound_and_damaged(run, tmp_path):
    d = as_json("verify", run)
    assert set(d) == {"run", "sound", "problems", "notes", "recipe"}
    assert d["sound"] is True and d["problems"] == [] and d["recipe"]["checked"] and d["recipe"]["ok"]
    assert d["recipe"]["failed"] == 0 and d["recipe"]["max_error"] < 1e-7
    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    shard = bad / _manifest(bad)["shards"][1]["file"]
    blob = bytearray(shard.read_bytes())
    blob[-3] ^= 1
    shard.write_bytes(bytes(blob))
    d = as_json("verify", bad, code=1)  # exit code 1 on problems, with --json too
    assert d["sound"] is False and any(shard.name in p for p in d["problems"])
    assert d["recipe"] == {"checked": False, "skipped": "the integrity checks failed"}


# ------------------------------------------------------------------------------------ telescope and lmc


def test_telescope_json_and_the_plot_hint(run, tmp_path):
    d = as_json("telescope", run, "--out", tmp_path / "lens.h5", "--device", "cpu")
    assert d["path"] == str(tmp_path / "lens.h5") and (d["steps"], d["first_step"], d["last_step"]) == (21, 0, 20)
    for s in ("train", "test"):
        assert 0 <= d[s]["approx_error_telescoped"] < 1e-2 and d[s]["approx_error_linearized"] >= 0
        assert "effective_parameters" not in d[s]
    assert d["figure"] == "approximation" and d["plot"].endswith("--figure approximation")
    # without --json: the hint names the figure the file can draw (complexity with --effective-params)
    code, out, err = cli("telescope", run, "--out", tmp_path / "p.h5", "--effective-params", "--device", "cpu")
    assert code == 0, err
    assert out.strip().splitlines() == [f"wrote {tmp_path / 'p.h5'}  (plot: telecli plot {tmp_path / 'p.h5'} "
                                        f"--figure complexity)"]
    p = report.telescope_document(tmp_path / "p.h5")
    assert p["effective_params"] and 0 < p["train"]["effective_parameters"] and p["test"]["valid"] is True
    assert json.loads(report.to_json(p))["figure"] == "complexity"


def test_lmc_interpolate_and_gradients_json(run, tmp_path):
    for seed in (1, 2):
        code, _, err = cli("branch", run, "--at", 5, "--seed", seed, "--out", tmp_path / f"c{seed}", "--quiet")
        assert code == 0, err
    d = as_json("lmc", "interpolate", tmp_path / "c1", tmp_path / "c2", "--out", tmp_path / "ab.h5",
                "--alpha", "0:1:5", "--grad-points", 8, "--device", "cpu")
    assert d["kind"] == "interpolate" and d["spawn_steps"] == [5] and d["alpha"]["n"] == 5
    (e,) = d["by_step"]
    assert e["step"] == 5 and e["pairs"] == 1 and "loss_barrier_mean" in e and "prediction_gap_max_mean" in e
    assert set(e["gradient_change"]) == set(d["gradients"]["layers"])
    g = as_json("lmc", "gradients", run, "--at", "0,10", "--delta", 2, "--points", 8, "--out",
                tmp_path / "g.h5", "--device", "cpu")
    assert g["kind"] == "gradients" and g["spawn_steps"] == [0, 10] and g["gradients"]["delta"] == 2
    assert [e["step"] for e in g["by_step"]] == [0, 10]
    assert all(len(e["gradient_change"]) == len(g["gradients"]["layers"]) for e in g["by_step"])


# ------------------------------------------------------------------------------------------------ boost


def test_boost_json_and_plain_table(tmp_path):
    out = tmp_path / "boost"
    d = as_json("boost", "diabetes", "--out", out, "--nn-steps", 20, "--gbt-trees", 10, "--kernel-every", 5,
                "--mixture-size", 40, "--proportions", "0,1", "--device", "cpu")
    assert d["path"] == str(out / "boost.h5") and d["dataset"] == "diabetes" and d["nn_steps"] == 20
    assert [m["proportions"] for m in d["mixtures"]] == [0.0, 1.0]
    for m in d["mixtures"]:
        assert {"mse_nn", "mse_gbt", "relative_mse", "kernel_norm_nn", "kernel_norm_gbt"} <= set(m)
    assert d["mixtures"][0]["relative_mse"] == pytest.approx(1.0)
    assert set(d["gbt_effective_parameters"]) == {"train", "test"}
    text = io.StringIO()
    with contextlib.redirect_stdout(text):  # what `telecli boost` prints when piped
        report.print_boost_summary(out / "boost.h5")
    no_box(text.getvalue())
    lines = text.getvalue().splitlines()
    assert lines[1].split()[:4] == ["p", "n", "irr", "MSE"] and len(lines) == 5  # title, header, 2 rows, legend
