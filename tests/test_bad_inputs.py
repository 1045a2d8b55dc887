"""The bad-input catalogue: every subcommand and the Recorder answer a bad input with exit code 2 (a
TelecliError from Python), one line that names the problem, no traceback, and no file changed or created.

Each case runs the real command line in this process (tests/helpers.py ``cli``) against one shared
world of good files — a recorded run, its results file, configurations, tables — hashed before and
after every case.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import cli, sets, write_cfg
from telecli.errors import TelecliError

RUN, LENS = "run", "lens.h5"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("world")
    cfg = write_cfg(w)
    assert cli("record", cfg, "--out", w / RUN, "--quiet")[0] == 0
    assert cli("telescope", w / RUN, "--out", w / LENS, "--points", 8, "--quiet")[0] == 0
    (w / "empty.toml").write_text("# nothing set\n")
    (w / "broken.toml").write_text("[train\nlr = 0.1\n")
    (w / "description-only.toml").write_text('description = "a preset without settings"\n')
    (w / "notes.txt").write_text("not a run, not HDF5\n")
    (w / "folder").mkdir()
    edited = w / "edited"
    shutil.copytree(w / RUN, edited)
    m = json.loads((edited / "run.json").read_text())
    m["model"]["kwargs"]["width"] = 13  # a hand edit; the seal is left as it was
    (edited / "run.json").write_text(json.dumps(m, indent=1, sort_keys=True))
    corrupt = w / "corrupt"
    shutil.copytree(w / RUN, corrupt)
    (corrupt / "run.json").write_text("{not json")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = x @ [1.0, -2.0, 0.5]
    rows = ["a,b,c,y"] + [f"{a:.6f},{b:.6f},{c:.6f},{t:.6f}" for (a, b, c), t in zip(x, y)]
    (w / "table.csv").write_text("\n".join(rows) + "\n")
    rows[5] = rows[5].rsplit(",", 1)[0] + ",nan"
    (w / "nan-target.csv").write_text("\n".join(rows) + "\n")
    (w / "boost.toml").write_text('data = "diabetes"\nbogus = 1\n')
    with _recorder(w, name="user-loop") as rec:  # a run of a user's own loop (no configuration)
        for _ in range(2):
            rec.optimizer.zero_grad()
            ((rec.model(rec._x) - rec._y) ** 2).mean().backward()
            rec.optimizer.step()
            rec.step()
    return w


def tree_hashes(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` with the sha256 of its bytes (folders: "dir")."""
    return {p.relative_to(root).as_posix(): ("dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*"))}


R, C = "{run}", "{cfg}"  # placeholders filled per case (and {w}: the world folder)

# (case id, arguments, words the one-line message must contain)
CASES = [
    # -- record: the configuration file
    ("record-missing-config", ["record", "{w}/missing.toml", "--out", "{w}/new"], ["config file not found"]),
    ("record-empty-toml", ["record", "{w}/empty.toml", "--out", "{w}/new"], ["holds no settings"]),
    ("record-description-only", ["record", "{w}/description-only.toml", "--out", "{w}/new"], ["holds no settings"]),
    ("record-broken-toml", ["record", "{w}/broken.toml", "--out", "{w}/new"], ["not valid TOML"]),
    ("record-config-is-folder", ["record", "{w}/folder", "--out", "{w}/new"], ["config file not found"]),
    # -- record: settings and options
    ("record-unknown-key", ["record", C, "--out", "{w}/new", *sets("train.bogus=1")], ["unknown setting 'train.bogus'"]),
    ("record-unknown-section", ["record", C, "--out", "{w}/new", *sets("bogus.x=1")], ["unknown setting 'bogus'"]),
    ("record-set-no-equals", ["record", C, "--out", "{w}/new", "--set", "train.lr"], ["key=value"]),
    ("record-set-into-number", ["record", C, "--out", "{w}/new", *sets("train.lr.x=1")], ["not a table"]),
    ("record-steps-zero", ["record", C, "--out", "{w}/new", "--steps", "0"], ["train.steps", "≥ 1"]),
    ("record-steps-negative", ["record", C, "--out", "{w}/new", "--steps", "-5"], ["train.steps", "≥ 1"]),
    ("record-seed-negative", ["record", C, "--out", "{w}/new", "--seed", "-1"], ["seed", "≥ 0"]),
    ("record-batch-negative", ["record", C, "--out", "{w}/new", *sets("train.batch_size=-1")], ["train.batch_size"]),
    ("record-width-zero", ["record", C, "--out", "{w}/new", *sets("model.width=0")], ["model.width", "≥ 1"]),
    ("record-depth-zero", ["record", C, "--out", "{w}/new", *sets("model.depth=0")], ["model.depth"]),
    ("record-lr-nan", ["record", C, "--out", "{w}/new", *sets("train.lr=nan")], ["train.lr", "finite"]),
    ("record-lr-inf", ["record", C, "--out", "{w}/new", *sets("train.lr=inf")], ["train.lr", "finite"]),
    ("record-lr-negative", ["record", C, "--out", "{w}/new", *sets("train.lr=-0.1")], ["train.lr", "> 0"]),
    ("record-lr-string", ["record", C, "--out", "{w}/new", *sets("train.lr=fast")], ["train.lr", "number"]),
    ("record-steps-fraction", ["record", C, "--out", "{w}/new", *sets("train.steps=2.5")], ["train.steps", "integer"]),
    ("record-momentum-one", ["record", C, "--out", "{w}/new", *sets("train.momentum=1.0")], ["train.momentum", "< 1"]),
    ("record-weight-decay-negative", ["record", C, "--out", "{w}/new", *sets("train.weight_decay=-1")],
     ["train.weight_decay"]),
    ("record-betas-short", ["record", C, "--out", "{w}/new", *sets("train.betas=[0.9]")], ["train.betas", "2 values"]),
    ("record-betas-range", ["record", C, "--out", "{w}/new", *sets("train.betas=[0.9, 1.5]")], ["train.betas"]),
    ("record-eps-zero", ["record", C, "--out", "{w}/new", *sets("train.eps=0")], ["train.eps"]),
    ("record-label-noise", ["record", C, "--out", "{w}/new", *sets("task.label_noise=1.5")], ["task.label_noise"]),
    ("record-test-fraction", ["record", C, "--out", "{w}/new", *sets("task.test_fraction=1")], ["task.test_fraction"]),
    ("record-n-train-negative", ["record", C, "--out", "{w}/new", *sets("task.n_train=-4")], ["task.n_train"]),
    ("record-init-scale-zero", ["record", C, "--out", "{w}/new", *sets("model.init_scale=0")], ["model.init_scale"]),
    ("record-store-every-zero", ["record", C, "--out", "{w}/new", *sets("store.every=0")], ["store.every"]),
    ("record-shard-mb-negative", ["record", C, "--out", "{w}/new", *sets("store.shard_mb=-1")], ["store.shard_mb"]),
    ("record-store-steps-negative", ["record", C, "--out", "{w}/new", *sets("store.steps=[-3]")], ["store.steps"]),
    ("record-milestone-zero", ["record", C, "--out", "{w}/new", *sets("train.milestones=[0]")], ["train.milestones"]),
    ("record-task-unknown", ["record", C, "--out", "{w}/new", *sets('task.name="imagenet"')], ["task.name", "imagenet"]),
    ("record-model-unknown", ["record", C, "--out", "{w}/new", *sets('model.name="vit"')], ["model.name", "vit"]),
    ("record-activation-unknown", ["record", C, "--out", "{w}/new", *sets('model.activation="swish"')],
     ["model.activation", "swish"]),
    ("record-optimizer-unknown", ["record", C, "--out", "{w}/new", *sets('train.optimizer="lbfgs"')],
     ["train.optimizer", "lbfgs"]),
    ("record-loss-unknown", ["record", C, "--out", "{w}/new", *sets('train.loss="hinge"')], ["train.loss", "hinge"]),
    ("record-schedule-unknown", ["record", C, "--out", "{w}/new", *sets('train.schedule="cosine"')],
     ["train.schedule", "cosine"]),
    ("record-dtype-unknown", ["record", C, "--out", "{w}/new", *sets('dtype="float16"')], ["dtype", "float16"]),
    ("record-device-unknown", ["record", C, "--out", "{w}/new", "--device", "gpu"], ["device", "gpu"]),
    ("record-kwargs-nan", ["record", C, "--out", "{w}/new", *sets("model.kwargs={scale=nan}")], ["model.kwargs"]),
    ("record-factory-missing", ["record", C, "--out", "{w}/new", *sets('model.name="factory"')], ["model.factory"]),
    ("record-factory-unimportable", ["record", C, "--out", "{w}/new",
                                     *sets('model.name="factory"', 'model.factory="nopkg.nets:make"')], ["nopkg.nets"]),
    ("record-mnist-without-root", ["record", C, "--out", "{w}/new", *sets('task.name="mnist"')], ["task.root"]),
    # -- record: where it writes
    ("record-out-existing-run", ["record", C, "--out", R], ["already exists", "--overwrite"]),
    ("record-out-is-a-file", ["record", C, "--out", "{w}/notes.txt"], ["notes.txt"]),
    ("record-out-under-a-file", ["record", C, "--out", "{w}/notes.txt/run"], ["is a file, not a folder"]),
    ("record-out-from-root", ["record", C, "--out", "/telecli-no-such-top-folder/a/run"], ["top of the filesystem"]),
    ("record-out-not-writable", ["record", C, "--out", "/sys/telecli-run"], ["/sys/telecli-run"]),
    ("record-overwrite-non-run", ["record", C, "--out", "{w}/folder-with-notes", "--overwrite"],
     ["not a telecli run directory"]),
    ("record-resume-other-config", ["record", C, "--out", R, "--resume", "--steps", "7"], ["another configuration"]),
    # -- branch
    ("branch-step-not-stored", ["branch", R, "--at", "99", "--seed", "1", "--out", "{w}/child"], ["step 99 is not stored"]),
    ("branch-step-negative", ["branch", R, "--at", "-1", "--seed", "1", "--out", "{w}/child"], ["--at", "≥ 0"]),
    ("branch-steps-of-user-loop", ["branch", "{w}/user-loop", "--at", "0", "--seed", "1", "--out", "{w}/child"],
     ["user loop"]),
    ("branch-seed-negative", ["branch", R, "--at", "5", "--seed", "-2", "--out", "{w}/child"], ["seed", "≥ 0"]),
    ("branch-no-parent", ["branch", "{w}/nobody", "--at", "0", "--seed", "1", "--out", "{w}/child"], ["nobody"]),
    ("branch-parent-is-file", ["branch", "{w}/notes.txt", "--at", "0", "--seed", "1", "--out", "{w}/child"],
     ["notes.txt"]),
    ("branch-edited-parent", ["branch", "{w}/edited", "--at", "0", "--seed", "1", "--out", "{w}/child"], ["was edited"]),
    ("branch-out-existing", ["branch", R, "--at", "5", "--seed", "1", "--out", R], ["already exists"]),
    # -- info / verify
    ("info-missing", ["info", "{w}/nobody"], ["run directory not found"]),
    ("info-not-a-run", ["info", "{w}/folder"], ["not a telecli run"]),
    ("info-a-file", ["info", "{w}/notes.txt"], ["notes.txt"]),
    ("info-edited", ["info", "{w}/edited"], ["was edited", "run.json"]),
    ("info-corrupt-manifest", ["info", "{w}/corrupt"], ["not valid JSON"]),
    ("verify-missing", ["verify", "{w}/nobody"], ["run directory not found"]),
    ("verify-not-a-run", ["verify", "{w}/folder"], ["not a telecli run"]),
    # -- telescope
    ("telescope-missing-run", ["telescope", "{w}/nobody", "--out", "{w}/new.h5"], ["run directory not found"]),
    ("telescope-edited-run", ["telescope", "{w}/edited", "--out", "{w}/new.h5"], ["was edited"]),
    ("telescope-points-zero", ["telescope", R, "--out", "{w}/new.h5", "--points", "0"], ["--points"]),
    ("telescope-points-negative", ["telescope", R, "--out", "{w}/new.h5", "--points", "-3"], ["--points"]),
    ("telescope-points-word", ["telescope", R, "--out", "{w}/new.h5", "--points", "many"], ["--points"]),
    ("telescope-every-zero", ["telescope", R, "--out", "{w}/new.h5", "--every", "0"], ["--every"]),
    ("telescope-every-negative", ["telescope", R, "--out", "{w}/new.h5", "--every", "-2"], ["--every"]),
    ("telescope-shard-out-of-range", ["telescope", R, "--out", "{w}/new.h5", "--shard", "4/4"], ["--shard"]),
    ("telescope-shard-garbage", ["telescope", R, "--out", "{w}/new.h5", "--shard", "half"], ["--shard"]),
    ("telescope-max-memory-zero", ["telescope", R, "--out", "{w}/new.h5", "--max-memory", "0"], ["--max-memory"]),
    ("telescope-max-memory-word", ["telescope", R, "--out", "{w}/new.h5", "--max-memory", "lots"], ["--max-memory"]),
    ("telescope-dtype", ["telescope", R, "--out", "{w}/new.h5", "--dtype", "float16"], ["float16"]),
    ("telescope-device", ["telescope", R, "--out", "{w}/new.h5", "--device", "tpu"], ["tpu"]),
    ("telescope-probes-zero", ["telescope", R, "--out", "{w}/new.h5", "--effective-params", "--probes", "0"],
     ["--probes"]),
    ("telescope-probes-alone", ["telescope", R, "--out", "{w}/new.h5", "--probes", "8"], ["--effective-params"]),
    ("telescope-seed-negative", ["telescope", R, "--out", "{w}/new.h5", "--seed", "-1"], ["--seed"]),
    ("telescope-out-exists", ["telescope", R, "--out", "{w}/lens.h5"], ["already exists", "--overwrite"]),
    ("telescope-out-is-folder", ["telescope", R, "--out", "{w}/folder", "--overwrite"], ["folder"]),
    ("telescope-out-under-a-file", ["telescope", R, "--out", "{w}/notes.txt/lens.h5"], ["is a file, not a folder"]),
    # -- merge
    ("merge-not-a-shard", ["merge", "{w}/lens.h5", "--out", "{w}/merged.h5"], ["not a shard"]),
    ("merge-not-hdf5", ["merge", "{w}/notes.txt", "--out", "{w}/merged.h5"], ["notes.txt"]),
    ("merge-missing", ["merge", "{w}/nope.h5", "--out", "{w}/merged.h5"], ["nope.h5"]),
    ("merge-out-exists", ["merge", "{w}/lens.h5", "--out", "{w}/lens.h5"], ["already exists"]),
    # -- plot
    ("plot-unknown-figure", ["plot", "{w}/lens.h5", "--figure", "pie"], ["pie"]),
    ("plot-missing-file", ["plot", "{w}/nope.h5", "--figure", "approximation", "--out", "{w}/f.png"], ["nope.h5"]),
    ("plot-not-hdf5", ["plot", "{w}/notes.txt", "--figure", "approximation", "--out", "{w}/f.png"], ["notes.txt"]),
    ("plot-split", ["plot", "{w}/lens.h5", "--figure", "approximation", "--split", "val", "--out", "{w}/f.png"],
     ["--split"]),
    ("plot-needs-effective-params", ["plot", "{w}/lens.h5", "--figure", "complexity", "--out", "{w}/f.png"],
     ["--effective-params"]),
    ("plot-out-extension", ["plot", "{w}/lens.h5", "--figure", "approximation", "--out", "{w}/f.bmp"], [".bmp"]),
    # -- boost
    ("boost-no-data", ["boost", "--out", "{w}/b"], ["give the data"]),
    ("boost-missing-file", ["boost", "{w}/nope.csv", "--out", "{w}/b"], ["nope.csv"]),
    ("boost-nn-steps-zero", ["boost", "diabetes", "--out", "{w}/b", "--nn-steps", "0"], ["--nn-steps"]),
    ("boost-nn-lr-negative", ["boost", "diabetes", "--out", "{w}/b", "--nn-lr", "-1"], ["--nn-lr"]),
    ("boost-nn-lr-nan", ["boost", "diabetes", "--out", "{w}/b", "--nn-lr", "nan"], ["--nn-lr", "finite"]),
    ("boost-nn-batch-zero", ["boost", "diabetes", "--out", "{w}/b", "--nn-batch", "0"], ["--nn-batch"]),
    ("boost-top-above-one", ["boost", "diabetes", "--out", "{w}/b", "--top", "1.5"], ["--top"]),
    ("boost-proportions", ["boost", "diabetes", "--out", "{w}/b", "--proportions", "0,2"], ["--proportions"]),
    ("boost-gbt-depth", ["boost", "diabetes", "--out", "{w}/b", "--gbt-depth", "0"], ["--gbt-depth"]),
    ("boost-gbt-trees", ["boost", "diabetes", "--out", "{w}/b", "--gbt-trees", "0"], ["--gbt-trees"]),
    ("boost-test-size", ["boost", "diabetes", "--out", "{w}/b", "--test-size", "0"], ["--test-size"]),
    ("boost-mixture-size", ["boost", "diabetes", "--out", "{w}/b", "--mixture-size", "0"], ["--mixture-size"]),
    ("boost-max-memory", ["boost", "diabetes", "--out", "{w}/b", "--max-memory", "lots"], ["--max-memory"]),
    ("boost-config-unknown-key", ["boost", "--config", "{w}/boost.toml", "--out", "{w}/b"], ["unknown setting 'bogus'"]),
    ("boost-target-missing", ["boost", "{w}/table.csv", "--target", "price", "--out", "{w}/b"], ["price"]),
    ("boost-out-is-a-file", ["boost", "diabetes", "--out", "{w}/notes.txt", "--nn-steps", "2"], ["notes.txt"]),
    # -- lmc
    ("lmc-spawn-step-not-stored", ["lmc", "spawn", R, "--at", "3,99", "--out", "{w}/sp"], ["99"]),
    ("lmc-spawn-steps-garbage", ["lmc", "spawn", R, "--at", "a,b", "--out", "{w}/sp"], ["--at"]),
    ("lmc-spawn-step-negative", ["lmc", "spawn", R, "--at", "-4", "--out", "{w}/sp"], ["≥ 0"]),
    ("lmc-spawn-pairs-zero", ["lmc", "spawn", R, "--at", "0", "--pairs", "0", "--out", "{w}/sp"], ["--pairs"]),
    ("lmc-spawn-every-zero", ["lmc", "spawn", R, "--at", "0", "--every", "0", "--out", "{w}/sp"], ["--every"]),
    ("lmc-spawn-missing-run", ["lmc", "spawn", "{w}/nobody", "--at", "0", "--out", "{w}/sp"], ["nobody"]),
    ("lmc-interpolate-alpha-order", ["lmc", "interpolate", R, R, "--alpha", "1:0:5", "--out", "{w}/l.h5"], ["--alpha"]),
    ("lmc-interpolate-alpha-one", ["lmc", "interpolate", R, R, "--alpha", "0:1:1", "--out", "{w}/l.h5"], ["--alpha"]),
    ("lmc-interpolate-bn", ["lmc", "interpolate", R, R, "--bn", "average", "--out", "{w}/l.h5"], ["--bn"]),
    ("lmc-interpolate-three", ["lmc", "interpolate", R, R, R, "--out", "{w}/l.h5"], ["two"]),
    ("lmc-interpolate-missing", ["lmc", "interpolate", "{w}/nobody", "--out", "{w}/l.h5"], ["nobody"]),
    ("lmc-gradients-points-zero", ["lmc", "gradients", R, "--at", "0", "--points", "0", "--out", "{w}/g.h5"],
     ["--points"]),
    ("lmc-gradients-logits", ["lmc", "gradients", R, "--at", "0", "--logits", "max", "--out", "{w}/g.h5"], ["--logits"]),
    ("lmc-gradients-delta-zero", ["lmc", "gradients", R, "--at", "0", "--delta", "0", "--out", "{w}/g.h5"], ["--delta"]),
]


def _fill(arg: str, w: Path) -> str:
    return arg.replace("{run}", str(w / RUN)).replace("{cfg}", str(w / "tiny.toml")).replace("{w}", str(w))


def test_the_catalogue_is_large_and_named_uniquely():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) + len(RECORDER_CASES) >= 60


@pytest.mark.parametrize("case,args,needles", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(world, case, args, needles):
    if case == "record-overwrite-non-run":
        (world / "folder-with-notes").mkdir(exist_ok=True)
        (world / "folder-with-notes" / "notes.txt").write_text("mine")
    if case == "record-out-not-writable" and not Path("/sys").is_dir():
        pytest.skip("needs a folder the process cannot write into")
    before = tree_hashes(world)
    filled = [_fill(a, world) for a in args]
    outs = [Path(filled[i + 1]) for i, a in enumerate(filled[:-1]) if a == "--out"]
    fresh = [o for o in outs if not o.exists()]
    code, out, err = cli(*filled, *_quiet(args))
    lines = err.strip().splitlines()
    assert code == 2, (case, code, out, err)
    assert len(lines) == 1 and lines[0].startswith("telecli: error: "), (case, err)
    assert "Traceback" not in err + out, case
    for needle in needles:
        assert needle in lines[0], (case, needle, lines[0])
    assert tree_hashes(world) == before, case
    assert not [o for o in fresh if o.exists() or Path(f"{o}.partial").exists()], case  # nothing created


def _quiet(args: list[str]) -> list[str]:
    """Long jobs are run with --quiet (no progress); the others have no such option."""
    return ["--quiet"] if args[0] in ("record", "branch", "telescope", "boost") or args[:2] in (
        ["lmc", "spawn"], ["lmc", "interpolate"], ["lmc", "gradients"]) else []


# ------------------------------------------------------------------------------------- the Recorder


def _recorder(tmp: Path, name: str = "rec", **kw):
    from telecli import Recorder

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)
    args = dict(train=(x, y), test=(x[:4], y[:4]))
    args.update(kw)
    return Recorder(tmp / name, model, opt, **args)


RECORDER_CASES = [
    ("loss-unknown", dict(loss="hinge"), "loss"),
    ("every-zero", dict(every=0, total_steps=10), "every"),
    ("every-negative", dict(every=-2, total_steps=10), "every"),
    ("log-points-negative", dict(log_points=-1, total_steps=10), "log_points"),
    ("shard-mb-negative", dict(shard_mb=-1.0), "shard_mb"),
    ("shard-mb-nan", dict(shard_mb=float("nan")), "shard_mb"),
    ("total-steps-zero", dict(total_steps=0), "total_steps"),
    ("extra-steps-negative", dict(extra_steps=[-1], total_steps=10), "extra_steps"),
    ("strided-without-total", dict(every=5), "total_steps"),
    ("train-length-mismatch", dict(train=(torch.randn(10, 3, dtype=torch.float64), torch.randn(9, 1, dtype=torch.float64))),
     "rows"),
    ("train-not-tensors", dict(train=([1, 2], [3, 4])), "tensor"),
    ("train-non-finite", dict(train=(torch.full((10, 3), float("nan"), dtype=torch.float64),
                                     torch.randn(10, 1, dtype=torch.float64))), "non-finite"),
    ("factory-malformed", dict(model_factory="no colon here"), "package.module:function"),
]


@pytest.mark.parametrize("case,kw,needle", RECORDER_CASES, ids=[c[0] for c in RECORDER_CASES])
def test_recorder_refuses_bad_arguments_before_writing(tmp_path, case, kw, needle):
    with pytest.raises(TelecliError) as e:
        _recorder(tmp_path, **kw)
    message = str(e.value)
    assert "\n" not in message and needle in message, (case, message)
    assert not (tmp_path / "rec").exists() or not any((tmp_path / "rec").iterdir()), case


def test_dropped_rows_of_a_table_are_named(world, capsys):
    """A missing target (or feature) drops its row, documented and said on stderr, never silently."""
    from telecli.data.tabular import read_table

    x, y, _ = read_table(str(world / "nan-target.csv"), "y")
    assert x.shape == (59, 3) and np.isfinite(y).all()
    assert "dropped 1 of 60 rows with a missing value (1 of them in the target 'y')" in capsys.readouterr().err


def test_a_column_named_target_is_the_default_target(world, tmp_path):
    from telecli.data.tabular import read_table

    (tmp_path / "t.csv").write_text((world / "table.csv").read_text().replace(",y\n", ",target\n", 1))
    x, y, names = read_table(str(tmp_path / "t.csv"), "")
    assert names == ["a", "b", "c"] and x.shape == (60, 3)


def test_verify_names_a_hand_edited_manifest(world):
    """An edit of run.json (here the model's width) breaks its seal: verify names it (exit 1, a damaged
    run rather than a bad input) and changes nothing."""
    before = tree_hashes(world)
    code, out, err = cli("verify", world / "edited", "--no-recipe")
    assert code == 1 and "was edited after telecli wrote it" in err, (out, err)
    assert cli("verify", world / RUN, "--no-recipe")[0] == 0  # the original still verifies
    assert tree_hashes(world) == before
