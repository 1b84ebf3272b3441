"""Pipeline construction: a pure function from a launch spec to a graph, separate from launching it.

The CLI, the flex template launcher and the tests call ``build_pipeline`` with the spec ``pipelines.spec.resolve``
made, and get the very same graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import apache_beam as beam

from pipelines import runners
from pipelines.spec import LaunchSpec
from transforms.analytics import AGGREGATES, DEAD_LETTERS, AnalyticsConfig, StreamingAnalytics
from transforms.io import ReadRecords, SinkSettings, WriteRows
from transforms.io.bigquery import log_lost_dead_letter

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineOutputs:
    config: AnalyticsConfig
    aggregates: beam.PCollection
    dead_letters: beam.PCollection


def new_pipeline(spec: LaunchSpec) -> beam.Pipeline:
    """An empty pipeline on the engine the spec chose, with the Beam options that engine needs (the one place that
    says so when the engine is not the one asked for)."""
    if spec.runner.stands_in:
        # Beam's Python direct runners cannot run Java transforms; Prism runs the very same pipeline.
        _LOG.warning(
            "direct runner: kafka:// runs Beam's Java KafkaIO, which the direct runner cannot run; running on Prism "
            "(built and cached by the project) instead"
        )
    if spec.source.uri != spec.source.given:
        _LOG.warning("direct runner: replaying the synthetic stream on a simulated clock (mode=replay)")
    options = runners.beam_options(spec.runner, spec.argv)
    return beam.Pipeline(runner=runners.runner_object(spec.runner), options=options)


def build_pipeline(p: beam.Pipeline, spec: LaunchSpec) -> PipelineOutputs:
    """Adds read -> analytics -> write to ``p``."""
    config = spec.analytics
    expansion = runners.kafka_expansion_service(spec.runner) if spec.cross_language else None

    def with_expansion(sink: SinkSettings) -> SinkSettings:
        if sink.kafka is None:
            return sink
        return replace(sink, kafka=sink.kafka._replace(expansion_service=expansion))

    kafka = spec.source.kafka._replace(expansion_service=expansion) if spec.source.kafka else None
    records = p | "ReadRecords" >> ReadRecords(spec.source.uri, config.format, config.streaming, kafka=kafka)
    outputs = records | "StreamingAnalytics" >> StreamingAnalytics(config)
    written = outputs[AGGREGATES] | "WriteAggregates" >> WriteRows(with_expansion(spec.sink))
    dead_letters = outputs[DEAD_LETTERS]
    if written.failed_rows is not None:
        # Aggregate rows the table refused are dead letters too (stage=write).
        dead_letters = (dead_letters, written.failed_rows) | "WithRefusedAggregates" >> beam.Flatten()
    lost = dead_letters | "WriteDeadLetters" >> WriteRows(with_expansion(spec.dead_letter_sink))
    if lost.failed_rows is not None:
        # They cannot go back into the sink that refused them: logged in full, counted (dead_letter_write_failures).
        lost.failed_rows | "LogLostDeadLetters" >> beam.Map(log_lost_dead_letter)
    return PipelineOutputs(config, outputs[AGGREGATES], outputs[DEAD_LETTERS])
