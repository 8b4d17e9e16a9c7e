"""Assertions and fault injectors shared by the training fault-injection tests."""

import glob
import json
import os
import shutil

import numpy as np
import orbax.checkpoint as ocp


def assert_one_error(proc, *needles: str) -> str:
    """Exit status 2, exactly one ``error:`` line holding every needle, and no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    assert_no_traceback(proc)
    return errors[0]


def assert_no_traceback(proc) -> None:
    """Neither the command nor a thread left at exit (tensorboardX, Orbax) printed a traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr[-6000:]
    assert "Exception in thread" not in proc.stderr, proc.stderr[-6000:]


def assert_ok(proc) -> None:
    """Exit status 0 and no traceback."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_no_traceback(proc)


def steps(run_dir: str) -> list[int]:
    """The complete checkpoint steps of a run, ascending."""
    root = os.path.join(run_dir, "checkpoints")
    return sorted(int(n) for n in os.listdir(root) if n.isdigit())


def metric_steps(run_dir: str) -> list[int]:
    """The steps of metrics.jsonl's train rows, in file order (every line must parse)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [r["step"] for r in rows if r["split"] == "train"]


def assert_records_intact(run_dir: str, last_step: int) -> None:
    """metrics.jsonl holds each step 1..last_step once; no TensorBoard event file is empty."""
    assert metric_steps(run_dir) == list(range(1, last_step + 1))
    events = glob.glob(os.path.join(run_dir, "tensorboard", "events.out.tfevents.*"))
    assert events and all(os.path.getsize(e) > 0 for e in events), events


def _flat(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}/{k}"))
        return out
    return {prefix: np.asarray(tree)}


def params(step_dir: str) -> dict[str, np.ndarray]:
    """A checkpoint's parameters, flattened to {path: array}."""
    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore(os.path.join(step_dir, "state"))
    return _flat(state["params"])


def assert_same_params(run_a: str, run_b: str, step: int) -> None:
    """The checkpoints of ``step`` in two runs hold bitwise equal parameters."""
    a = params(os.path.join(run_a, "checkpoints", str(step)))
    b = params(os.path.join(run_b, "checkpoints", str(step)))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def array_files(step_dir: str) -> list[str]:
    """A checkpoint's array data files (OCDBT), largest first."""
    files = glob.glob(os.path.join(step_dir, "state", "ocdbt.process_*", "d", "*"))
    return sorted(files, key=os.path.getsize, reverse=True)


def flip_bytes(path: str, count: int = 4096) -> None:
    """Inverts ``count`` bytes in the middle of a file."""
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        mid = len(data) // 2
        data[mid : mid + count] = bytes(b ^ 0xFF for b in data[mid : mid + count])
        f.seek(0)
        f.write(data)


def truncate(path: str) -> None:
    """Cuts a file to a third of its length (a write cut short)."""
    os.truncate(path, os.path.getsize(path) // 3)


def rewrite_state(step_dir: str, change, *, keep_digest: bool = True) -> None:
    """Replaces a checkpoint's ``state`` by ``change(state)``.

    With ``keep_digest`` the old digest stays: damage that every file format check misses (the
    values decode, but are not the saved ones), which only the digest or the finiteness check
    can find. Without, the digest is rewritten: a state that is intact but not the saved one.
    """
    path = os.path.join(step_dir, "state")
    with ocp.StandardCheckpointer() as ckptr:
        state = ckptr.restore(path)
    state = change(state)
    new = path + ".new"
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(new, state)
    shutil.rmtree(path)
    os.rename(new, path)
    if not keep_digest:
        from gca_jax.checkpoint import DIGEST_FORMAT, tree_digest

        with open(os.path.join(step_dir, "digest", "metadata"), "w") as f:
            json.dump({"format": DIGEST_FORMAT, "leaves": tree_digest(state)[0]}, f)


def assert_restorable(step_dir: str) -> None:
    """The parameters of a checkpoint restore, checked against its digest and for finiteness."""
    from gca_jax import checkpoint as ckpt_lib
    from gca_jax import sharding as shard_lib
    from gca_jax.config import load_config
    from gca_jax.training import abstract_state, make_optimizer

    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "tiny.yaml"))
    mesh = shard_lib.make_mesh(cfg.mesh)
    _, abstract, _ = abstract_state(cfg.model, cfg.train.seed, make_optimizer(cfg.train), mesh)
    ckpt_lib.restore_params(step_dir, abstract.params, flag="--checkpoint")
