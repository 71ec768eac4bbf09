"""deploy/: the confinement every service runs under, read from the files themselves.

Docker is not needed: compose.yaml is loaded as YAML and .dockerignore is read with
Docker's matching rules; the systemd units are read as text and, where
`systemd-analyze` is installed, checked by systemd itself; HAProxy checks the
relay's configuration where it is installed.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
STATE_VOLUMES = {"superlink-state", "studies", "node-state", "node-ledger-head"}
SIGNING_KEY = "manifest-signing.key"
# unit -> the one folder it may write (its StateDirectory)
UNITS = {"fedsynth-node.service": "/var/lib/fedsynth",
         "fedsynth-superlink.service": "/var/lib/fedsynth-superlink",
         "fedsynth-serverapp.service": "/var/lib/fedsynth-coordinator"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_every_container_is_read_only_without_capabilities_or_new_privileges(compose):
    for name, service in compose["services"].items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"] and "cap_add" not in service, name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "privileged" not in service, name
        assert re.fullmatch(r"\d+[mg]", service["mem_limit"]), name
        assert isinstance(service["pids_limit"], int) and service["pids_limit"] > 0, name


def test_containers_write_only_to_tmpfs_and_named_state_volumes(compose):
    used = set()
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source, _, *mode = volume.rsplit(":", 2)
            if "/" in source or "$" in source:
                assert mode == ["ro"], f"{name}: {volume}"  # a host file, read-only
            else:
                used.add(source)
        for tmpfs in service.get("tmpfs", []):
            assert re.search(r"\bsize=\d+[mg]\b", tmpfs), f"{name}: {tmpfs} is unbounded"
    assert used == set(compose["volumes"]) == STATE_VOLUMES


def test_the_signing_key_is_mounted_into_the_serverapp_only(compose):
    services = compose["services"]
    holders = {name for name, service in services.items()
               if any(SIGNING_KEY in v for v in service.get("volumes", []))}
    assert holders == {"serverapp"}
    superlink, serverapp = services["superlink"], services["serverapp"]
    # The SuperLink is Flower's own image (plus its empty state folder: nothing copied or
    # installed) and starts no app code at all.
    dockerfile = superlink["build"]["dockerfile_inline"]
    assert re.match(r"FROM flwr/superlink:\S+\n", dockerfile)
    assert not re.search(r"^(COPY|ADD)\b|pip|ENTRYPOINT|CMD", dockerfile, re.M)
    assert "--isolation=process" in superlink["command"]
    # The ServerApp reaches it on loopback of a shared network namespace, publishing nothing.
    assert serverapp["network_mode"] == "service:superlink" and "ports" not in serverapp
    assert "--runtime-api-address=127.0.0.1:9092" in serverapp["command"]
    for service in (superlink, serverapp):  # the SuperExec proves itself with a secret
        assert service["secrets"] == ["superexec"]
        assert "--superexec-auth-secret-file=/run/secrets/superexec" in service["command"]


def test_a_nodes_only_way_out_is_the_relay_to_the_superlink(compose):
    services, networks = compose["services"], compose["networks"]
    node, egress = services["node"], services["egress"]
    assert node["networks"] == ["node-internal"] and "ports" not in node
    assert networks["node-internal"]["internal"] is True
    on_internal = {name for name, s in services.items() if "node-internal" in s.get("networks", [])}
    assert on_internal == {"node", "egress"}
    relay = egress["networks"]["node-internal"]["ipv4_address"]
    subnet = networks["node-internal"]["ipam"]["config"][0]["subnet"]
    assert ipaddress.ip_address(relay) in ipaddress.ip_network(subnet)
    [mapping] = node["extra_hosts"]
    name, address = mapping.rsplit(":", 1)
    assert name.startswith("${SUPERLINK_HOST:?") and address == relay
    config = _relay_config()
    assert re.findall(r"^\s*server\s+\S+\s+(.*)$", config, re.M) == [
        '"${SUPERLINK_HOST}:${SUPERLINK_PORT}"']
    assert re.search(r"^\s*mode tcp$", config, re.M)  # TLS passes through untouched


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed")
def test_haproxy_accepts_the_relay_config(tmp_path):
    result = subprocess.run(["haproxy", "-c", "-f", str(DEPLOY / "egress-superlink.cfg")],
                            capture_output=True, text=True, timeout=30,
                            env={**os.environ, "SUPERLINK_HOST": "localhost",
                                 "SUPERLINK_PORT": "8443"})
    assert result.returncode == 0, result.stdout + result.stderr


def _relay_config() -> str:
    return "\n".join(line.split("#")[0] for line in
                     (DEPLOY / "egress-superlink.cfg").read_text().splitlines())


def _directives(unit: str) -> dict[str, list[str]]:
    """The unit's `Key=value` settings, continuation lines joined, every value of a key."""
    found: dict[str, list[str]] = {}
    lines = iter((DEPLOY / "systemd" / unit).read_text().splitlines())
    for line in lines:
        if line.startswith(("#", "[")) or "=" not in line:
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        key, value = line.split("=", 1)
        found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize("unit", list(UNITS))
def test_every_unit_reaches_only_loopback_and_writes_only_its_state(unit):
    d = _directives(unit)
    assert d["IPAddressDeny"] == ["any"] and d["IPAddressAllow"] == ["localhost"]
    assert re.fullmatch(r"\d+G", d["MemoryMax"][0]) and int(d["TasksMax"][0]) > 0
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes")):
        assert d[key] == [value], key
    assert d["ReadWritePaths"] == [UNITS[unit]]
    assert d["StateDirectory"][0].split()[0] == UNITS[unit].removeprefix("/var/lib/")


def test_only_the_serverapp_unit_can_read_the_signing_key():
    superlink = _directives("fedsynth-superlink.service")
    serverapp = _directives("fedsynth-serverapp.service")
    assert "--isolation process" in superlink["ExecStart"][0]
    assert superlink["User"] != serverapp["User"]
    assert "-/etc/fedsynth/coordinator" in superlink["InaccessiblePaths"]
    assert "/etc/fedsynth/coordinator" not in " ".join(superlink["ReadOnlyPaths"])
    assert serverapp["ReadOnlyPaths"] == ["/etc/fedsynth/coordinator"]
    for unit in (superlink, serverapp):
        assert "--superexec-auth-secret-file %d/superexec.secret" in unit["ExecStart"][0]
        assert unit["LoadCredential"] == ["superexec.secret:/etc/fedsynth/superexec.secret"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd is not installed")
@pytest.mark.parametrize("unit", list(UNITS))
def test_systemd_knows_every_directive(unit, tmp_path):
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", unit],
                            cwd=DEPLOY / "systemd", capture_output=True, text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if "is not executable" not in line and "not found" not in line]
    assert not complaints, complaints  # (the venv's binaries are not installed here)


# --- the image build context ------------------------------------------------------


def _docker_pattern(pattern: str) -> re.Pattern:
    """Docker's .dockerignore matching: `**` any depth, `*` and `?` within one name."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] in "*?":
            regex, i = regex + ("[^/]*" if pattern[i] == "*" else "[^/]"), i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex + r"\Z")


def _left_out(path: str, lines: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context: the last pattern that
    matches the path or one of its parent folders decides; `!` lets it back in."""
    left_out = False
    parents = ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)]
    for line in lines:
        negated = line.startswith("!")
        pattern = _docker_pattern(os.path.normpath(line.lstrip("!").strip("/")))
        if any(pattern.match(p) for p in (path, *parents)):
            left_out = not negated
    return left_out


def test_the_image_build_context_holds_only_what_the_images_copy(compose):
    for service in compose["services"].values():
        if "build" in service:
            assert service["build"]["context"] == ".."  # the repository root
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    for secret in ("kits/siteA/node-auth.key", "kits/coordinator/ca.key", "kits/x/node.toml",
                   "superlink.pem", "node/stray.key", "fedsynth-out/manifest.json",
                   "study-001/synthetic.csv", "state/privacy-ledger.jsonl", ".git/config",
                   ".venv/bin/python", "benchmarks/.anchor-venv/lib/x.py",
                   "node/__pycache__/cli.cpython-311.pyc", "tests/conftest.py",
                   "records.csv", "fedsynth.fedsynth.0-1-0.abc.fab"):
        assert _left_out(secret, lines), secret
    copied = set()
    for image in ("Dockerfile.node", "Dockerfile.serverapp"):
        for sources in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", (DEPLOY / image).read_text(),
                                  re.M):
            copied |= set(sources.split())
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.split()
    needed = [f for f in listed if any(f == c or f.startswith(c + "/") for c in copied)]
    assert len(needed) > 50
    assert not [f for f in needed if _left_out(f, lines)]
