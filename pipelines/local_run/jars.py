"""Java pieces fetched from Maven Central into ``.cache/`` by code: cross-language KafkaIO and the Flink job server.

Beam's own download paths are never used: ``BeamJarExpansionService`` would fetch
``beam-sdks-java-io-expansion-service`` over plain HTTP at pipeline construction time, and ``FlinkRunner`` would fetch
``beam-runners-flink-<v>-job-server``. Instead each ``JavaSet`` below is a generated pom that
``mvn dependency:copy-dependencies`` resolves into ``.cache/<name>/lib`` once (stamp + file lock; idempotent), plus
small local files written there:

- manifest-only launcher jars (``Main-Class`` = a Beam entry point, ``Class-Path`` = every jar of the lib directory),
  so ``java -jar`` and Beam's ``JavaJarExpansionService`` take them like Beam's shaded jars; where one real jar is
  better (the Flink job server: a job submitted to a cluster uploads the job server's classpath), the same mvn run
  shades the whole classpath into one jar with maven-shade-plugin, as Beam's own build does;
- ``java-boot``: the command a runner starts for a Java SDK worker in a PROCESS environment
  (``pipelines/local_run/boot.py``), so no Docker is needed on the runner's machine.

Two sets, because the registry reachable here serves only some Beam Java releases:

- ``KAFKA_JAVA`` (``.cache/beam-java``, Beam Java **2.73.0**, the newest whose modules all resolve; no 2.77.0
  artifact is served): the Kafka expansion service and Java worker for Prism.
- ``FLINK_JAVA`` (``.cache/beam-flink``, Beam Java **2.56.0** with Flink **1.16**): no ``beam-runners-flink-*``
  job-server jar is served at any version, and the plain runner module is served only for Flink 1.16 (2.50, 2.56,
  2.59 tried). Its ``FlinkJobServerDriver`` is the job server; the same classpath is the Kafka expansion service and
  the Java worker of Flink pipelines. KafkaIO runs there as a runner-native read (``use_deprecated_read``: Flink
  checkpoints the reader's offsets), and that needs the expansion service at the runner's own Beam version (the
  source is Java-serialized into the pipeline and deserialized by the runner).

The expansion protocol and the Fn API are stable across these versions: a 2.73 (Prism) or 2.56 (Flink) Java side next
to the 2.77 Python SDK is what this module sets up, and the integration tests prove both.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.local_run.install_once import install_once

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("SERVICES_CACHE_DIR", REPO_ROOT / ".cache")).resolve()
MAVEN_REPO = CACHE_DIR / "m2"

# The newest Beam Java release whose modules the reachable Maven Central serves with all their dependencies.
BEAM_JAVA_VERSION = "2.73.0"
# The Beam release of the Flink runner (beam-runners-flink-1.16), and the Flink it is built for.
BEAM_FLINK_VERSION = "2.56.0"
FLINK_VERSION = "1.16"
KAFKA_CLIENTS_VERSION = "3.9.1"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
SHADE_PLUGIN_VERSION = "3.6.0"
EXPANSION_MAIN = "org.apache.beam.sdk.expansion.service.ExpansionService"
FLINK_JOB_SERVER_MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"
EXPANSION_JAR = "expansion-service.jar"
FLINK_JOB_SERVER_JAR = "flink-job-server.jar"
# Flink 1.16 predates Java 17 support: its RPC, Kryo serializers and closure cleaner reach into JDK internals, which
# Java 17 allows only for opened/exported packages (the list Flink 1.18 ships for Java 17). A manifest's Add-Opens and
# Add-Exports apply to `java -jar`, so the job server needs no JVM flags; services/flink.py gives the cluster the same.
JAVA_17_OPENS = tuple(
    f"java.base/{package}"
    for package in (
        "java.lang",
        "java.lang.reflect",
        "java.io",
        "java.net",
        "java.nio",
        "sun.nio.ch",
        "java.text",
        "java.time",
        "java.util",
        "java.util.concurrent",
        "java.util.concurrent.atomic",
        "java.util.concurrent.locks",
    )
)
JAVA_17_EXPORTS = ("java.base/sun.net.util", "java.rmi/sun.rmi.registry", "java.security.jgss/sun.security.krb5")
# How KafkaIO expands its read for Prism (see kafka_expansion_service); Flink reads natively (pipelines/runners.py).
KAFKA_READ_EXPERIMENT = "use_unbounded_sdf_wrapper"


def _dependency(coordinates: str, exclude: str | None = None) -> str:
    group, artifact, version = coordinates.split(":")
    exclusion = ""
    if exclude:
        exclusion = (
            f"<exclusions><exclusion><groupId>{exclude}</groupId><artifactId>*</artifactId></exclusion></exclusions>"
        )
    return (
        f"<dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId><version>{version}</version>"
        f"{exclusion}</dependency>"
    )


@dataclass(frozen=True)
class JavaSet:
    """One Java classpath fetched by mvn into ``.cache/<name>/lib``, with its launcher jars and ``java-boot``."""

    name: str
    purpose: str
    dependencies: tuple[str, ...]  # GROUP:ARTIFACT:VERSION each
    required: str  # a jar name glob that proves the copy is complete
    launchers: Mapping[str, str] = field(default_factory=dict)  # jar file name -> Main-Class
    excluded: Mapping[str, str] = field(default_factory=dict)  # artifact coordinates -> groupId to exclude
    # (jar file name, Main-Class): the whole classpath as one self-contained jar, built by maven-shade-plugin next to
    # lib/ (not in it: the Java worker's classpath is lib/*).
    shaded: tuple[str, str] | None = None

    @property
    def directory(self) -> Path:
        return CACHE_DIR / self.name

    @property
    def lib(self) -> Path:
        return self.directory / "lib"

    @property
    def boot(self) -> Path:
        return self.directory / "java-boot"

    def launcher(self, jar: str) -> Path:
        return self.lib / jar

    def pom(self) -> str:
        dependencies = "\n    ".join(_dependency(c, self.excluded.get(c)) for c in self.dependencies)
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<!-- Generated by pipelines/local_run/jars.py: {self.purpose}. -->\n"
            '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
            "  <modelVersion>4.0.0</modelVersion>\n"
            "  <groupId>local.realtime-analytics</groupId>\n"
            f"  <artifactId>{self.name}</artifactId>\n"
            "  <version>1</version>\n"
            f"  <packaging>{'jar' if self.shaded else 'pom'}</packaging>\n"
            "  <properties><project.build.sourceEncoding>UTF-8</project.build.sourceEncoding></properties>\n"
            f"  <dependencies>\n    {dependencies}\n  </dependencies>\n"
            f"{self._shade_build()}"
            "</project>\n"
        )

    def _shade_build(self) -> str:
        if self.shaded is None:
            return ""
        jar, main = self.shaded
        return f"""\
  <build>
    <finalName>{jar.removesuffix(".jar")}</finalName>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-shade-plugin</artifactId>
        <version>{SHADE_PLUGIN_VERSION}</version>
        <executions>
          <execution>
            <phase>package</phase>
            <goals><goal>shade</goal></goals>
            <configuration>
              <createDependencyReducedPom>false</createDependencyReducedPom>
              <filters>
                <filter>
                  <artifact>*:*</artifact>
                  <excludes>
                    <exclude>META-INF/*.SF</exclude>
                    <exclude>META-INF/*.DSA</exclude>
                    <exclude>META-INF/*.RSA</exclude>
                  </excludes>
                </filter>
              </filters>
              <transformers>
                <!-- Beam finds runners, coders, file systems and translators through ServiceLoader. -->
                <transformer implementation="org.apache.maven.plugins.shade.resource.ServicesResourceTransformer"/>
                <transformer implementation="org.apache.maven.plugins.shade.resource.ManifestResourceTransformer">
                  <mainClass>{main}</mainClass>
                  <manifestEntries>
                    <Add-Opens>{" ".join(JAVA_17_OPENS)}</Add-Opens>
                    <Add-Exports>{" ".join(JAVA_17_EXPORTS)}</Add-Exports>
                  </manifestEntries>
                </transformer>
              </transformers>
            </configuration>
          </execution>
        </executions>
      </plugin>
    </plugins>
  </build>
"""

    @property
    def shaded_jar(self) -> Path | None:
        return self.directory / self.shaded[0] if self.shaded else None

    def boot_script(self) -> str:
        return (
            "#!/bin/sh\n"
            "# Generated by pipelines/local_run/jars.py: starts a Beam Java SDK worker (a PROCESS environment's\n"
            "# command).\n"
            f"PYTHONPATH={REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}} exec {sys.executable} -m pipelines.local_run.boot "
            "java "
            f'{self.name} "$@"\n'
        )


# Confluent's schema-registry serializers live in Confluent's own repository (not reachable); the pipeline reads raw
# bytes and decodes the Confluent wire format itself.
_NO_CONFLUENT = "io.confluent"
_COMMON = (
    f"org.apache.kafka:kafka-clients:{KAFKA_CLIENTS_VERSION}",
    # The Java SDK harness measures cache sizes with jamm (the container ships it as an agent).
    "com.github.jbellis:jamm:0.4.0",
)

KAFKA_JAVA = JavaSet(
    name="beam-java",
    purpose="the classpath of the Kafka expansion service and the Java SDK worker (Prism)",
    dependencies=(
        f"org.apache.beam:beam-sdks-java-expansion-service:{BEAM_JAVA_VERSION}",
        f"org.apache.beam:beam-sdks-java-harness:{BEAM_JAVA_VERSION}",
        f"org.apache.beam:beam-sdks-java-io-kafka:{BEAM_JAVA_VERSION}",
        *_COMMON,
        "org.slf4j:slf4j-simple:2.0.16",
    ),
    excluded={f"org.apache.beam:beam-sdks-java-io-kafka:{BEAM_JAVA_VERSION}": _NO_CONFLUENT},
    required="beam-sdks-java-io-kafka-*.jar",
    launchers={EXPANSION_JAR: EXPANSION_MAIN},
)

FLINK_JAVA = JavaSet(
    name="beam-flink",
    purpose=f"Beam's Flink {FLINK_VERSION} job server, plus the Kafka expansion service and Java worker of Flink jobs",
    dependencies=(
        f"org.apache.beam:beam-runners-flink-{FLINK_VERSION}:{BEAM_FLINK_VERSION}",
        f"org.apache.beam:beam-runners-java-job-service:{BEAM_FLINK_VERSION}",
        f"org.apache.beam:beam-sdks-java-expansion-service:{BEAM_FLINK_VERSION}",
        f"org.apache.beam:beam-sdks-java-harness:{BEAM_FLINK_VERSION}",
        f"org.apache.beam:beam-sdks-java-io-kafka:{BEAM_FLINK_VERSION}",
        # --state_backend=rocksdb on the embedded Flink ([local]); a Flink distribution has it in flink-dist.
        "org.apache.flink:flink-statebackend-rocksdb:1.16.0",
        *_COMMON,
        # The slf4j 1.7 binding matching the runner's slf4j-api (without one, the job server logs nothing).
        "org.slf4j:slf4j-simple:1.7.30",
    ),
    excluded={f"org.apache.beam:beam-sdks-java-io-kafka:{BEAM_FLINK_VERSION}": _NO_CONFLUENT},
    required=f"beam-runners-flink-{FLINK_VERSION}-*.jar",
    launchers={EXPANSION_JAR: EXPANSION_MAIN},
    # A real jar, not a manifest launcher: a job submitted to a cluster uploads the job server's classpath, and one
    # file instead of ~190 takes that from ~20 s to ~7 s here. Beam's own job-server jar is built the same way.
    shaded=(FLINK_JOB_SERVER_JAR, FLINK_JOB_SERVER_MAIN),
)

JAVA_SETS = {java.name: java for java in (KAFKA_JAVA, FLINK_JAVA)}


class JarError(RuntimeError):
    """The Java pieces could not be installed; the message names the command and its log."""


def java_set(name: str) -> JavaSet:
    try:
        return JAVA_SETS[name]
    except KeyError:
        raise JarError(f"unknown Java set {name!r}; known: {', '.join(JAVA_SETS)}") from None


def _fingerprint(java: JavaSet) -> str:
    jdk = " ".join(JAVA_17_OPENS + JAVA_17_EXPORTS)
    text = java.pom() + java.boot_script() + json.dumps(dict(java.launchers)) + jdk
    return hashlib.sha256((text + str(REPO_ROOT)).encode()).hexdigest()


def _write_launchers(java: JavaSet, lib: Path) -> None:
    """Jars with only a manifest: Main-Class = the entry point, Class-Path = every jar of ``lib``."""
    jars = sorted(p.name for p in lib.glob("*.jar") if p.name not in java.launchers)
    for jar, main in java.launchers.items():
        manifest = (
            "Manifest-Version: 1.0\n"
            f"Main-Class: {main}\n"
            f"Add-Opens: {' '.join(JAVA_17_OPENS)}\n"
            f"Add-Exports: {' '.join(JAVA_17_EXPORTS)}\n"
            # One entry per continuation line keeps every line under the manifest's 72-byte limit.
            "Class-Path: " + "\n  ".join(jars) + "\n"
        )
        with zipfile.ZipFile(lib / jar, "w") as archive:
            archive.writestr("META-INF/MANIFEST.MF", manifest)


def ensure(java: JavaSet) -> Path:
    """Fetches (once) the set's classpath into ``.cache/<name>/lib``; returns the lib directory. Idempotent."""

    def present() -> bool:
        launchers = all(java.launcher(jar).exists() for jar in java.launchers)
        shaded = java.shaded_jar is None or java.shaded_jar.exists()
        return launchers and shaded and java.boot.exists()

    def install() -> None:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise JarError(f"'mvn' is not on PATH: it fetches {java.purpose} from Maven Central")
        java.directory.mkdir(parents=True, exist_ok=True)
        pom = java.directory / "pom.xml"
        pom.write_text(java.pom())
        staging = java.directory / "lib.partial"
        shutil.rmtree(staging, ignore_errors=True)
        log = java.directory / "mvn.log"
        command = [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            f"-Dmaven.repo.local={MAVEN_REPO}",
            *(["package"] if java.shaded else []),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        with log.open("w") as out:
            code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=1200, check=False).returncode
        if code != 0 or not any(staging.glob(java.required)):
            tail = log.read_text(errors="replace")[-2000:]
            raise JarError(f"{' '.join(command)} failed (exit {code}); log {log}:\n{tail}")
        _write_launchers(java, staging)
        shutil.rmtree(java.lib, ignore_errors=True)
        staging.rename(java.lib)
        if java.shaded_jar is not None:
            built = java.directory / "target" / java.shaded_jar.name
            if not built.exists():
                raise JarError(f"{' '.join(command)} built no {built}; log {log}")
            built.replace(java.shaded_jar)
            shutil.rmtree(java.directory / "target", ignore_errors=True)
        java.boot.write_text(java.boot_script())
        java.boot.chmod(0o755)

    install_once(
        java.directory / ".stamp", _fingerprint(java), CACHE_DIR / f"{java.name}.lock", install, present=present
    )
    return java.lib


def flink_job_server_jar() -> Path:
    """Beam's Flink job server jar for ``--flink_job_server_jar`` (fetched and shaded once); see ``FLINK_JAVA``."""
    ensure(FLINK_JAVA)
    assert FLINK_JAVA.shaded_jar is not None
    return FLINK_JAVA.shaded_jar


def kafka_expansion_service(java: JavaSet = KAFKA_JAVA, experiments: tuple[str, ...] = (KAFKA_READ_EXPERIMENT,)):
    """The expansion service for ReadFromKafka/WriteToKafka: the cached jars, Java workers as local processes.

    ``experiments`` reach the Java transforms' expansion (its pipeline options are the service's command line, not
    the Python pipeline's). The default, ``use_unbounded_sdf_wrapper``, is Prism's: KafkaIO's splittable-DoFn read
    commits offsets through KafkaCommitOffset, which declares @RequiresStableInput (Prism refuses such pipelines) and
    commits once per 5-minute event-time window; its UnboundedSource read, wrapped in a splittable DoFn, commits in
    finalizeCheckpoint through bundle finalization after every checkpoint instead (docs/connectors-kafka.md). Flink
    passes ``use_deprecated_read`` for a runner-native read.
    """
    from apache_beam.transforms.external import JavaJarExpansionService

    ensure(java)
    jar = java.launcher(EXPANSION_JAR)
    # Full argument list (not append_args): Beam adds --alsoStartLoopbackWorker when another service is cached, which
    # makes the Java transforms prefer an EXTERNAL worker inside the expansion service, gone once expansion ends.
    return JavaJarExpansionService(
        str(jar),
        extra_args=[
            "{{PORT}}",
            f"--filesToStage={jar}",
            "--defaultEnvironmentType=PROCESS",
            "--defaultEnvironmentConfig=" + json.dumps({"command": str(java.boot)}),
            *(f"--experiments={experiment}" for experiment in experiments),
        ],
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["install"]:
        for java in [java_set(name) for name in argv[1:]] or list(JAVA_SETS.values()):
            print(ensure(java))
        return 0
    print(f"usage: python -m pipelines.local_run.jars install [{' | '.join(JAVA_SETS)}]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
