"""The one options class of the pipeline, its validation, and its translation into an ``AnalyticsConfig``.

Every user-facing option is declared here once; the flex template metadata and the README options table are
derived from (or checked against) ``AnalyticsOptions``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from transforms.analytics import AnalyticsConfig
from transforms.io import UnsupportedUri, check_sink, check_source, is_replay, is_unbounded
from transforms.parse import FORMATS
from transforms.validate import CONTRACT_FIELDS
from transforms.windowing import SLIDING, WINDOW_KINDS, WindowSpec

# 40 minutes of traffic on a simulated clock: bad, duplicate, late and too-late records included.
DEMO_SOURCE = (
    "synthetic://demo?mode=replay&events=1200&rate=0.5&keys=6&users=200&event_types=3"
    "&bad=0.04&duplicates=0.03&late=0.04&too_late=0.03&too_late_by=1200"
)
DEFAULT_SINK = "output/aggregates"
DEFAULT_DEAD_LETTER_SINK = "output/dead_letter"


# Contract fields that are not strings, so not grouping keys.
_NOT_KEYS = ("event_time", "value", "properties")


class ConfigError(ValueError):
    """A bad option value; the message names the option and what it accepts."""


class AnalyticsOptions(PipelineOptions):
    """Options of the realtime-analytics pipeline (standard Beam options come on top)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("realtime-analytics")
        group.add_argument(
            "--source",
            default=DEMO_SOURCE,
            help="Where records come from: a local path or glob (JSON lines, or Avro container files with "
            "--format=avro), pubsub://projects/P/subscriptions/S or pubsub://projects/P/topics/T (streaming), or "
            "synthetic://?events=N&rate=R&keys=K&bad=..&duplicates=..&late=..&too_late=.. "
            "(mode=replay replays a bounded stream on a simulated clock). Default: the embedded demo.",
        )
        group.add_argument("--format", default="json", help=f"Record format: {' or '.join(FORMATS)}.")
        group.add_argument(
            "--sink", default=DEFAULT_SINK, help="Aggregates: a path prefix for newline-delimited JSON files."
        )
        group.add_argument(
            "--dead_letter_sink",
            default=DEFAULT_DEAD_LETTER_SINK,
            help="Dead letters: a path prefix for newline-delimited JSON files, or pubsub://projects/P/topics/T.",
        )
        group.add_argument("--window", default="fixed", help="Window kind: fixed, sliding or session.")
        group.add_argument("--window_size", default="60", help="Window size in seconds (fixed and sliding).")
        group.add_argument(
            "--window_period", default=None, help="Sliding windows: seconds between window starts (required)."
        )
        group.add_argument("--session_gap", default="300", help="Session windows: gap in seconds that ends one.")
        group.add_argument(
            "--early_firing",
            default="10",
            help="Emit an early (speculative) pane every N seconds of processing time; 0 turns early panes off.",
        )
        group.add_argument(
            "--allowed_lateness",
            default="600",
            help="Seconds after the end of a window during which late data still updates it (LATE panes); "
            "later data goes to the dead letter as too_late.",
        )
        group.add_argument(
            "--dedup_horizon",
            default="600",
            help="An event_id seen again within this many seconds (event time) is dropped as a duplicate.",
        )
        group.add_argument(
            "--key_field",
            default="page",
            help="Grouping key next to event_type: an event field (page, user_id...), properties.<name>, "
            "or any other top-level field. Missing or null gives a null key.",
        )
        group.add_argument(
            "--max_payload_bytes", default=str(1 << 20), help="Records larger than this are dead-lettered."
        )
        group.add_argument(
            "--max_clock_skew",
            default="86400",
            help="Seconds an event_time may be ahead of processing time before it is out of range.",
        )


def _integer(opts: AnalyticsOptions, name: str, minimum: int, maximum: int | None = None) -> int:
    raw = getattr(opts, name)
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"--{name} must be a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ConfigError(f"--{name} must be {bound}, got {value}")
    return value


def analytics_config(options: PipelineOptions) -> AnalyticsConfig:
    """Validates the options and returns the graph's config; raises ConfigError naming the first bad option."""
    opts = options.view_as(AnalyticsOptions)
    streaming = bool(options.view_as(StandardOptions).streaming)
    if opts.format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {opts.format!r}")
    if opts.window not in WINDOW_KINDS:
        raise ConfigError(f"--window must be one of {', '.join(WINDOW_KINDS)}, got {opts.window!r}")
    size = _integer(opts, "window_size", 1)
    period = None
    if opts.window == SLIDING:
        if opts.window_period is None:
            raise ConfigError("--window_period is required with --window=sliding")
        period = _integer(opts, "window_period", 1, size)
        if size % period:
            raise ConfigError(f"--window_period must divide --window_size ({size}), got {period}")
    elif opts.window_period is not None:
        raise ConfigError("--window_period applies only to --window=sliding")
    spec = WindowSpec(
        kind=opts.window,
        size_s=size,
        period_s=period,
        gap_s=_integer(opts, "session_gap", 1),
        allowed_lateness_s=_integer(opts, "allowed_lateness", 0),
        early_firing_s=_integer(opts, "early_firing", 0),
    )
    key_field = opts.key_field.strip() if opts.key_field else ""
    if not key_field or key_field == "properties." or key_field in _NOT_KEYS:
        string_fields = ", ".join(f for f in CONTRACT_FIELDS if f not in _NOT_KEYS)
        raise ConfigError(
            f"--key_field must name a string field ({string_fields}), properties.<name> or another top-level "
            f"field, got {opts.key_field!r}"
        )
    for name, uri in (
        ("source", opts.source),
        ("sink", opts.sink),
        ("dead_letter_sink", opts.dead_letter_sink),
    ):
        if not uri:
            raise ConfigError(f"--{name} must not be empty")
    try:
        check_source(opts.source, opts.format)
    except (UnsupportedUri, ValueError) as exc:
        raise ConfigError(f"--source: {exc}") from None
    for name in ("sink", "dead_letter_sink"):
        try:
            check_sink(getattr(opts, name))
        except UnsupportedUri as exc:
            raise ConfigError(f"--{name}: {exc}") from None
    if is_replay(opts.source) or is_unbounded(opts.source):
        streaming = True  # a replay is a stream on a simulated clock; a broker never ends
    return AnalyticsConfig(
        format=opts.format,
        max_payload_bytes=_integer(opts, "max_payload_bytes", 1),
        max_clock_skew_s=_integer(opts, "max_clock_skew", 0),
        key_field=key_field,
        dedup_horizon_s=_integer(opts, "dedup_horizon", 0),
        window=spec,
        streaming=streaming,
    )


def known_flags() -> set[str]:
    """Every ``--flag`` any registered PipelineOptions class declares (to catch typos such as --windw_size)."""
    parser = argparse.ArgumentParser(add_help=False, conflict_handler="resolve")
    seen: set[type] = set()
    stack = list(PipelineOptions.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        cls._add_argparse_args(parser)
    flags: set[str] = set()
    for action in parser._actions:
        flags.update(s for s in action.option_strings if s.startswith("--"))
    return flags


def check_unknown_flags(argv: Sequence[str]) -> None:
    known = known_flags()
    for arg in argv:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            if flag not in known:
                raise ConfigError(f"unknown option {flag}; see --help for the options")
