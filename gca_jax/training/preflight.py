"""Checks a training run makes before it writes anything (docs/reliability.md).

Each raises ``ValueError`` (or ``FileNotFoundError``) with a one-line message naming the flag or
key, the value and the fix: the config file (present, a file, non-empty, valid YAML), the
tokenizer against the model (vocabulary size and special ids), every prepared corpus (complete,
made with this tokenizer), the summarization pairs (``data.task: summarization``) and
``--init_from`` (a checkpoint is there).
"""

import os

import yaml

from gca_jax.config import Config


def check_config_file(path: str) -> None:
    """``--config`` must name a readable, non-empty YAML mapping.

    Raises:
      FileNotFoundError: no such file.
      ValueError: a directory, an empty file (it would silently mean the full default run) or
        malformed YAML (the message gives line and column).
    """
    if os.path.isdir(path):
        raise ValueError(
            f"--config {path} is a directory: give a YAML file, e.g. configs/tiny.yaml"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config {path}: no such file")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"--config {path}: malformed YAML{at}: {problem}") from e
    if raw is None:
        raise ValueError(
            f"--config {path} is empty: an empty config would mean the full default run; "
            "write the sections you want (configs/tiny.yaml is a small example)"
        )


def check_tokenizer(cfg: Config) -> None:
    """The tokenizer's vocabulary and special ids must fit the model.

    Raises:
      ValueError: ``data.tokenizer`` cannot be loaded, has more ids than ``model.vocab_size``,
        or its pad or landmark id differs from the model's.
    """
    from gca_jax.data import load_tokenizer

    m, spec = cfg.model, f"data.tokenizer={cfg.data.tokenizer!r}"
    try:
        tok = load_tokenizer(cfg.data.tokenizer)
    except ValueError as e:
        raise ValueError(f"{spec}: {e}") from e
    if tok.vocab_size > m.vocab_size:
        raise ValueError(
            f"{spec} has {tok.vocab_size} ids but model.vocab_size={m.vocab_size}: ids from "
            f"{m.vocab_size} on would index past the embedding; set model.vocab_size to at "
            f"least {tok.vocab_size}"
        )
    for key in ("pad_id", "landmark_id"):
        if getattr(tok, key) != getattr(m, key):
            raise ValueError(
                f"{spec} has {key} {getattr(tok, key)} but model.{key}={getattr(m, key)}: set "
                f"model.{key}={getattr(tok, key)}"
            )


def check_corpora(cfg: Config) -> None:
    """``data.corpus_dir`` and ``data.eval_corpus_dir`` (when set) must be complete and match.

    Raises:
      ValueError: a corpus that is missing, partly prepared or made with another tokenizer.
    """
    from gca_jax.data import check_tokenizer_matches, load_tokenizer, read_manifest

    identity = load_tokenizer(cfg.data.tokenizer).identity
    for key in ("corpus_dir", "eval_corpus_dir"):
        corpus = getattr(cfg.data, key)
        if corpus is None:
            continue
        try:
            manifest = read_manifest(corpus)
            check_tokenizer_matches(manifest, identity)
        except ValueError as e:
            raise ValueError(f"data.{key}={corpus!r}: {e}") from e
        except OSError as e:
            raise ValueError(f"data.{key}={corpus!r}: unreadable ({e.strerror})") from e


def check_pairs(cfg: Config) -> None:
    """``data.summary_dir`` (``data.task: summarization``) must hold a usable train split.

    The split must be readable (``summarization.read_split``) and the format must fit the
    tokenizer's cue (``SummarizationFormat``).

    Raises:
      ValueError: a missing directory or split, files without the pair fields, or a format
        with no room for the tokenizer's cue.
    """
    if cfg.data.task != "summarization":
        return
    from gca_jax.data import load_tokenizer, summarization
    from gca_jax.training.inputs import summarization_format

    key = f"data.summary_dir={cfg.data.summary_dir!r}"
    try:
        summarization.split_files(cfg.data.summary_dir, "train")
        summarization_format(cfg, load_tokenizer(cfg.data.tokenizer))
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from e


def check_init_from(path: str | None) -> None:
    """``--init_from`` must hold a checkpoint (FileNotFoundError naming the flag)."""
    if path is not None:
        from gca_jax.checkpoint import resolve_step_dir

        resolve_step_dir(path, flag="--init_from")


def check_run(cfg: Config, init_from: str | None) -> None:
    """Every check of a run's inputs that needs no output directory (see the module doc)."""
    check_tokenizer(cfg)
    check_corpora(cfg)
    check_pairs(cfg)
    check_init_from(init_from)
