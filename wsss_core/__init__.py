"""wsss_core: the library behind the wsss workflow.

Every computation of the workflow lives here; the Snakemake rules and the
workflow scripts only name files and parse arguments.
"""

__version__ = "0.1.0"
