"""`fedsynth-coordinator study`: run a study on the consortium's SuperLink from the
installed release, and say whether it released a cohort.

`flwr run . CONNECTION` needs a source checkout and exits 0 whether or not the study
released anything. This command lays the installed release out as a Flower project
(`protocols.release.app_bundle.release_project`, no checkout needed), prints the sha256
of the app bundle it ships (the hash every site kit pins), runs Flower's own `flwr run`
on it with `--stream`, so the operator reads the study's log as it goes, and fills the
run config from the coordinator's kit: `root-certificates` (its ca.pem), `signing-key`
(its manifest-signing.key), `superlink-address` (where the coordinator's processes reach
the SuperLink that consortium.toml's address leads to: itself on a trial machine, else the
loopback port behind the reverse proxy, as the kit's README starts it), with `engine`,
`schema-path` and `out-dir`. Every `--run-config` the operator adds goes after those, so
it wins (Flower applies them in order): the plan's settings, or the paths as the
ServerApp's own process sees them where it runs apart (a container).

`flwr run` and any local SuperLink it starts run with Flower's runtime dependency
installation, telemetry and update check off: nothing is fetched or reported.

Afterwards it exits 0 only when `--out` holds a complete release of *this* run: the
manifest verifies (signature by the coordinator kit's manifest-signing.pub, every file's
sha256 and size: `protocols.release.verification`), records the Flower run that was
just started, and the app bundle this command shipped. Anything else is a failed study:
one paragraph saying where to look, exit 1. Bad input (a kit that is not a coordinator
kit, a missing schema) is refused before anything runs, as a `FedsynthError`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from coordinator.provisioning.consortium import CONSORTIUM_TOML, read_consortium
from coordinator.provisioning.kit_readmes import local_superlink_address
from coordinator.provisioning.signing_key import KEY_NAME as SIGNING_KEY
from protocols import kit_layout as kit
from protocols.errors import FedsynthError
from protocols.flower_environment import NO_DOWNLOADS, flower_executable
from protocols.kit_layout import KitError
from protocols.release.app_bundle import project_sha256, release_project
from protocols.release.manifest import MANIFEST_NAME
from protocols.release.verification import load_trusted_key, verify_release
from protocols.schema import load_schema

FLWR = "flwr"
# Set for `flwr run` and whatever Flower process it starts (Flower's own names).
ENVIRONMENT = NO_DOWNLOADS
# What `flwr run` prints once the SuperLink accepted the run.
_STARTED = re.compile(r"Successfully started run (\d+)")

Echo = Callable[[str], None]
INTERRUPTED = ("interrupted; the study goes on at the SuperLink (`flwr ls CONNECTION` lists "
               "it, `flwr stop RUN_ID CONNECTION` stops it).")


@dataclass(frozen=True)
class StudyRequest:
    """What the coordinator asked for: the `flwr` connection of the consortium's SuperLink,
    the coordinator kit, the schema and out folder (as the ServerApp sees them, unless
    `run_config` says otherwise), and further `key=value` run-config settings."""

    connection: str
    kit: Path
    schema: Path
    out: Path
    run_config: tuple[str, ...] = ()


def add_study_parser(sub: argparse._SubParsersAction) -> None:
    study = sub.add_parser("study", help="run a study on the consortium's SuperLink from the "
                           "installed release; exit 0 only when it released a verified cohort")
    study.add_argument("connection", nargs="?", metavar="CONNECTION",
                       help="the `flwr` connection of the consortium's SuperLink Control API "
                            "(a [superlink.NAME] of $FLWR_HOME/config.toml)")
    study.add_argument("--connection", dest="connection_option", metavar="CONNECTION",
                       help="the same, as an option")
    study.add_argument("--kit", type=Path, required=True,
                       help="the coordinator kit `provision` wrote (e.g. kits/coordinator): "
                            "its ca.pem, manifest-signing key and consortium.toml's SuperLink "
                            "address fill the run config")
    study.add_argument("--schema", type=Path, required=True,
                       help="the consortium schema (YAML)")
    study.add_argument("--out", type=Path, required=True,
                       help="the study's folder: checkpoints, synthetic.csv, manifest.json")
    study.add_argument("--run-config", action="append", default=[], metavar="'KEY=VALUE ...'",
                       help="more run-config settings, after (so over) the kit's: the plan "
                            "(epsilon=2.0 secure-aggregation=true min-sites=3 ...), "
                            "round-timeout, or a path as the ServerApp sees it; repeatable")


def study_command(args: argparse.Namespace) -> int:
    """`fedsynth-coordinator study` with parsed `args`."""
    if args.connection and args.connection_option and args.connection != args.connection_option:
        raise FedsynthError(f"Two connections given ({args.connection} and "
                            f"{args.connection_option}): give one.")
    connection = args.connection or args.connection_option
    if not connection:
        raise FedsynthError("Give the `flwr` connection of the consortium's SuperLink (e.g. "
                            "`fedsynth-coordinator study consortium --kit kits/coordinator "
                            "...`), as named in $FLWR_HOME/config.toml.")
    return run_study_command(StudyRequest(connection, args.kit, args.schema, args.out,
                                          tuple(args.run_config)), _echo)


def _echo(line: str) -> None:
    print(line, flush=True)


def run_study_command(request: StudyRequest, echo: Echo = print) -> int:
    """Run the study; 0 when `request.out` then holds this run's complete, verified
    release of the shipped bundle, else 1 (with one paragraph on stderr)."""
    settings = kit_run_config(request)
    trusted_key = load_trusted_key(request.kit / kit.MANIFEST_SIGNING_PUB)
    flwr = flower_executable(FLWR)
    with release_project() as project:
        shipped = project_sha256(project)
        echo(f"app bundle sha256 {shipped}: the installed fedsynth release this study ships "
             "(each site's kit pins it as [app] sha256)")
        argv = [flwr, "run", str(project), request.connection, "--stream",
                "--run-config", settings]
        for extra in request.run_config:
            argv += ["--run-config", extra]
        code, run_id = _stream(argv, echo)
    problems = release_problems(request.out, trusted_key, shipped, run_id)
    if code != 0 and run_id is None:
        problems.insert(0, f"`flwr run` exited with status {code} before the SuperLink "
                           "started a run")
    if problems:
        print(failure_paragraph(request, run_id, problems), file=sys.stderr)
        return 1
    echo(f"released: {request.out / MANIFEST_NAME} verifies against "
         f"{request.kit / kit.MANIFEST_SIGNING_PUB}, for Flower run {run_id} of app bundle "
         f"{shipped}")
    return 0


def kit_run_config(request: StudyRequest) -> str:
    """The run config the coordinator kit and the command's options give, as Flower's
    `key=value` text; `KitError` or `SchemaError` (one paragraph) for bad input."""
    folder = request.kit
    needed = [kit.CA_CERT, kit.MANIFEST_SIGNING_PUB, SIGNING_KEY, CONSORTIUM_TOML]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise KitError(f"{folder} is not a coordinator kit: it lacks {', '.join(missing)}. "
                       "Give --kit the coordinator/ folder that `fedsynth-coordinator "
                       "provision` wrote (e.g. --kit kits/coordinator).")
    if not request.schema.is_file():
        raise FedsynthError(f"The schema {request.schema} does not exist: give --schema the "
                            "consortium's data dictionary (YAML).")
    load_schema(request.schema)  # a broken schema is refused here, not in the ServerApp
    consortium = read_consortium(folder)
    config = {"engine": "deployment", "schema-path": request.schema.resolve(),
              "out-dir": request.out.resolve(),
              "superlink-address": local_superlink_address(consortium.address),
              "root-certificates": (folder / kit.CA_CERT).resolve(),
              "signing-key": (folder / SIGNING_KEY).resolve()}
    return " ".join(f"{key}={json.dumps(str(value))}" for key, value in config.items())


def release_problems(out: Path, trusted_key: Ed25519PublicKey, shipped: str,
                     run_id: int | None) -> list[str]:
    """What keeps `out` from being the complete, verified release of run `run_id` of the
    bundle `shipped` (empty: nothing)."""
    if not (out / MANIFEST_NAME).is_file():
        return [f"{out} holds no {MANIFEST_NAME}: nothing was released"]
    check = verify_release(out, trusted_key)
    problems = [f"{out} does not verify: {problem}" for problem in check.problems]
    if problems:
        return problems
    manifest = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    recorded_run = manifest.get("flower_run_id")
    if run_id is not None and recorded_run != str(run_id):
        problems.append(f"the release in {out} is Flower run {recorded_run}'s, not this "
                        f"study's run {run_id} (left from an earlier study)")
    if manifest.get("app_sha256") != shipped:
        problems.append(f"the manifest records app bundle sha256 "
                        f"{manifest.get('app_sha256') or 'none'}, not the one shipped, "
                        f"{shipped}")
    return problems


def failure_paragraph(request: StudyRequest, run_id: int | None,
                      problems: Sequence[str]) -> str:
    """The one paragraph a failed study ends with: what is missing, and where to look."""
    log = (f"`flwr log {run_id} {request.connection}` shows it again"
           if run_id is not None else "`flwr ls` lists the runs the SuperLink knows")
    return (f"fedsynth-coordinator: the study failed: {'; '.join(problems)}. Flower's output "
            f"above says why ({log}); a site that declined says why in its own node's log "
            f"only. Any rounds already done are checkpointed in {request.out / 'checkpoints'}: "
            "the same command resumes the study from them.")


def _stream(argv: list[str], echo: Echo) -> tuple[int, int | None]:
    """Run `argv`, echoing its output line by line: (exit status, the run id it started)."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, errors="replace", env={**os.environ, **ENVIRONMENT})
    run_id = None
    try:
        assert process.stdout is not None
        for line in process.stdout:
            echo(line.rstrip("\n"))
            started = _STARTED.search(line)
            if started and run_id is None:
                run_id = int(started.group(1))
        return process.wait(), run_id
    finally:
        if process.poll() is None:  # interrupted: the run goes on at the SuperLink
            process.terminate()
            process.wait()
