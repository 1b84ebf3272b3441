"""Pipeline construction: a pure function from options to a graph, separate from launching it.

The CLI, the flex template launcher and the tests call ``build_pipeline`` and get the very same graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import AnalyticsOptions, analytics_config
from pipelines.runners import is_direct
from transforms.analytics import AGGREGATES, DEAD_LETTERS, AnalyticsConfig, StreamingAnalytics
from transforms.io import SYNTHETIC, ReadRecords, WriteRows, is_replay, scheme_of
from transforms.io.synthetic import as_replay

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineOutputs:
    config: AnalyticsConfig
    aggregates: beam.PCollection
    dead_letters: beam.PCollection


def build_pipeline(p: beam.Pipeline, options: PipelineOptions) -> PipelineOutputs:
    """Adds read -> analytics -> write to ``p``. Raises ConfigError for bad options (before adding anything)."""
    config = analytics_config(options)
    opts = options.view_as(AnalyticsOptions)
    source = opts.source
    if config.streaming and is_direct(options) and scheme_of(source) == SYNTHETIC and not is_replay(source):
        # Beam's Python direct runner cannot run an unbounded splittable source (PeriodicImpulse) together with
        # processing-time triggers, so locally a streaming synthetic source is replayed on a simulated clock.
        # Portable runners (Flink, Dataflow) generate forever at `rate` records/s.
        _LOG.warning("direct runner: replaying the synthetic stream on a simulated clock (mode=replay)")
        source = as_replay(source)
    records = p | "ReadRecords" >> ReadRecords(source, config.format, config.streaming)
    outputs = records | "StreamingAnalytics" >> StreamingAnalytics(config)
    outputs[AGGREGATES] | "WriteAggregates" >> WriteRows(opts.sink, config.streaming)
    outputs[DEAD_LETTERS] | "WriteDeadLetters" >> WriteRows(opts.dead_letter_sink, config.streaming)
    return PipelineOutputs(config, outputs[AGGREGATES], outputs[DEAD_LETTERS])
