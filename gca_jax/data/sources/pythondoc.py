"""`pythondoc`: the reST sources of the Python documentation from Debian's `python3.X-doc`.

Input: the package root (`dpkg -x python3.11-doc_*.deb ROOT`, or `/` once installed), whose
`usr/share/doc/python3.<minor>/html/_sources/**/*.txt` are the 497 pages of Python 3.11 (the
highest version is taken when several are unpacked), or a directory of `.txt` files. The same files
as docs/data.md §3.2's `text` recipe, but split three ways by page (`splits`).
"""

from gca_jax.data.sources import packaged
from gca_jax.data.sources.base import Source

PATTERN = "usr/share/doc/python3*/html/_sources"
SUFFIXES = (".txt",)

SOURCE = Source(
    name="pythondoc",
    inputs="`python3.X-doc` root or `_sources` directory",
    notes=f"`{PATTERN}/**/*.txt`; `--split` train, validation or test (§3.4)",
    plan=lambda inputs, options: packaged.plan(
        "pythondoc", inputs, options, pattern=PATTERN, suffixes=SUFFIXES
    ),
    read=packaged.read,
)
