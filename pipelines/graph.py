"""Pipeline construction: a pure function from options to a graph, separate from launching it.

The CLI, the flex template launcher and the tests call ``build_pipeline`` and get the very same graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import AnalyticsOptions, analytics_config
from transforms.analytics import AGGREGATES, DEAD_LETTERS, AnalyticsConfig, StreamingAnalytics
from transforms.io import ReadRecords, WriteRows


@dataclass(frozen=True)
class PipelineOutputs:
    config: AnalyticsConfig
    aggregates: beam.PCollection
    dead_letters: beam.PCollection


def build_pipeline(p: beam.Pipeline, options: PipelineOptions) -> PipelineOutputs:
    """Adds read -> analytics -> write to ``p``. Raises ConfigError for bad options (before adding anything)."""
    config = analytics_config(options)
    opts = options.view_as(AnalyticsOptions)
    records = p | "ReadRecords" >> ReadRecords(opts.source, config.format, config.streaming)
    outputs = records | "StreamingAnalytics" >> StreamingAnalytics(config)
    outputs[AGGREGATES] | "WriteAggregates" >> WriteRows(opts.sink, config.streaming)
    outputs[DEAD_LETTERS] | "WriteDeadLetters" >> WriteRows(opts.dead_letter_sink, config.streaming)
    return PipelineOutputs(config, outputs[AGGREGATES], outputs[DEAD_LETTERS])
