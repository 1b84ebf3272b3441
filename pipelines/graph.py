"""Pipeline construction: a pure function from options to a graph, separate from launching it.

The CLI, the flex template launcher and the tests call ``build_pipeline`` and get the very same graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.options import AnalyticsOptions, analytics_config, bigquery_sink_settings, kafka_security_settings
from pipelines.runners import is_direct
from schemas import AGGREGATES_TABLE, DEAD_LETTER_TABLE
from transforms.analytics import AGGREGATES, DEAD_LETTERS, AnalyticsConfig, StreamingAnalytics
from transforms.io import SYNTHETIC, ReadRecords, WriteRows, is_cross_language, is_replay, scheme_of
from transforms.io.bigquery import log_lost_dead_letter
from transforms.io.kafka import KafkaSettings
from transforms.io.synthetic import as_replay

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineOutputs:
    config: AnalyticsConfig
    aggregates: beam.PCollection
    dead_letters: beam.PCollection


def kafka_settings(options: PipelineOptions) -> KafkaSettings | None:
    """Consumer settings and the cached-jar expansion service, when a source or sink is kafka:// (else None)."""
    opts = options.view_as(AnalyticsOptions)
    if not any(is_cross_language(uri) for uri in (opts.source, opts.sink, opts.dead_letter_sink)):
        return None
    from pipelines.runners import kafka_expansion_service  # fetches the jars on first use (mvn, cached)

    security = kafka_security_settings(options).client_config()  # TLS/SASL; secrets only as ${env:...} references
    return KafkaSettings(
        opts.kafka_consumer_group, opts.kafka_start_offset, kafka_expansion_service(options), tuple(security.items())
    )


def build_pipeline(p: beam.Pipeline, options: PipelineOptions) -> PipelineOutputs:
    """Adds read -> analytics -> write to ``p``. Raises ConfigError for bad options (before adding anything)."""
    config = analytics_config(options)
    if config.streaming:
        # Replays and broker sources are streams whether or not --streaming was given; Beam's I/O checks the flag
        # on the pipeline's own copy of the options (Pipeline deep-copies them).
        options.view_as(StandardOptions).streaming = True
        p.options.view_as(StandardOptions).streaming = True
    opts = options.view_as(AnalyticsOptions)
    source = opts.source
    if config.streaming and is_direct(options) and scheme_of(source) == SYNTHETIC and not is_replay(source):
        # Beam's Python direct runner cannot run an unbounded splittable source (PeriodicImpulse) together with
        # processing-time triggers, so locally a streaming synthetic source is replayed on a simulated clock.
        # Portable runners (Flink, Dataflow) generate forever at `rate` records/s.
        _LOG.warning("direct runner: replaying the synthetic stream on a simulated clock (mode=replay)")
        source = as_replay(source)
    kafka = kafka_settings(options)
    records = p | "ReadRecords" >> ReadRecords(source, config.format, config.streaming, kafka=kafka)
    outputs = records | "StreamingAnalytics" >> StreamingAnalytics(config)
    bigquery = bigquery_sink_settings(options)
    write_aggregates = WriteRows(opts.sink, config.streaming, AGGREGATES_TABLE, **bigquery, kafka=kafka)
    refused = outputs[AGGREGATES] | "WriteAggregates" >> write_aggregates
    dead_letters = outputs[DEAD_LETTERS]
    if write_aggregates.returns_failed_rows:
        # Aggregate rows the table refused are dead letters too (stage=write).
        dead_letters = (dead_letters, refused) | "WithRefusedAggregates" >> beam.Flatten()
    write_dead_letters = WriteRows(opts.dead_letter_sink, config.streaming, DEAD_LETTER_TABLE, **bigquery, kafka=kafka)
    lost = dead_letters | "WriteDeadLetters" >> write_dead_letters
    if write_dead_letters.returns_failed_rows:
        # They cannot go back into the sink that refused them: logged in full, counted (dead_letter_write_failures).
        lost | "LogLostDeadLetters" >> beam.Map(log_lost_dead_letter)
    return PipelineOutputs(config, outputs[AGGREGATES], outputs[DEAD_LETTERS])
