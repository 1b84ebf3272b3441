"""--pseudonymize_user_id: keyed HMAC-SHA256 pseudonyms, the same counts as without, and no raw user_id in any
output (aggregates, sketches, dead letters), the key never in the graph."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import re

import fastavro
import orjson
import pytest

import schemas
from pipelines.graph import build_pipeline, new_pipeline
from pipelines.spec import resolve
from pipelines.streaming_analytics import run
from pipelines.summary import final_panes, read_rows
from transforms import dead_letter as dl
from transforms.pseudonymize import MIN_KEY_BYTES, Pseudonymizer, load_key
from transforms.secrets import SecretError
from transforms.sketch import DistinctSketch

KEY = b"0123456789abcdef0123456789abcdef-test-key"
KEY_ENV = "RA_TEST_PSEUDONYMIZATION_KEY"
HEX64 = re.compile(r"[0-9a-f]{64}")


def _hmac(user_id: str, key: bytes = KEY) -> str:
    return hmac.new(key, user_id.encode(), hashlib.sha256).hexdigest()


def _row(payload: bytes | None, metadata: dict | None = None) -> dict:
    return dl.dead_letter(dl.Rejection(dl.INVALID_VALUE, "event_type", "bad"), payload, "src", metadata, "validate")


# ---- the pseudonym -------------------------------------------------------------------------------------------------


def test_pseudonym_is_hmac_sha256_hex():
    p = Pseudonymizer(KEY)
    assert p.pseudonym("alice@example.com") == _hmac("alice@example.com")
    assert HEX64.fullmatch(p.pseudonym("ü-unicode-✓"))
    assert p.pseudonym("a") != p.pseudonym("b")
    assert Pseudonymizer(KEY[::-1]).pseudonym("a") != p.pseudonym("a")  # another key, another pseudonym


def test_rfc4231_vector():
    # RFC 4231 test case 2 (key "Jefe" is too short for the pipeline: checked through hmac, then the length rule)
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert hmac.new(b"Jefe", b"what do ya want for nothing?", hashlib.sha256).hexdigest() == expected
    with pytest.raises(ValueError, match="at least 32 bytes"):
        Pseudonymizer(b"Jefe")


def test_valid_events_user_id_and_user_id_key():
    p = Pseudonymizer(KEY)
    valid = [(0, "e1", "click", "alice@example.com", 5, "/home", 1, None, "/home")]
    pseudo = _hmac("alice@example.com")
    assert p.valid(valid, key_is_user_id=False) == [(0, "e1", "click", pseudo, 5, "/home", 1, None, "/home")]
    keyed = [(*valid[0][:8], "alice@example.com")]
    assert p.valid(keyed, key_is_user_id=True) == [(0, "e1", "click", pseudo, 5, "/home", 1, None, pseudo)]


# ---- dead letters --------------------------------------------------------------------------------------------------


def test_json_dead_letter_user_id_replaced_rest_kept():
    payload = b'{"event_id":"x","event_type":"Click!","user_id":"alice@example.com","page":"/p"}'
    out = Pseudonymizer(KEY).dead_letter(_row(payload, {"topic": "t", "offset": 3}))
    assert orjson.loads(dl.original_payload(out)) == {
        "event_id": "x",
        "event_type": "Click!",
        "user_id": _hmac("alice@example.com"),
        "page": "/p",
    }
    assert out["source_metadata"] == {"topic": "t", "offset": 3, "pseudonymized": ["payload.user_id"]}
    assert {k: v for k, v in out.items() if k not in ("payload", "source_metadata")} == {
        k: v for k, v in _row(payload).items() if k not in ("payload", "source_metadata", "failed_at")
    } | {"failed_at": out["failed_at"]}


def test_non_string_user_id_is_pseudonymized_too():
    out = Pseudonymizer(KEY).dead_letter(_row(b'{"user_id": 4711}'))
    assert orjson.loads(dl.original_payload(out)) == {"user_id": _hmac("4711")}


@pytest.mark.parametrize(
    "payload",
    [b'{"user_id": "alice@example.com", ', b"\xff\xfe alice", b'["alice@example.com"]', b'"alice@example.com"'],
    ids=["malformed", "not-utf8", "array", "string"],
)
def test_undecodable_or_non_object_payload_is_withheld(payload):
    out = Pseudonymizer(KEY).dead_letter(_row(payload, {"offset": 7}))
    assert out["payload"] is None
    assert out["source_metadata"]["offset"] == 7 and "not decodable" in out["source_metadata"]["payload_withheld"]
    assert b"alice" not in orjson.dumps(out)


def test_payload_without_user_id_is_kept_byte_for_byte():
    payload = b'{"event_id": "x",  "event_type": "click"}'
    out = Pseudonymizer(KEY).dead_letter(_row(payload))
    assert dl.original_payload(out) == payload and out["source_metadata"] is None


def test_kafka_key_is_pseudonymized():
    out = Pseudonymizer(KEY).dead_letter(_row(b'{"event_id": "x"}', {"topic": "t", "key": "alice@example.com"}))
    assert out["source_metadata"] == {"topic": "t", "key": _hmac("alice@example.com"), "pseudonymized": ["key"]}


def _avro(fields: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schemas.event_avro_schema(), fields)
    return out.getvalue()


AVRO_FIELDS = {
    "event_id": "x",
    "event_type": "Click!",
    "user_id": "alice@example.com",
    "event_time": "2024-01-01T00:00:00Z",
    "page": None,
    "value": 3,
    "properties": None,
}


def test_avro_and_confluent_avro_payloads_are_reencoded_with_their_schema():
    avro = Pseudonymizer(KEY, "avro").dead_letter(_row(_avro(AVRO_FIELDS)))
    decoded = fastavro.schemaless_reader(io.BytesIO(dl.original_payload(avro)), schemas.event_avro_schema(), None)
    assert decoded == {**AVRO_FIELDS, "user_id": _hmac("alice@example.com")}
    framed = b"\x00\x00\x00\x00\x01" + _avro(AVRO_FIELDS)
    confluent = dl.original_payload(Pseudonymizer(KEY, "confluent-avro").dead_letter(_row(framed)))
    assert confluent[:5] == framed[:5]
    assert fastavro.schemaless_reader(io.BytesIO(confluent[5:]), schemas.event_avro_schema(), None) == decoded
    for bad in (b"\x01" + framed[1:], b"\x00\x00\x00\x00\x2a" + framed[5:], framed[:9]):  # magic, id, truncated
        assert Pseudonymizer(KEY, "confluent-avro").dead_letter(_row(bad))["payload"] is None


# ---- the key -------------------------------------------------------------------------------------------------------


def test_key_from_environment(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY.decode())
    assert load_key(f"env:{KEY_ENV}") == KEY


@pytest.mark.parametrize(
    ("value", "env", "message"),
    [
        (f"env:{KEY_ENV}", None, "is not set"),
        (f"env:{KEY_ENV}", "short", f"holds 5 bytes; an HMAC-SHA256 key needs at least {MIN_KEY_BYTES}"),
        ("this-is-the-plain-key-0123456789abcdef", None, "not a plain value"),
        ("env:1X", None, "letters, digits and _"),
        ("projects/p/secrets/s", None, "not a Secret Manager version name"),
    ],
)
def test_bad_keys_fail_without_showing_the_value(monkeypatch, value, env, message):
    monkeypatch.delenv(KEY_ENV, raising=False)
    if env is not None:
        monkeypatch.setenv(KEY_ENV, env)
    with pytest.raises(SecretError, match=re.escape(message)) as info:
        load_key(value)
    if "plain" in message:
        assert value not in str(info.value)
    if env:
        assert env not in str(info.value)


def test_secret_manager_reference_without_credentials_fails_clearly(monkeypatch, tmp_path):
    # Never reaches Google: the credentials file named here does not exist, so the client fails before any call.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(SecretError, match="cannot read projects/my-project/secrets/hmac-key/versions/3: "):
        load_key("projects/my-project/secrets/hmac-key/versions/3")


# ---- the pipeline: same numbers, no raw user_id anywhere -----------------------------------------------------------

SOURCE = "synthetic://?events=2400&users=300&keys=5&bad=0.05&duplicates=0.03&seed=7"


def _run(tmp_path, name: str, *extra: str) -> tuple[list[dict], list[dict]]:
    out = tmp_path / name
    run([f"--source={SOURCE}", f"--sink={out / 'agg'}", f"--dead_letter_sink={out / 'dlq'}", *extra])
    return read_rows(str(out / "agg"))[1], read_rows(str(out / "dlq"))[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pseudonymize")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, KEY.decode())
        on = ("--pseudonymize_user_id", f"--pseudonymization_key=env:{KEY_ENV}")
        return {
            "plain": _run(tmp, "plain"),
            "pseudo": _run(tmp, "pseudo", *on),
            "plain_by_user": _run(tmp, "plain_by_user", "--key_field=user_id"),
            "pseudo_by_user": _run(tmp, "pseudo_by_user", "--key_field=user_id", *on),
        }


def _numbers(rows: list[dict], key_map=lambda k: k) -> dict:
    return {
        (g[0], g[2], key_map(g[3])): (
            r["event_count"],
            r["value_sum"],
            r["distinct_users"],
            DistinctSketch.from_bytes(base64.b64decode(r["distinct_users_sketch"])).estimate(),
        )
        for g, r in final_panes(rows).items()
    }


def test_counts_and_distinct_users_are_exactly_the_same(runs):
    plain, pseudo = _numbers(runs["plain"][0]), _numbers(runs["pseudo"][0])
    assert plain == pseudo and len(plain) > 20
    assert sum(v[2] for v in plain.values()) > 1000  # distinct users per group add up to many
    by_user = _numbers(runs["plain_by_user"][0], key_map=lambda k: _hmac(k) if k is not None else None)
    assert _numbers(runs["pseudo_by_user"][0]) == by_user  # keys are the pseudonyms of the raw keys


def test_no_raw_user_id_leaves_the_pipeline(runs):
    users = {f"user-{i}" for i in range(300)} | {"u1"}  # the generator's ids and its bad records' ids
    for name in ("pseudo", "pseudo_by_user"):
        aggregates, dead = runs[name]
        text = orjson.dumps(aggregates).decode() + orjson.dumps(dead).decode()
        payloads = b"".join(dl.original_payload(row) or b"" for row in dead).decode("utf-8", "replace")
        found = {u for u in users if f'"{u}"' in text or f'"{u}"' in payloads}
        assert not found, f"{name}: raw user ids in the output: {sorted(found)[:5]}"
    plain_dead = runs["plain"][1]
    assert len(runs["pseudo"][1]) == len(plain_dead)  # the same dead letters, rewritten or withheld
    withheld = [row for row in runs["pseudo"][1] if row["payload"] is None]
    undecodable = ("malformed_json", "invalid_encoding", "not_an_object")
    assert withheld and all(row["error_code"] in undecodable for row in withheld)


def test_key_is_not_in_the_pipeline_graph(monkeypatch, tmp_path):
    monkeypatch.setenv(KEY_ENV, KEY.decode())
    argv = [
        f"--source={SOURCE}",
        f"--sink={tmp_path / 'agg'}",
        f"--dead_letter_sink={tmp_path / 'dlq'}",
        "--pseudonymize_user_id=true",
        f"--pseudonymization_key=env:{KEY_ENV}",
    ]
    spec = resolve(argv)
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    graph = readable_graph(pipeline.to_runner_api())
    assert f"env:{KEY_ENV}".encode() in graph  # the reference travels with the job ...
    assert KEY not in graph  # ... the key does not
    assert KEY.decode() not in str(pipeline.options.get_all_options())
    assert KEY.decode() not in repr(spec)  # the launch spec holds the reference only


def readable_graph(proto) -> bytes:
    """The pipeline proto plus every Python-pickled DoFn decompressed (Beam stores them as base64 of bz2 or zlib), so
    the strings inside can be searched. Java transforms' payloads (Java serialization) are plain in the proto."""
    import base64 as b64
    import binascii
    import bz2
    import zlib

    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    parts = [proto.SerializeToString()]
    for transform in proto.components.transforms.values():
        if transform.spec.urn != common_urns.primitives.PAR_DO.urn:
            continue
        payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload).do_fn.payload
        try:
            packed = b64.b64decode(payload, validate=True)
        except binascii.Error:
            continue  # not a Python pickle
        for decompress in (bz2.decompress, zlib.decompress):
            try:
                parts.append(decompress(packed))
                break
            except (OSError, zlib.error):
                continue
    return b"".join(parts)
