"""Options: every bad value stops the CLI with exit code 2, one ``error:`` line naming the option and a usage line
(no traceback); ``--help`` lists the options; valid option sets give the expected AnalyticsConfig/WindowSpec."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import DEMO_SOURCE, AnalyticsOptions, ConfigError
from pipelines.spec import resolve
from pipelines.streaming_analytics import main
from transforms.analytics import AnalyticsConfig
from transforms.windowing import FIXED, SESSION, SLIDING, WindowSpec

# Sinks that are valid, so a case that passes validation by mistake can never write into the repository.
SAFE = ["--sink=/nonexistent-dir-for-tests/agg", "--dead_letter_sink=/nonexistent-dir-for-tests/dlq"]

BAD = [
    # window size
    (["--window_size=abc"], "--window_size"),
    (["--window_size=-5"], "--window_size"),
    (["--window_size=0"], "--window_size"),
    (["--window_size=1.5"], "--window_size"),
    (["--window_size="], "--window_size"),
    (["--window_size"], "--window_size"),  # no value at all
    # window kind and period
    (["--window=weekly"], "--window"),
    (["--window="], "--window"),
    (["--window=sliding"], "--window_period"),
    (["--window=sliding", "--window_size=60", "--window_period=7"], "--window_period"),
    (["--window=sliding", "--window_size=60", "--window_period=120"], "--window_period"),
    (["--window=sliding", "--window_size=60", "--window_period=0"], "--window_period"),
    (["--window=sliding", "--window_size=60", "--window_period=x"], "--window_period"),
    (["--window_period=10"], "--window_period"),
    (["--window=session", "--window_period=10"], "--window_period"),
    # other integers
    (["--session_gap=0"], "--session_gap"),
    (["--allowed_lateness=-1"], "--allowed_lateness"),
    (["--early_firing=soon"], "--early_firing"),
    (["--dedup_horizon=-3"], "--dedup_horizon"),
    (["--max_payload_bytes=0"], "--max_payload_bytes"),
    (["--max_clock_skew=1h"], "--max_clock_skew"),
    # format
    (["--format=xml"], "--format"),
    (["--format=JSON"], "--format"),
    (["--format="], "--format"),
    # source
    (["--source="], "--source"),
    (["--source=ftp://x"], "--source"),
    (["--source=file://"], "--source"),
    (["--source=synthetic://?bad=2"], "--source"),
    (["--source=synthetic://?colour=red"], "--source"),
    (["--source=synthetic://?events=abc"], "--source"),
    (["--source=synthetic://?events=-1"], "--source"),
    (["--source=synthetic://?bad=0.5&duplicates=0.6"], "--source"),
    (["--source=synthetic://?mode=fast"], "--source"),
    (["--source=synthetic://?start=yesterday"], "--source"),
    (["--source=synthetic://?events"], "--source"),
    (["--source=pubsub://projects/x"], "--source"),
    (["--source=pubsub://projects/my-project/subscriptions/events", "--runner=PrismRunner"], "--source"),
    (["--source=pubsub://projects/my-project/topics/events", "--runner=FlinkRunner"], "--source"),
    (["--source=kafka://127.0.0.1:1/events"], "--source"),  # the start-up check: no broker answers there
    (["--dead_letter_sink=kafka://127.0.0.1:9092/dlq"], "--dead_letter_sink"),  # a replay (the demo) cannot run Java
    (["--source=synthetic://?events=5&mode=replay", "--runner=PrismRunner"], "--source"),  # TestStream: direct only
    (["--source=synthetic://?events=5&mode=replay", "--runner=FlinkRunner"], "--source"),
    (["--source=synthetic://?format=avro"], "--source"),  # generates Avro, parsed as JSON
    (["--format=avro", "--source=synthetic://?events=5"], "--source"),  # generates JSON, parsed as Avro
    # sinks
    (["--sink=out/"], "--sink"),
    (["--sink="], "--sink"),
    (["--sink=s3://bucket/agg"], "--sink"),
    (["--dead_letter_sink=out/"], "--dead_letter_sink"),
    (["--dead_letter_sink=kafka://x"], "--dead_letter_sink"),
    (["--dead_letter_sink=pubsub://nope"], "--dead_letter_sink"),
    (["--dead_letter_sink=pubsub://projects/my-project/subscriptions/dlq"], "--dead_letter_sink"),
    # key field
    (["--key_field=value"], "--key_field"),
    (["--key_field=event_time"], "--key_field"),
    (["--key_field=properties"], "--key_field"),
    (["--key_field=properties."], "--key_field"),
    (["--key_field="], "--key_field"),
    # typos
    (["--windw_size=3"], "--windw_size"),
    (["--window_size=60", "--sourc=x.jsonl"], "--sourc"),
    # Beam's own options are checked the same way (argparse would print its usage and exit otherwise)
    (["--direct_num_workers=abc"], "--direct_num_workers"),
    (["--runner"], "--runner"),
]


@pytest.mark.parametrize(("argv", "option"), BAD, ids=[" ".join(a) or "empty" for a, _ in BAD])
def test_bad_option_exits_2_with_one_error_line(argv, option, capsys):
    args = argv + [s for s in SAFE if s.split("=")[0] not in {a.split("=")[0] for a in argv}]
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 2, captured.err
    assert err[0].startswith("error: ") and option in err[0], err[0]
    assert err[1].startswith("usage: ") and "--help" in err[1]
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert captured.out == ""


def test_help_examples_use_the_ports_of_the_local_services(capsys):
    """The addresses in --help are the ones `make services-up` serves (they once said 9050/9060)."""
    import re

    from services import SERVICES

    assert main(["--help"]) == 0
    ports = {int(p) for p in re.findall(r"127\.0\.0\.1:([0-9]+)", capsys.readouterr().out)}
    served = {port for cls in SERVICES.values() for port in cls.fixed_ports.values()}
    assert ports and ports <= served, ports - served


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_the_options(flag, capsys):
    assert main([flag]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    for option in (
        "--source",
        "--format",
        "--sink",
        "--dead_letter_sink",
        "--window",
        "--window_size",
        "--window_period",
        "--session_gap",
        "--early_firing",
        "--allowed_lateness",
        "--dedup_horizon",
        "--key_field",
        "--max_payload_bytes",
        "--max_clock_skew",
    ):
        assert option in captured.out, option


def config(*argv: str) -> AnalyticsConfig:
    return resolve(list(argv)).analytics


def test_defaults():
    cfg = config()
    assert cfg == AnalyticsConfig(
        format="json",
        max_payload_bytes=1 << 20,
        max_clock_skew_s=86400,
        key_field="page",
        dedup_horizon_s=600,
        window=WindowSpec(FIXED, 60, None, 300, 600, 10),
        streaming=True,  # the default source, the embedded demo, is a replay: a stream on a simulated clock
        source_kind="synthetic",
    )
    assert PipelineOptions([]).view_as(AnalyticsOptions).source == DEMO_SOURCE


def test_batch_file_source_fixed_windows():
    cfg = config("--source=events/*.jsonl", "--window_size=300", "--early_firing=0", "--allowed_lateness=0")
    assert not cfg.streaming
    assert cfg.window == WindowSpec(FIXED, 300, None, 300, 0, 0)


def test_sliding_windows():
    cfg = config("--source=in.jsonl", "--window=sliding", "--window_size=300", "--window_period=60")
    assert cfg.window == WindowSpec(SLIDING, 300, 60, 300, 600, 10)
    assert (
        config("--source=in.jsonl", "--window=sliding", "--window_size=60", "--window_period=60").window.period_s == 60
    )


def test_session_windows_and_streaming_flag():
    cfg = config("--source=in.jsonl", "--window=session", "--session_gap=45", "--streaming")
    assert cfg.window == WindowSpec(SESSION, 60, None, 45, 600, 10)
    assert cfg.streaming


def test_everything_else():
    cfg = config(
        "--source=synthetic://?events=10&format=avro",
        "--format=avro",
        "--key_field= properties.country ",
        "--dedup_horizon=0",
        "--max_payload_bytes=512",
        "--max_clock_skew=0",
        "--sink=file:///tmp/x/agg",
        "--dead_letter_sink=pubsub://projects/my-project/topics/dead-letters",
    )
    assert (cfg.format, cfg.key_field, cfg.dedup_horizon_s) == ("avro", "properties.country", 0)
    assert (cfg.max_payload_bytes, cfg.max_clock_skew_s, cfg.streaming) == (512, 0, False)


def test_streaming_sources():
    assert config("--source=synthetic://?events=10&mode=replay").streaming
    assert config("--source=pubsub://projects/my-project/subscriptions/events").streaming
    assert not config("--source=synthetic://?events=10").streaming


def test_config_error_is_a_value_error_naming_the_option():
    with pytest.raises(ConfigError, match="--window_period"):
        config("--source=in.jsonl", "--window=sliding", "--window_size=60", "--window_period=7")
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source=in.jsonl", "--timestamp_source=publish_time"], "needs a pubsub:// source"),
        (["--source=in.jsonl", "--timestamp_source=kafka_timestamp"], "needs a kafka:// source"),
        (["--source=in.jsonl", "--timestamp_source=arrival"], "--timestamp_source must be one of"),
    ],
)
def test_timestamp_source_must_fit_the_source(argv, message):
    with pytest.raises(ConfigError, match=message):
        resolve(argv)


def test_timestamp_source_reaches_the_config():
    config = resolve(
        ["--source=pubsub://projects/my-project/subscriptions/events", "--timestamp_source=publish_time"]
    ).analytics
    assert config.timestamp_source == "publish_time" and config.streaming
