"""Issue 24, "Nothing lost": the ways a run could be lost, each driven through real processes.

1. `--out` on a folder genorder did not write (or of another kind) is refused, naming `--out`, with
   every file in it unchanged; genorder's own half-started folders are reused without touching
   anything else in them.
2. kill -9 at every point of the checkpoint publish sequence (first set, a later set, the final
   set): `--resume` continues with the same losses and weights as an uninterrupted run.
4. Deleting `.lock` under a live writer lets no second writer in (the lock is the directory's);
   a half-made set (an empty `step-N`) never blocks a resume.
8. `train-tokenizer` skips non-finite steps, stops past the limits and never saves NaN.
9. A full disk during a checkpoint write is `error:` and exit 2, the previous checkpoint intact.

The processes are forked from a warm interpreter (as in test_faults.py); a forked child can be
given *injections*: a function of the library wrapped so that its k-th call first (or afterwards)
kills the process with SIGKILL, or fails like a full disk. That puts a kill -9 at an exact point of
the publish sequence, deterministically.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_faults import SERVER, TRAIN, Server, losses, shapes_npz, snapshot

from genorder.hashing import file_sha256
from genorder.runs import committed_checkpoints, latest_checkpoint

INJECT = r'''
import errno as _errno, importlib as _importlib, signal as _signal


def _act(spec, args):
    if spec["action"] == "kill":
        os.kill(os.getpid(), _signal.SIGKILL)
    path = str(args[1])  # save_file(tensors, path, ...): half a file, then the disk is full
    with open(path, "wb") as f:
        f.write(b"\0" * 64)
    if spec["action"] == "enospc-safetensors":
        from safetensors import SafetensorError
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    raise OSError(_errno.ENOSPC, os.strerror(_errno.ENOSPC))


def _inject(specs):
    for spec in specs:
        modname, attr = spec["target"].split(":")
        mod = _importlib.import_module(modname)
        orig, state = getattr(mod, attr), {"n": 0}

        def wrapper(*a, _orig=orig, _spec=spec, _state=state, **k):
            _state["n"] += 1
            hit = _state["n"] == _spec["call"]
            if hit and _spec["when"] == "before":
                _act(_spec, a)
            out = _orig(*a, **k)
            if hit and _spec["when"] == "after":
                _act(_spec, a)
            return out

        setattr(mod, attr, wrapper)
'''

_HOOK = "                sys.stdin.close()\n"
assert _HOOK in SERVER
INJECT_SERVER = SERVER.replace("import json, os, sys\n", "import json, os, sys\n" + INJECT, 1).replace(
    _HOOK, _HOOK + "                _inject(cmd.get('inject') or [])\n", 1
)


class InjectServer(Server):
    def __init__(self, root: Path) -> None:
        import subprocess
        import sys

        from test_faults import ENV

        self.root, self.n = root, 0
        self.proc = subprocess.Popen([sys.executable, "-c", INJECT_SERVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=ENV, text=True, bufsize=1)  # fmt: skip
        assert json.loads(self._read(120))["ready"]

    def start(self, *args: str, cwd: Path | None = None, inject: list | None = None) -> tuple[int, Path]:
        self.n += 1
        log = self.root / f"proc{self.n:03d}"
        self.proc.stdin.write(json.dumps({"op": "start", "args": list(args), "cwd": str(cwd or self.root),
                                          "log": str(log), "inject": inject or []}) + "\n")  # fmt: skip
        return json.loads(self._read(30))["pid"], log

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 240, inject: list | None = None):
        pid, log = self.start(*args, cwd=cwd, inject=inject)
        return self.wait(pid, log, timeout)


RUN6 = (*TRAIN, "--steps", "6", "--checkpoint-every", "2")
TOK = ("train-tokenizer", "--tokenizer", "msvq-tiny", "--set", "tokenizer.channels=3", "--dataset", "npz:s16.npz",
       "--batch-size", "8")  # fmt: skip


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A 16 px shapes npz, a tokenizer `tok`, the uninterrupted 6-step reference run `ref`
    (checkpoints at 2, 4 and 6) and the fork server."""
    root = tmp_path_factory.mktemp("lost")
    shapes_npz(root / "s16.npz")
    srv = InjectServer(root)
    r = srv.run(*TOK, "--steps", "2", "--out", "tok")
    assert r.rc == 0, r
    r = srv.run(*RUN6, "--out", "ref")
    assert r.rc == 0, r
    yield root, srv
    srv.close()


def temporaries(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if p.name.startswith((".tmp-", ".trash-")) or p.name.endswith(".tmp")]


def assert_same_as_reference(root: Path, run: Path) -> None:
    """Each step logged once with the reference's loss (exactly), the same final weights, the
    top-level model.* the copies of the last set, and nothing temporary left."""
    ref = root / "ref"
    a, b = losses(ref), losses(run)
    assert sorted(b) == list(range(1, 7)) and a == b
    wa, wb = load_file(ref / "model.safetensors"), load_file(run / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    _, manifest = latest_checkpoint(run)
    assert manifest["step"] == 6 and [s for s, _ in committed_checkpoints(run)] == [6]
    for name in ("model.safetensors", "model.json"):
        assert file_sha256(run / name) == manifest["files"][name], name
    assert (run / "summary.json").is_file() and temporaries(run) == []


# -- 1. --out that is not our run -----------------------------------------------------------------


def test_out_not_written_by_genorder_is_refused_and_left_as_it_was(lab):
    root, srv = lab
    d = root / "d"  # the first reproduction, with the files the old code deleted
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "mine.bin").write_text("x")
    for name in ("log.jsonl", "summary.json", "samples.png", ".lock"):
        (d / name).write_text(f"the user's own {name}")
    t = root / "t"  # the second: a copied tokenizer folder
    shutil.copytree(root / "tok", t)
    before = {p: snapshot(p) for p in (d, t, root / "ref")}
    lock_text = (d / ".lock").read_text()
    cases = [
        ((*TRAIN, "--steps", "3", "--out", "d"), "--out d is not empty and was not written by genorder"),
        ((*TRAIN, "--steps", "3", "--out", "d", "--resume"), "--out d is not empty"),
        ((*TRAIN, "--steps", "3", "--out", "t"), "--out t holds a genorder tokenizer, not a run"),
        ((*TRAIN, "--steps", "3", "--out", "t", "--resume"), "--out t holds a genorder tokenizer"),
        ((*TOK, "--steps", "1", "--out", "d", "--overwrite"), "--out d is not empty and was not written by genorder"),
        ((*TOK, "--steps", "1", "--out", "ref", "--overwrite"), "--out ref holds a genorder run, not a tokenizer"),
        ((*TOK, "--steps", "1", "--out", "t"), "already holds a tokenizer; pass --overwrite"),
    ]
    for args, message in cases:
        r = srv.run(*args)
        assert r.rc == 2 and "error:" in r.err and message in r.text and "Traceback" not in r.err, (args, r)
        for p, snap in before.items():
            assert snapshot(p) == snap, (args, p)
        assert (d / ".lock").read_text() == lock_text  # not a PID file of ours: never overwritten
    assert sorted(p.name for p in d.rglob("*")) == [".lock", "checkpoints", "log.jsonl", "mine.bin", "samples.png", "summary.json"]


def test_our_own_half_started_folders_are_reused_touching_nothing_else(lab):
    root, srv = lab
    # a run of ours killed before its first checkpoint: marker, tokenizer copy, a log, a temporary
    r = srv.run(*RUN6, "--out", "early", inject=[{"target": "genorder.runs:commit_run_checkpoint", "call": 1,
                                                  "when": "before", "action": "kill"}])  # fmt: skip
    assert r.rc == -signal.SIGKILL, r
    early = root / "early"
    assert (early / ".genorder.json").is_file() and (early / "log.jsonl").is_file()
    assert committed_checkpoints(early) == []
    (early / "notes.txt").write_text("mine")  # a user's file in genorder's folder
    (early / "checkpoints").mkdir(exist_ok=True)
    (early / "checkpoints" / "mine.bin").write_text("mine too")
    r = srv.run(*RUN6, "--out", "early", "--resume")
    assert r.rc == 2 and "has no checkpoint to resume from; start it without --resume" in r.text, r
    r = srv.run(*RUN6, "--out", "early")  # the advice: it starts afresh, and loses nothing
    assert r.rc == 0, r
    assert_same_as_reference(root, early)
    assert (early / "notes.txt").read_text() == "mine"
    assert (early / "checkpoints" / "mine.bin").read_text() == "mine too"
    # an empty existing folder is fine; so is replacing our own tokenizer with --overwrite
    (root / "empty").mkdir()
    r = srv.run(*TOK, "--steps", "2", "--set", "train.log_every=1", "--out", "empty")
    assert r.rc == 0, r
    (root / "empty" / "notes.txt").write_text("mine")
    r = srv.run(*TOK, "--steps", "3", "--set", "train.log_every=1", "--out", "empty", "--overwrite")
    assert r.rc == 0, r
    steps = [json.loads(line)["step"] for line in (root / "empty" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]  # the new training's log, not appended to the old one
    assert json.loads((root / "empty" / "tokenizer.json").read_text())["spent"]["steps"] == 3
    assert (root / "empty" / "notes.txt").read_text() == "mine"


# -- 2. kill -9 at every point of the publish sequence ---------------------------------------------
# Calls in a 6-step run checkpointing at 2, 4, 6: shutil.copyfile 1-2 copy the tokenizer at the start,
# 3-4 publish step 2's model.safetensors / model.json, 5-6 step 4's; checkpoint._fsync_dir runs twice per
# set (the set's folder before the rename, the parent after); runs.discard drops the older set.

PUBLISH_POINTS = {
    "set written, not renamed": ("genorder.checkpoint:_fsync_dir", 1, "after", []),
    "first set renamed, parent not synced": ("genorder.checkpoint:_fsync_dir", 2, "before", [2]),
    "first set committed, not published": ("genorder.runs:publish_model", 1, "before", [2]),
    "first publish: model.safetensors tmp written": ("shutil:copyfile", 3, "after", [2]),
    "first publish: model.safetensors done, no model.json": ("shutil:copyfile", 4, "before", [2]),
    "second set committed, older not dropped": ("genorder.runs:discard", 1, "before", [2, 4]),
    "second publish: new weights, old model.json": ("shutil:copyfile", 6, "before", [4]),
    "final set committed, not published": ("genorder.runs:publish_model", 3, "before", [6]),
}


@pytest.mark.parametrize("point", list(PUBLISH_POINTS))
def test_kill9_in_the_publish_sequence_then_resume_is_the_uninterrupted_run(lab, point):
    root, srv = lab
    target, call, when, committed = PUBLISH_POINTS[point]
    name = "kill-" + "".join(c if c.isalnum() else "-" for c in point)
    run = root / name
    r = srv.run(*RUN6, "--out", name, inject=[{"target": target, "call": call, "when": when, "action": "kill"}])
    assert r.rc == -signal.SIGKILL, r
    assert [s for s, _ in committed_checkpoints(run)] == committed
    if committed:  # the set alone carries everything a resume needs
        d, _ = latest_checkpoint(run)
        meta = json.loads((d / "model.json").read_text())
        assert meta["identity"]["tokenizer"]["hash"].startswith("sha256:") and meta["spent"]["steps"] == committed[-1]
        r = srv.run(*RUN6, "--out", name)  # a fresh start over a committed set is refused, not a deletion
        assert r.rc == 2 and "already holds a run; pass --resume" in r.text, r
        assert [s for s, _ in committed_checkpoints(run)] == committed
        r = srv.run(*RUN6, "--out", name, "--resume")
        assert r.rc == 0, r
    else:
        r = srv.run(*RUN6, "--out", name, "--resume")
        assert r.rc == 2 and "start it without --resume" in r.text, r
        r = srv.run(*RUN6, "--out", name)
        assert r.rc == 0, r
    assert_same_as_reference(root, run)
    assert srv.run("sample", "--run", name, "--per-class", "1", "--out", "s.png").rc == 0


# -- 4. a deleted .lock; a half-made set -----------------------------------------------------------


def _wait_for_step(run: Path, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lines = (run / "log.jsonl").read_text().splitlines()[:-1]  # the last line may be torn
            if any(json.loads(line)["step"] >= step for line in lines):
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.01)
    raise AssertionError(f"{run} did not reach step {step}")


def test_a_deleted_lock_lets_no_second_writer_in(lab):
    root, srv = lab
    args = (*TRAIN, "--steps", "5000", "--checkpoint-every", "1", "--out", "locked")
    pid, log = srv.start(*args)
    run = root / "locked"
    _wait_for_step(run, 3)
    (run / ".lock").unlink()
    for extra in (("--resume",), ()):
        second = srv.run(*args, *extra)
        assert second.rc == 2, second
        assert f"in use by another genorder run (PID {pid})" in second.text and "Traceback" not in second.err, second
    os.kill(pid, signal.SIGTERM)
    first = srv.wait(pid, log)
    assert first.rc == 130, first  # the first writer was never disturbed: it checkpoints and stops
    step = committed_checkpoints(run)[-1][0]
    assert step >= 3 and sorted(losses(run)) == list(range(1, step + 1))  # one writer's steps, each once
    assert latest_checkpoint(run)[1]["step"] == step  # verified file by file
    r = srv.run(*TRAIN, "--steps", str(step + 2), "--checkpoint-every", "1", "--out", "locked", "--resume")
    assert r.rc == 0, r
    assert sorted(losses(run)) == list(range(1, step + 3)) and (run / ".lock").read_text().strip().isdigit()


def test_a_half_made_set_never_blocks_resume(lab):
    root, srv = lab
    run = root / "halfmade"
    shutil.copytree(root / "ref", run)
    (run / "checkpoints" / "step-000000076").mkdir()  # what two crashed writers left in the issue
    (run / "checkpoints" / "step-000000077").mkdir()
    (run / "checkpoints" / "step-000000077" / ".model.safetensors.x1y2.tmp").write_bytes(b"\0" * 10)
    assert [s for s, _ in committed_checkpoints(run)] == [6]  # readers ignore them
    r = srv.run(*TRAIN, "--steps", "8", "--checkpoint-every", "2", "--out", "halfmade", "--resume")
    assert r.rc == 0, r
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000000008"]
    assert sorted(losses(run)) == list(range(1, 9))


# -- 8. the tokenizer trainer's non-finite guard ---------------------------------------------------


def test_train_tokenizer_with_a_huge_lr_stops_and_saves_nothing_non_finite(lab):
    root, srv = lab
    r = srv.run(*TOK, "--steps", "6", "--lr", "1e30", "--out", "tk-nan")
    assert r.rc == 2 and "error: training diverged" in r.text and "non-finite" in r.text, r
    assert "Traceback" not in r.err
    out = root / "tk-nan"
    assert not (out / "tokenizer.safetensors").exists() and not (out / "metrics.json").exists()
    recs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in recs if rec.get("skipped")] == [2, 3, 4, 5]  # 3 in a row tolerated
    # checkpointing every step: skipped steps leave the weights finite, so steps 1-4 are saved, not 5
    r = srv.run(*TOK, "--steps", "6", "--lr", "1e30", "--set", "train.checkpoint_every=1", "--out", "tk-nan1")
    assert r.rc == 2 and "the last good checkpoint (step 4) is kept" in r.text, r
    state = load_file(root / "tk-nan1" / "tokenizer.safetensors")
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    assert json.loads((root / "tk-nan1" / "tokenizer.json").read_text())["spent"]["steps"] == 4


def _tiny_images(n: int = 32):
    from genorder.testing.stubs import tensor_dataset

    g = torch.Generator().manual_seed(0)
    return tensor_dataset(torch.randint(0, 256, (n, 1, 16, 16), generator=g, dtype=torch.uint8), torch.arange(n) % 2)


def _tokenizer_run(tmp_path, name, steps, poisoned, monkeypatch, **train):
    """msvq-tiny trained in-process for `steps`, its reconstruction NaN at the steps in `poisoned`
    (1-based); returns (tokenizer, the parameters after every step, the outcome)."""
    from genorder.budget import Budget
    from genorder.registry import registry
    from genorder.testing import one_thread
    from genorder.tokenizer_training import train_tokenizer

    tok = registry("tokenizers").create("msvq-tiny", {"channels": 1, "image_size": 16})
    cfg = tok.TrainConfig(batch_size=8, budget=Budget(steps=steps), log_every=1, eval_images=8,
                          eval_prefix_images=8, grid_images=2, device="cpu", **train)  # fmt: skip
    real = tok.forward
    calls = {"step": 0}

    def forward(x):
        rec, vq, usage = real(x)
        return (rec * float("nan"), vq, usage) if tok.training and calls["step"] in poisoned else (rec, vq, usage)

    monkeypatch.setattr(tok, "forward", forward)
    weights = []

    def progress(done, total, m):
        weights.append({k: v.detach().clone() for k, v in tok.named_parameters()})
        calls["step"] = done + 1

    calls["step"] = 1
    with one_thread():
        try:
            outcome = train_tokenizer(tok, "msvq-tiny", _tiny_images(), cfg, tmp_path / name, progress=progress)
        except Exception as err:  # noqa: BLE001 - the test inspects it
            outcome = err
    return tok, weights, outcome


def test_a_non_finite_tokenizer_step_is_skipped_without_an_update(tmp_path, monkeypatch):
    from genorder.trainer import TrainingDiverged

    _, weights, metrics = _tokenizer_run(tmp_path, "a", 6, {3}, monkeypatch)
    assert isinstance(metrics, dict) and metrics["steps"] == 6, metrics
    recs = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert [bool(r.get("skipped")) for r in recs] == [False, False, True, False, False, False]
    assert all(torch.equal(weights[1][k], weights[2][k]) for k in weights[1])  # no update at step 3
    assert not all(torch.equal(weights[2][k], weights[3][k]) for k in weights[2])  # updates after it
    state = load_file(tmp_path / "a" / "tokenizer.safetensors")
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    # NaN from step 3 on: steps 3, 4, 5 skipped (step 4's state is finite and saved), the 4th in a
    # row (6) stops before its checkpoint: step 4's stays
    _, _, err = _tokenizer_run(tmp_path, "b", 20, set(range(3, 21)), monkeypatch, checkpoint_every=2)
    assert isinstance(err, TrainingDiverged) and "4 in a row" in str(err) and "(step 4) is kept" in str(err), err
    assert json.loads((tmp_path / "b" / "tokenizer.json").read_text())["spent"]["steps"] == 4
    # the total limit: every other step NaN, nonfinite_total=2 -> the third one stops the run
    _, _, err = _tokenizer_run(tmp_path, "c", 20, {2, 4, 6, 8}, monkeypatch, nonfinite_total=2)
    assert isinstance(err, TrainingDiverged) and "3 in all" in str(err) and "at step 6" in str(err), err


# -- 9. a full disk during a checkpoint write ------------------------------------------------------


@pytest.mark.parametrize("action", ["enospc-safetensors", "enospc-os"])
def test_disk_full_during_a_checkpoint_is_an_error_and_keeps_the_previous_one(lab, action):
    root, srv = lab
    name = f"full-{action}"
    run = root / name
    # save_file calls: 1-2 step 2's model and optim, 3 step 4's model: the disk fills up there
    r = srv.run(*RUN6, "--out", name, inject=[{"target": "safetensors.torch:save_file", "call": 3,
                                               "when": "before", "action": action}])  # fmt: skip
    assert r.rc == 2, r
    assert "error:" in r.err and "No space left on device" in r.text and "Traceback" not in r.err, r
    assert "the checkpoint of step 4 was not saved" in r.text and "step-000000002, is intact" in r.text, r
    _, manifest = latest_checkpoint(run)  # verified file by file
    assert manifest["step"] == 2 and [s for s, _ in committed_checkpoints(run)] == [2]
    assert file_sha256(run / "model.safetensors") == manifest["files"]["model.safetensors"]
    assert temporaries(run) == []
    r = srv.run(*RUN6, "--out", name, "--resume")  # room again: it continues from step 2
    assert r.rc == 0, r
    assert_same_as_reference(root, run)


def test_disk_full_while_the_tokenizer_trainer_saves(lab):
    root, srv = lab
    r = srv.run(*TOK, "--steps", "3", "--set", "train.checkpoint_every=1", "--out", "tk-full",
                inject=[{"target": "safetensors.torch:save_file", "call": 2, "when": "before",
                         "action": "enospc-safetensors"}])  # fmt: skip
    assert r.rc == 2 and "error: cannot write" in r.text and "No space left on device" in r.text, r
    out = root / "tk-full"
    assert json.loads((out / "tokenizer.json").read_text())["spent"]["steps"] == 1  # step 1's pair intact
    assert load_file(out / "tokenizer.safetensors") and temporaries(out) == []


def test_run_lock_is_the_directory_s_own(tmp_path):
    """In-process: the lock survives its `.lock` file being deleted, names the holder from
    /proc/locks, and a `.lock` holding anything but a PID is never overwritten."""
    from genorder.errors import UserError
    from genorder.lock import RunLock

    with RunLock(tmp_path):
        (tmp_path / ".lock").unlink()
        with pytest.raises(UserError, match=f"PID {os.getpid()}"):
            RunLock(tmp_path).acquire()
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    other = tmp_path / "other"
    other.mkdir()
    (other / ".lock").write_text("not a pid")
    with RunLock(other) as lock:
        assert lock.held and (other / ".lock").read_text() == "not a pid"


def test_import_into_a_folder_genorder_did_not_write_is_refused_untouched(tmp_path):
    """`import --out`: refused before the importer's weights are even looked at."""
    from genorder.errors import UserError
    from genorder.importers import write_run

    t = tmp_path / "t"
    t.mkdir()
    (t / "tokenizer.safetensors").write_bytes(b"precious")
    with pytest.raises(UserError, match="--out .* is not empty and was not written by genorder"):
        write_run(None, t, "var")
    assert sorted(os.listdir(t)) == ["tokenizer.safetensors"] and (t / "tokenizer.safetensors").read_bytes() == b"precious"
