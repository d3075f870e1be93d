"""Runs that survive faults and bad input (issue 12), driven through real processes.

Every `genorder` command here runs in its own OS process: the first through the console entry point
(`python -m genorder_cli.main`), the many others forked from a small server that has imported torch
and genorder once (a fresh interpreter costs ~5 s on the shared 2-core box; a fork costs ~0.1 s).
A forked child is an ordinary process running `genorder_cli.main.main()` with its own argv, cwd and
stdout/stderr files; the test kills it with SIGKILL, SIGINT or SIGTERM like any other.

Outcomes asserted: >= 20 kill -9 at random moments (half of them while a checkpoint set is being
written) then resume, with losses and weights bit-identical to an uninterrupted run; NaN injection;
two concurrent writers; SIGINT/SIGTERM checkpoints with the resume command; broken and colliding
plugins; truncated, mismatched and forged checkpoints; bad settings and bad data giving `error:`
and exit 2 with the run directory unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from genorder.data import SHAPE_CLASSES, render_shapes
from genorder.hashing import file_sha256
from genorder.runs import committed_checkpoints, latest_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200", "PYTHONHASHSEED": "0"}

SERVER = r"""
import json, os, sys
import torch
torch.set_num_threads(1)
from genorder_cli.main import main
from genorder.registry import registry
registry("orders")  # build the registries once, before forking
torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # its first use imports torch._dynamo (~3 s)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "start":
        pid = os.fork()
        if pid == 0:
            try:
                os.chdir(cmd["cwd"])
                for fd, name in ((1, cmd["log"] + ".out"), (2, cmd["log"] + ".err")):
                    f = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                    os.dup2(f, fd)
                    os.close(f)
                sys.stdin.close()
                sys.argv = ["genorder", *cmd["args"]]
                code = 0
                try:
                    main()
                except SystemExit as e:
                    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                import traceback
                traceback.print_exc()
                code = 1
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
    elif cmd["op"] == "wait":
        _, status = os.waitpid(cmd["pid"], 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class Result:
    def __init__(self, rc: int, log: Path) -> None:
        self.rc = rc
        self.out = Path(str(log) + ".out").read_text(errors="replace")
        self.err = Path(str(log) + ".err").read_text(errors="replace")
        self.text = " ".join((self.out + "\n" + self.err).split())  # rich wraps long lines

    def __repr__(self) -> str:
        return f"rc={self.rc}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"


class Server:
    """Forks `genorder` processes from one warm interpreter (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.n = 0
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=ENV, text=True, bufsize=1)  # fmt: skip
        assert json.loads(self._read(120))["ready"]

    def _read(self, timeout: float) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "the fork server did not answer"
        return self.proc.stdout.readline()

    def start(self, *args: str, cwd: Path | None = None) -> tuple[int, Path]:
        self.n += 1
        log = self.root / f"proc{self.n:03d}"
        self.proc.stdin.write(json.dumps({"op": "start", "args": list(args), "cwd": str(cwd or self.root),
                                          "log": str(log)}) + "\n")  # fmt: skip
        return json.loads(self._read(30))["pid"], log

    def wait(self, pid: int, log: Path, timeout: float = 240) -> Result:
        self.proc.stdin.write(json.dumps({"op": "wait", "pid": pid}) + "\n")
        return Result(json.loads(self._read(timeout))["rc"], log)

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 240) -> Result:
        pid, log = self.start(*args, cwd=cwd)
        return self.wait(pid, log, timeout)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def shapes_npz(path: Path, n_train: int = 64, seed: int = 1, labels=None) -> str:
    """Shapes at 16 px as npz; with `labels` given, those labels and no class_names (inferred)."""
    train, lab = render_shapes(n_train, 16, seed=seed)
    test, test_lab = render_shapes(16, 16, seed=seed + 100)
    names = {"class_names": np.array(SHAPE_CLASSES)} if labels is None else {}
    lab = lab.numpy() if labels is None else labels
    np.savez(path, images=train.numpy(), labels=lab, test_images=test.numpy(), test_labels=test_lab.numpy(), **names)
    return f"npz:{path.name}"


TRAIN = ("train", "--order", "next-scale", "--depth", "1", "--dataset", "npz:s16.npz", "--tokenizer", "tok/tokenizer",
         "--batch-size", "8", "--set", "train.log_every=1")  # fmt: skip


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A folder with a 16 px shapes npz, two tokenizers (same shapes, other weights), a base run of
    4 steps, and the fork server."""
    root = tmp_path_factory.mktemp("faults")
    shapes_npz(root / "s16.npz")
    shapes_npz(root / "other16.npz", seed=7)
    srv = Server(root)
    for out, steps in (("tok", "2"), ("tok2", "3")):
        r = srv.run("train-tokenizer", "--tokenizer", "msvq-tiny", "--set", "tokenizer.channels=3", "--dataset",
                    "npz:s16.npz", "--steps", steps, "--batch-size", "8", "--out", out)  # fmt: skip
        assert r.rc == 0, r
    r = srv.run(*TRAIN, "--steps", "4", "--checkpoint-every", "2", "--out", "base")
    assert r.rc == 0, r
    yield root, srv
    srv.close()


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under `folder` (the lock file aside)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}  # fmt: skip


def losses(run: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert rec["step"] not in out, f"step {rec['step']} logged twice"
        out[rec["step"]] = rec["loss"]
    return out


def copy_run(root: Path, name: str) -> Path:
    dst = root / name
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(root / "base", dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


# -- kill -9 at random moments ------------------------------------------------------------------


def _log_max_step(run: Path) -> int:
    try:
        text = (run / "log.jsonl").read_text()
    except FileNotFoundError:
        return 0
    steps = [json.loads(line)["step"] for line in text.splitlines()[:-1] if line.strip()]  # last line may be torn
    return max(steps, default=0)


def _writing(run: Path) -> bool:
    ck = run / "checkpoints"
    try:
        return any(p.name.startswith((".tmp-", ".trash-")) for p in ck.iterdir())
    except FileNotFoundError:
        return False


def test_random_kill9_then_resume_is_bit_identical(lab):
    root, srv = lab
    steps = 100
    args = (*TRAIN, "--steps", str(steps), "--checkpoint-every", "1")
    # the uninterrupted reference, through the console entry point in a fresh interpreter
    ref = subprocess.Popen([sys.executable, "-m", "genorder_cli.main", *args, "--out", "ref"], cwd=root, env=ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    run = root / "killed"
    rng = random.Random(12)
    kills = mid_write = 0
    while kills < 20:
        resume = (run / "model.json").exists()
        before = max(committed_checkpoints(run)[-1][0] if committed_checkpoints(run) else 0, _log_max_step(run))
        pid, log = srv.start(*args, "--out", "killed", *(["--resume"] if resume else []))
        deadline, target = time.monotonic() + 60, before + rng.randint(1, 3)
        while _log_max_step(run) < target and time.monotonic() < deadline:  # it trains 1-3 steps
            time.sleep(0.005)
        if kills % 2:
            deadline = time.monotonic() + 5  # then kill it while it writes a checkpoint set
            while not _writing(run) and time.monotonic() < deadline:
                pass
        else:
            time.sleep(rng.uniform(0, 0.15))  # or at a random moment
        writing = _writing(run)
        os.kill(pid, signal.SIGKILL)
        r = srv.wait(pid, log)
        assert r.rc in (-signal.SIGKILL, 0), r
        assert r.rc == -signal.SIGKILL, f"the run finished before 20 kills ({kills}); raise `steps`"
        kills += 1
        mid_write += writing
        if committed_checkpoints(run):  # what a kill leaves is always a complete, verified set
            d, manifest = latest_checkpoint(run)
            assert manifest["step"] == committed_checkpoints(run)[-1][0]
    r = srv.run(*args, "--out", "killed", "--resume")
    assert r.rc == 0, r
    ref_out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, ref_out
    assert mid_write >= 1, "no kill landed while a checkpoint was being written"
    a, b = losses(root / "ref"), losses(run)  # each step logged once: the log was cut back on resume
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    assert a == b  # bit-identical (floats compared exactly)
    wa, wb = load_file(root / "ref" / "model.safetensors"), load_file(run / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    leftovers = [p for p in run.rglob("*") if p.name.startswith((".tmp-", ".trash-")) or p.name.endswith(".tmp")]
    assert leftovers == []  # stale temporaries are cleaned by the next writer
    assert [s for s, _ in committed_checkpoints(run)] == [steps]


# -- NaN, signals, two writers ----------------------------------------------------------------


def test_non_finite_loss_skips_then_stops_and_keeps_the_last_good_checkpoint(lab):
    root, srv = lab
    r = srv.run(*TRAIN, "--steps", "30", "--checkpoint-every", "1", "--lr", "1e30", "--out", "nan")
    assert r.rc == 2, r
    assert "error: training diverged" in r.text and "non-finite" in r.text and "Traceback" not in r.err
    run = root / "nan"
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    skipped = [rec["step"] for rec in recs if rec.get("skipped")]
    assert len(skipped) == 4 and not np.isfinite(recs[-1]["loss"])  # 3 tolerated in a row, the 4th stops it
    d, manifest = latest_checkpoint(run)
    for name in ("model.safetensors", "optim.safetensors"):
        state = load_file(d / name)
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()), name
    assert not (run / "summary.json").exists() and not (run / "samples.png").exists()


def test_two_writers_one_out_then_sigterm_and_sigint_checkpoint_with_a_resume_command(lab):
    root, srv = lab
    args = (*TRAIN, "--steps", "5000", "--checkpoint-every", "1000", "--out", "busy")
    pid, log = srv.start(*args)
    deadline = time.monotonic() + 60
    while _log_max_step(root / "busy") < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    for extra in ((), ("--resume",)):
        second = srv.run(*args, *extra)
        assert second.rc == 2, second
        assert f"PID {pid}" in second.text and "in use" in second.text
    os.kill(pid, signal.SIGTERM)
    first = srv.wait(pid, log)
    assert first.rc == 130, first
    step = committed_checkpoints(root / "busy")[-1][0]
    assert 2 <= step < 5000  # a checkpoint at the interrupt, not only every 1000 steps
    assert f"interrupted at step {step}" in first.text
    assert "resume with: genorder train" in first.text and "--out busy --resume" in first.text
    assert sorted(losses(root / "busy")) == list(range(1, step + 1))  # one writer's steps, each once
    # resume, then Ctrl-C
    pid, log = srv.start(*args, "--resume")
    while _log_max_step(root / "busy") < step + 2 and time.monotonic() < deadline + 60:
        time.sleep(0.01)
    os.kill(pid, signal.SIGINT)
    again = srv.wait(pid, log)
    assert again.rc == 130 and "resume with:" in again.text, again
    step2 = committed_checkpoints(root / "busy")[-1][0]
    assert step2 > step and sorted(losses(root / "busy")) == list(range(1, step2 + 1))


def test_default_checkpoints_and_already_complete(lab):
    root, srv = lab
    run = root / "base"
    assert [s for s, _ in committed_checkpoints(run)] == [4]
    meta = json.loads((run / "model.json").read_text())
    assert meta["final"] is True and meta["step"] == 4
    ident = meta["identity"]
    assert ident["dataset"]["spec"] == f"npz:{root / 's16.npz'}"  # absolute: usable from any directory
    assert ident["dataset"]["hash"].startswith("sha256:") and ident["tokenizer"]["hash"].startswith("sha256:")
    before = snapshot(run)
    r = srv.run(*TRAIN, "--steps", "4", "--out", "base", "--resume")
    assert r.rc == 0 and "already complete" in r.text, r
    assert snapshot(run) == before  # nothing rewritten (summary.json included)
    from genorder.trainer import TrainConfig

    assert TrainConfig().checkpoint_every == 200


# -- broken and colliding plugins -------------------------------------------------------------

CLASH = '''
from genorder import hookimpl
from genorder_plugins.raster import Raster as _R

class Impostor(_R):
    """An order that tries to take the built-in name."""

@hookimpl
def register_orders(register):
    register("raster", Impostor)
    register("raster-copy", Impostor)
'''


def test_broken_and_colliding_plugins_fail_alone(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    (site / "clash_plugin.py").write_text(CLASH)
    dist = site / "faulty_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: faulty-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[genorder]\nbroken = broken_plugin\nclash = clash_plugin\nraster = clash_plugin\n"
    )
    env = {**ENV, "PYTHONPATH": str(site)}
    r = subprocess.run([sys.executable, "-m", "genorder_cli.main", "plugins"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    err, out = " ".join(r.stderr.split()), " ".join(r.stdout.split())
    assert "Traceback" not in r.stderr
    assert "warning: plugin broken (faulty-plugins) failed to load" in err and "boom at import" in err
    assert "order name 'raster' is already registered by raster" in err
    assert "plugin name 'raster' is already taken" in err
    assert "broken" in out and "RuntimeError: boom at import" in out and "collision" in out
    assert "raster-copy" in out and "next-scale" in out  # the plugin's free name, and the built-ins
    probe = ("from genorder.registry import registry; from genorder_plugins.raster import Raster;"
             "assert registry('orders').get('raster') is Raster; print('builtin kept')")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "builtin kept" in r.stdout, r.stderr


# -- truncated, mismatched and forged checkpoints ---------------------------------------------


class Evil:
    def __reduce__(self):
        return (os.system, ("touch UNPICKLED",))


def test_damaged_checkpoints_refuse_to_resume_and_leave_the_run_as_it_was(lab):
    root, srv = lab
    step_dir = "checkpoints/step-000000004"
    damages = {
        "truncated": lambda run: (run / step_dir / "optim.safetensors").write_bytes(
            (run / step_dir / "optim.safetensors").read_bytes()[:100]),
        "forged weights": lambda run: save_file({k: v + 1 for k, v in load_file(run / step_dir / "model.safetensors").items()},
                                                run / step_dir / "model.safetensors"),
        "missing manifest": lambda run: (run / step_dir / "manifest.json").unlink(),
        "forged pickle, manifest rewritten": lambda run: _forge_with_manifest(run / step_dir, pickle.dumps(Evil())),
        "NaN weights, manifest rewritten": lambda run: _forge_with_manifest(run / step_dir, _nan_weights(run / step_dir)),
    }  # fmt: skip
    expected = {"truncated": "optim.safetensors altered", "forged weights": "model.safetensors altered",
                "missing manifest": "no manifest.json", "forged pickle, manifest rewritten": "not a safetensors file",
                "NaN weights, manifest rewritten": "non-finite"}  # fmt: skip
    for i, (name, damage) in enumerate(damages.items()):
        run = copy_run(root, f"damaged{i}")
        damage(run)
        before = snapshot(run)
        r = srv.run(*TRAIN, "--steps", "8", "--out", run.name, "--resume")
        assert r.rc == 2, (name, r)
        assert "error:" in r.err and expected[name] in r.text and "Traceback" not in r.err, (name, r)
        assert snapshot(run) == before, name
    assert not (root / "UNPICKLED").exists()


def _forge_with_manifest(set_dir: Path, data: bytes) -> None:
    (set_dir / "model.safetensors").write_bytes(data)
    m = json.loads((set_dir / "manifest.json").read_text())
    m["files"]["model.safetensors"] = file_sha256(set_dir / "model.safetensors")
    (set_dir / "manifest.json").write_text(json.dumps(m))


def _nan_weights(set_dir: Path) -> bytes:
    from safetensors.torch import save

    return save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                 for k, v in load_file(set_dir / "model.safetensors").items()})  # fmt: skip


def test_mismatched_resume_names_the_difference_and_changes_nothing(lab):
    root, srv = lab
    cases = [
        (("--tokenizer", "tok2/tokenizer"), "--tokenizer tok2/tokenizer is not the tokenizer"),
        (("--depth", "2"), "backbone.depth"),
        (("--dataset", "npz:other16.npz"), "dataset.hash"),
        (("--set", "train.seed=5"), "train.seed"),
    ]
    run = copy_run(root, "mismatch")
    before = snapshot(run)
    for extra, message in cases:  # a repeated option: the last one counts
        r = srv.run(*TRAIN, "--steps", "8", "--out", "mismatch", "--resume", *extra)
        assert r.rc == 2 and message in r.text and "left as it was" in r.text, (extra, r)
        assert snapshot(run) == before, extra
    assert srv.run("sample", "--run", "mismatch", "--per-class", "1", "--out", "s.png").rc == 0
    # the run's own tokenizer swapped for another: resume and sample both refuse
    for ext in (".safetensors", ".json"):
        shutil.copyfile(root / "tok2" / f"tokenizer{ext}", run / f"tokenizer{ext}")
    r = srv.run(*TRAIN, "--steps", "8", "--out", "mismatch", "--resume")
    assert r.rc == 2 and "not the tokenizer the run was trained with" in r.text, r
    r = srv.run("sample", "--run", "mismatch")
    assert r.rc == 2 and "not the tokenizer this run was trained with" in r.text, r


def test_edited_or_truncated_run_files_give_errors_not_tracebacks(lab):
    root, srv = lab
    run = copy_run(root, "edited")
    meta = json.loads((run / "model.json").read_text())
    del meta["num_classes"]
    (run / "model.json").write_text(json.dumps(meta))
    r = srv.run("sample", "--run", "edited")
    assert r.rc == 2 and "num_classes" in r.text and "Traceback" not in r.err, r
    (run / "model.json").write_text("{not json")
    r = srv.run("sample", "--run", "edited")
    assert r.rc == 2 and "not valid checkpoint metadata" in r.text, r
    run = copy_run(root, "truncated")
    (run / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes()[:64])
    r = srv.run("sample", "--run", "truncated")
    assert r.rc == 2 and "corrupt" in r.text and "Traceback" not in r.err, r
    # the checkpoint set is intact, so a resume (with a larger budget) repairs the top-level copy
    r = srv.run(*TRAIN, "--steps", "5", "--out", "truncated", "--resume")
    assert r.rc == 0, r
    assert srv.run("sample", "--run", "truncated", "--per-class", "1").rc == 0


# -- bad settings and bad input ---------------------------------------------------------------


def test_bad_settings_and_bad_input_exit_2_with_nothing_written(lab):
    root, srv = lab
    (root / "typo.toml").write_text("[bugdet]\nsteps = 3\n")
    (root / "scalar.toml").write_text("backbone = 3\n")
    (root / "a_file").write_text("x")
    labels = np.zeros(64, dtype=np.int64)
    labels[5] = 1_000_000
    shapes_npz(root / "huge_label.npz", labels=labels)
    data = (root / "s16.npz").read_bytes()
    (root / "trunc.npz").write_bytes(data[: len(data) // 2])
    unwritable = "/proc/genorder-faults/run" if os.geteuid() == 0 else str(root / "ro" / "run")
    if os.geteuid() != 0:
        (root / "ro").mkdir(mode=0o500)
    base = list(TRAIN) + ["--steps", "2"]
    cases = [
        (["--config", "typo.toml"], "bugdet"),
        (["--config", "scalar.toml"], "backbone = 3 must be a table"),
        (["--set", "bogus.key=1"], "bogus"),
        (["--set", "train.bogus=1"], "train.bogus"),
        (["--depth", "0"], "backbone.depth"),
        (["--dataset", "npz:huge_label.npz"], "1,000,001 classes"),
        (["--dataset", "npz:trunc.npz"], "cannot read"),
        (["--out", "a_file"], "is a file"),
        (["--out", "a_file/run"], "is a file"),
        (["--out", unwritable], unwritable.split("/run")[0]),
    ]
    for extra, message in cases:  # a repeated option (--depth, --dataset): the last one counts
        r = srv.run(*base, *extra, *([] if "--out" in extra else ["--out", "bad"]))
        assert r.rc == 2, (extra, r)
        assert "error:" in r.err and message in r.text and "Traceback" not in r.err, (extra, r)
        assert not (root / "bad").exists(), extra
    for extra, message in ((["--per-class", "0"], "--per-class"), (["--out", "/proc/x/s.png"], "/proc")):
        r = srv.run("sample", "--run", "base", *extra)
        assert r.rc == 2 and message in r.text and "Traceback" not in r.err, (extra, r)
    # the documented nested --set reaches the budget
    r = srv.run(*TRAIN, "--set", "train.budget.steps=3", "--out", "nested")
    assert r.rc == 0, r
    assert json.loads((root / "nested" / "summary.json").read_text())["spent"]["steps"] == 3


# -- in-process units: the lock, skipped steps, the log rewind --------------------------------


def test_run_lock_excludes_a_second_holder_and_names_its_pid(tmp_path):
    from genorder.errors import UserError
    from genorder.lock import RunLock

    with RunLock(tmp_path) as first:
        assert first.held and (tmp_path / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(UserError, match=f"PID {os.getpid()}"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path) as again:  # released on exit
        assert again.held


class _Images(torch.utils.data.Dataset):
    def __init__(self, n: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
        self.num_classes = 2

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], i % 2


def _tiny_trainer(out: Path, steps: int, **train):
    from helpers import TinyCodebookTokenizer, tiny_backbone

    from genorder.budget import Budget
    from genorder.model import build_model
    from genorder.trainer import Trainer, TrainConfig
    from genorder_plugins.raster import Raster

    torch.manual_seed(0)
    order, tok = Raster(Raster.Config()), TinyCodebookTokenizer((4,), 16)
    model = build_model(order, tok, tiny_backbone(depth=1), 2)
    cfg = TrainConfig(batch_size=4, lr=1e-3, budget=Budget(steps=steps), log_every=1, **train)
    return Trainer(order, tok, model, _Images(), cfg, out, {})


def test_a_non_finite_step_is_skipped_without_an_update_and_training_goes_on(tmp_path, monkeypatch):
    from genorder.trainer import TrainingDiverged

    tr = _tiny_trainer(tmp_path / "a", 6, checkpoint_every=1)
    real_forward = tr.model.forward
    poisoned = {3}  # the step (0-based) whose logits are NaN

    def forward(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        return out * float("nan") if tr.tracker.spent.steps in poisoned else out

    monkeypatch.setattr(tr.model, "forward", forward)
    weights: list[dict] = []
    tr.fit(progress=lambda f, m: weights.append({k: v.clone() for k, v in tr.model.state_dict().items()}))
    assert [bool(m.get("skipped")) for m in tr.history] == [False, False, False, True, False, False]
    assert all(torch.equal(weights[2][k], weights[3][k]) for k in weights[2])  # no update at the skipped step
    assert not all(torch.equal(weights[3][k], weights[4][k]) for k in weights[3])  # and updates after it
    assert tr.nonfinite == {"streak": 0, "total": 1}
    # a streak past the limit stops the run; the last good checkpoint stays
    tr2 = _tiny_trainer(tmp_path / "b", 20, checkpoint_every=1, nonfinite_streak=2)
    real2 = tr2.model.forward
    monkeypatch.setattr(tr2.model, "forward", lambda *a, **k: real2(*a, **k) * (float("nan") if tr2.tracker.spent.steps >= 4 else 1.0))
    with pytest.raises(TrainingDiverged, match="3 in a row"):
        tr2.fit()
    assert [s for s, _ in committed_checkpoints(tmp_path / "b")] == [6]  # steps 5, 6 skipped (finite state), 7 stops
    assert tr2.history[-1]["step"] == 7


def test_resume_rewinds_the_log_to_the_checkpoint(tmp_path):
    tr = _tiny_trainer(tmp_path, 8, checkpoint_every=3)
    tr.fit(stop_after=5)  # checkpoints at 3 and (on stopping) 5
    with (tmp_path / "log.jsonl").open("a") as f:  # a killed writer's lines past its checkpoint, one torn
        f.write(json.dumps({"step": 6, "loss": 1.0}) + "\n" + '{"step": 7, "lo')
    again = _tiny_trainer(tmp_path, 8, checkpoint_every=3)
    assert again.resume() and again.tracker.spent.steps == 5
    assert sorted(losses(tmp_path)) == [1, 2, 3, 4, 5]
    again.fit()
    assert sorted(losses(tmp_path)) == list(range(1, 9))
