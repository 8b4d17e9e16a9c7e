"""`perldoc`: Perl's manuals from Debian's `perl-doc` package, one POD file per document.

Input: the package root (`dpkg -x perl-doc_*.deb ROOT`, or `/` once installed), whose
`usr/share/perl/<version>/pod/*.pod` are the 206 manuals of perl 5.36 (`perlfunc.pod`, ...), or a
directory of `.pod` files. Documents are the POD sources as shipped, markup included, like the reST
of `linuxdoc` and `pythondoc`; `--split` train/validation/test by manual (`splits`).
"""

from gca_jax.data.sources import packaged
from gca_jax.data.sources.base import Source

PATTERN = "usr/share/perl/*/pod"
SUFFIXES = (".pod",)

SOURCE = Source(
    name="perldoc",
    inputs="`perl-doc` root or POD directory",
    notes=f"`{PATTERN}/*.pod`, one manual each; `--split` train, validation or test (§3.4)",
    plan=lambda inputs, options: packaged.plan(
        "perldoc", inputs, options, pattern=PATTERN, suffixes=SUFFIXES
    ),
    read=packaged.read,
)
