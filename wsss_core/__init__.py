"""wsss_core: the library behind the wsss workflow, one package per stage.

Every computation of the workflow lives here; the Snakemake rules and the workflow scripts
only name files and parse arguments. Stages: ``data``, ``classifier``, ``cams`` (relevance
maps), ``seeds``, ``affinity``, ``walk``, ``segmenter``, ``evaluate``, ``report``; shared:
``train`` (the one training loop), ``io`` (atomic outputs and tables), ``cli`` (script
plumbing), ``runtime`` (device, threads, seeds), ``shards``, ``config``.
"""

__version__ = "0.1.0"
