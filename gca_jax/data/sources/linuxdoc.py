"""`linuxdoc`: the Linux kernel's reST documentation from Debian's `linux-doc-<version>` package.

Input: the package root (`dpkg -x linux-doc-6.1_*.deb ROOT`, or `/` once installed), whose
`usr/share/doc/linux-doc-<version>/Documentation/**/*.rst[.gz]` are the documents (3,183 files of
the 6.1 package, 24 MB once gunzipped; the highest version is taken when several are unpacked), or
a directory of `.rst`/`.rst.gz` files. `--split` train/validation/test by file (`splits`).
"""

from gca_jax.data.sources import packaged
from gca_jax.data.sources.base import Source

PATTERN = "usr/share/doc/linux-doc-*/Documentation"
SUFFIXES = (".rst",)

SOURCE = Source(
    name="linuxdoc",
    inputs="`linux-doc-*` root or reST directory",
    notes=f"`{PATTERN}/**/*.rst[.gz]`; `--split` train, validation or test (§3.4)",
    plan=lambda inputs, options: packaged.plan(
        "linuxdoc", inputs, options, pattern=PATTERN, suffixes=SUFFIXES
    ),
    read=packaged.read,
)
