"""Release tooling: what ships and guards a deployed job, never imported by the pipeline itself.

``template_metadata`` generates ``templates/metadata.json`` from the pipeline options,
``labels`` keeps the Dataflow transform labels stable (``tests/golden/transform_labels.txt``), ``provision`` creates
the BigQuery dataset, tables and final-pane view the sinks write to.
"""
