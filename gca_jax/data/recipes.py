"""Corpus recipes: several source formats read from Debian packages, one corpus per split.

A recipe names (format, Debian package) parts. `fetch_packages` downloads the packages with
`apt-get download` and unpacks them with `dpkg -x` into one root directory (nothing is installed);
`prepare_recipe` then plans every part under that root for each of train/validation/test (each
format splits its documents by name, `sources.splits`) and writes `<out>/<split>`, a normal
corpus directory, with the GPT-2 tokenizer by default. docs/data.md §3.4 lists the recipes, the
commands and the measured sizes.
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import subprocess
import types

from gca_jax.data import prepare, sources
from gca_jax.data.sources import kjv, linuxdoc, perldoc, pythondoc, rdata, splits

logger = logging.getLogger(__name__)

DEBIAN_ROOT = os.path.join("data", "debian")
DEFAULT_TOKENIZER = "gpt2"


@dataclasses.dataclass(frozen=True)
class Part:
    """One source of a recipe.

    Attributes:
        format: the source format (a key of `sources.SOURCES`).
        package: the Debian package holding it.
        layout: the glob, relative to the root, that must exist once the package is unpacked.
        versioned: for an unversioned metapackage (`linux-doc`), the prefix of the versioned
            package it depends on (`linux-doc-`), which is the one downloaded.
    """

    format: str
    package: str
    layout: str
    versioned: str | None = None


RECIPES = types.MappingProxyType(
    {
        "books": (
            Part("rdata", "r-cran-janeaustenr", rdata.JANEAUSTENR_DATA),
            Part("kjv", "bible-kjv-text", kjv.DATA_PATH),
        ),
        "tech": (
            Part("perldoc", "perl-doc", perldoc.PATTERN),
            Part("linuxdoc", "linux-doc", linuxdoc.PATTERN, versioned="linux-doc-"),
            Part("pythondoc", "python3-doc", pythondoc.PATTERN, versioned="python3."),
        ),
        # Document -> summary pairs, not a token corpus: `gca_jax.data.synopsis` (§6.1).
        "synopsis": (
            Part("perldoc", "perl-doc", perldoc.PATTERN),
            Part("pythondoc", "python3-doc", pythondoc.PATTERN, versioned="python3."),
        ),
    }
)
PAIR_RECIPES = ("synopsis",)  # written as jsonl pairs by gca_jax.data.synopsis.prepare_pairs


def get_recipe(name: str) -> tuple[Part, ...]:
    """The parts of recipe `name`.

    Raises:
        ValueError: for an unknown recipe, listing the known ones.
    """
    if name not in RECIPES:
        raise ValueError(f"recipe {name=} is unknown; choose one of {tuple(RECIPES)}")
    return RECIPES[name]


def _run(cmd: list[str], **kwargs) -> str:
    """Run a command, returning its stdout; a failure raises `RuntimeError` with its output."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    except OSError as e:
        raise RuntimeError(f"could not run `{' '.join(cmd)}`: {e}") from e
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip()[-2000:]
        raise RuntimeError(f"`{' '.join(cmd)}` failed (exit status {proc.returncode}):\n{tail}")
    return proc.stdout


def resolve_package(part: Part) -> str:
    """The package to download: `part.package`, or the versioned one its metapackage names."""
    if part.versioned is None:
        return part.package
    for line in _run(["apt-cache", "depends", part.package]).splitlines():
        kind, _, dep = line.strip().lstrip("|").partition(": ")
        if kind == "Depends" and dep.startswith(part.versioned):
            return dep
    raise RuntimeError(
        f"`apt-cache depends {part.package}` names no {part.versioned}* package; "
        "run `apt-get update` once first"
    )


def fetch_packages(name: str, root: str | os.PathLike = DEBIAN_ROOT) -> list[str]:
    """Download recipe `name`'s packages into `<root>/debs` and unpack them into `root`.

    Idempotent: a part whose layout already exists under `root` is skipped. Needs `apt-get`
    (after one `apt-get update`) and `dpkg`; nothing is installed.

    Returns:
        The .deb files unpacked now.

    Raises:
        ValueError: an unknown recipe.
        RuntimeError: apt-get or dpkg failed (the message has their output).
    """
    root = os.fspath(root)
    debs_dir = os.path.join(root, "debs")
    os.makedirs(debs_dir, exist_ok=True)
    unpacked = []
    for part in get_recipe(name):
        if glob.glob(os.path.join(glob.escape(root), part.layout)):
            continue
        package = resolve_package(part)
        logger.info("downloading %s for %s", package, part.format)
        try:
            _run(["apt-get", "download", package], cwd=debs_dir)
        except RuntimeError as e:
            raise RuntimeError(
                f"{e}\n(if apt cannot find {package}, run `apt-get update` once)"
            ) from e
        for deb in sorted(glob.glob(os.path.join(glob.escape(debs_dir), f"{package}_*.deb"))):
            _run(["dpkg", "-x", deb, root])
            unpacked.append(deb)
    return unpacked


def plan_recipe(name: str, root: str | os.PathLike, split: str) -> list[sources.ShardTask]:
    """The shard tasks of every part of recipe `name` for `split`, parts in recipe order.

    Raises:
        ValueError: an unknown recipe or split, or a part whose package is not unpacked in `root`.
    """
    root = os.fspath(root)
    splits.check_split(f"recipe {name}", split)
    plan = []
    for part in get_recipe(name):
        if not glob.glob(os.path.join(glob.escape(root), part.layout)):
            raise ValueError(
                f"{root=} has no {part.layout} ({part.package} for format {part.format!r}); "
                f"fetch it with `python -m train.prepare --fetch-packages {name} --out {root}`"
            )
        plan += sources.plan_shards([root], format=part.format, split=split)
    return plan


def prepare_recipe(
    name: str,
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    tokenizer: str = DEFAULT_TOKENIZER,
    num_workers: int = 1,
    progress=None,
) -> dict[str, dict]:
    """Prepare `<out_dir>/<split>` for train, validation and test (resumable, like any corpus).

    Args:
        name: a key of `RECIPES`.
        root: where the recipe's packages are unpacked (`fetch_packages`), or `/` when installed.
        out_dir: parent of the three corpus directories.
        tokenizer: see `prepare.prepare_corpus` (default "gpt2").
        num_workers: tokenizer processes.
        progress: see `prepare.prepare_corpus`.

    Returns:
        Split -> the manifest of `prepare.prepare_corpus`.

    Raises:
        ValueError: see `plan_recipe`, and `prepare.prepare_tasks`.
    """
    root = os.fspath(root)
    if name in PAIR_RECIPES:
        raise ValueError(f"recipe {name=} makes summarization pairs: use synopsis.prepare_pairs")
    plans = {split: plan_recipe(name, root, split) for split in splits.SPLITS}  # Check all first.
    out = {}
    for split, plan in plans.items():
        source = {"recipe": name, "inputs": [os.path.abspath(root)]}
        out[split] = prepare.prepare_tasks(
            plan,
            os.path.join(os.fspath(out_dir), split),
            tokenizer=tokenizer,
            split=split,
            source=source,
            num_workers=num_workers,
            progress=progress,
        )
    return out
