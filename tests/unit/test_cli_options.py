"""Bad configuration fails at start-up with one clear line naming the option (exit 2), never a traceback."""

from __future__ import annotations

import pytest

from pipelines.options import analytics_config
from pipelines.streaming_analytics import main
from transforms.windowing import SESSION, SLIDING

BAD = [
    (["--window_size=abc"], "--window_size"),
    (["--window_size=0"], "--window_size"),
    (["--window=weekly"], "--window"),
    (["--window=sliding"], "--window_period"),
    (["--window=sliding", "--window_size=60", "--window_period=7"], "--window_period"),
    (["--window_period=10"], "--window_period"),
    (["--allowed_lateness=-1"], "--allowed_lateness"),
    (["--early_firing=soon"], "--early_firing"),
    (["--format=xml"], "--format"),
    (["--source=ftp://host/file"], "--source"),
    (["--source=synthetic://?bad=2"], "--source"),
    (["--source=synthetic://?colour=red"], "--source"),
    (["--sink=out/"], "--sink"),
    (["--dead_letter_sink=kafka2://x"], "--dead_letter_sink"),
    (["--key_field=value"], "--key_field"),
    (["--max_payload_bytes=0"], "--max_payload_bytes"),
    (["--windw_size=3"], "--windw_size"),
]


@pytest.mark.parametrize(("argv", "option"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_option_fails_with_one_line(argv, option, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and option in err[0]
    assert err[1].startswith("usage: ") and len(err) == 2
    assert "Traceback" not in "\n".join(err)


def test_help_lists_the_options(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--source", "--window_period", "--allowed_lateness", "--dedup_horizon", "--key_field"):
        assert option in out


def test_good_options_make_the_config():
    from apache_beam.options.pipeline_options import PipelineOptions

    config = analytics_config(
        PipelineOptions(
            [
                "--window=sliding",
                "--window_size=300",
                "--window_period=60",
                "--key_field=properties.c",
                "--source=in.jsonl",
            ]
        )
    )
    assert (config.window.kind, config.window.size_s, config.window.period_s) == (SLIDING, 300, 60)
    assert config.key_field == "properties.c" and not config.streaming
    config = analytics_config(PipelineOptions(["--window=session", "--session_gap=45", "--streaming"]))
    assert (config.window.kind, config.window.gap_s, config.streaming) == (SESSION, 45, True)
