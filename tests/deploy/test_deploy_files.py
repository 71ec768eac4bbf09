"""deploy/: the compose file mounts only what a kit provides, and nothing exposes the
SuperLink's Control API or runs without TLS."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from simulation.cli import main as coordinator_main

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RECORDS = "/srv/fedsynth/records.csv"


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR:-default}` / `${VAR:?message}` substitution."""
    def value(match: re.Match) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if name in env:
            return env[name]
        assert op == ":-", f"${{{name}}} has no default and is not set"
        return rest
    return re.sub(r"\$\{(\w+)(:[-?])([^}]*)\}", value, text)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def kits(tmp_path_factory, demo_registry) -> Path:
    root = tmp_path_factory.mktemp("deploy")
    schema = root / "schema.yaml"
    schema.write_text(demo_registry.schema_yaml)
    assert coordinator_main(["provision", "--sites", "siteA", "--out", str(root / "kits"),
                             "--schema", str(schema)]) == 0
    return root / "kits"


def test_every_mounted_host_path_is_a_file_a_kit_provides(compose, kits):
    env = {"KITS": str(kits), "RECORDS": RECORDS}
    for name, service in compose["services"].items():
        for volume in service["volumes"]:
            host, container, *mode = _interpolate(volume, env).split(":")
            if "/" not in host:
                continue  # a named volume (state), not a host path
            assert mode == ["ro"], f"{name}: {host} must be mounted read-only"
            if host == RECORDS:
                continue
            if host.startswith("./"):  # a file of this folder (the egress relay's config)
                assert (DEPLOY / host).is_file(), f"{name}: {host} is not in deploy/"
                continue
            assert Path(host).is_file(), f"{name}: {host} is not in a provisioned kit"
            assert Path(host).is_relative_to(kits)
            assert Path(host).name != "ca.key", "the CA key stays offline"


def test_superlink_is_tls_authenticated_persistent_and_loopback_only(compose):
    superlink = compose["services"]["superlink"]
    flags = " ".join(superlink["command"])
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile",
                 "--enable-supernode-auth", "--database=/app/state/",
                 "--disable-runtime-dependency-installation"):
        assert flag in flags
    assert all(str(p).startswith("127.0.0.1:") for p in superlink["ports"])


def test_node_opens_no_port_and_no_service_is_insecure(compose):
    assert "ports" not in compose["services"]["node"]
    text = (DEPLOY / "compose.yaml").read_text()
    assert "--insecure" not in text and "allow-runtime-dependency-installation" not in text
    assert (DEPLOY / "Dockerfile.node").read_text().count("FROM flwr/supernode:") == 1


def test_every_flower_image_is_the_flower_fedsynth_is_pinned_to():
    """An image of another Flower would have pip replace it while installing fedsynth."""
    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())
    [pin] = [d for d in project["project"]["dependencies"] if d.startswith("flwr")]
    minor = re.search(r">=(\d+\.\d+)", pin).group(1)
    texts = [(DEPLOY / name).read_text() for name in
             ("compose.yaml", "Dockerfile.node", "Dockerfile.serverapp")]
    tags = re.findall(r"flwr/(?:superlink|supernode|superexec):([\w.-]+)", "\n".join(texts))
    assert len(tags) >= 3 and all(tag.startswith(f"{minor}.") for tag in tags), tags


def test_reverse_proxy_forwards_the_fleet_api_only():
    conf = (DEPLOY / "nginx-superlink.conf").read_text()
    code = "\n".join(line.split("#")[0] for line in conf.splitlines())
    assert re.findall(r"location\s+(\S+)", code) == ["/v1/fleet/", "/"]
    assert code.count("proxy_pass") == 1 and "return 404;" in code
    for directive in ("proxy_ssl_verify       on;", "proxy_ssl_trusted_certificate",
                      "proxy_ssl_name", "client_max_body_size"):
        assert directive in code


@pytest.mark.parametrize("unit", ["fedsynth-node.service", "fedsynth-superlink.service",
                                  "fedsynth-serverapp.service"])
def test_systemd_units_run_as_a_service_user_over_tls(unit):
    text = (DEPLOY / "systemd" / unit).read_text()
    assert "Restart=on-failure" in text and "User=fedsynth" in text
    assert "--insecure" not in text


def test_node_unit_starts_the_checked_node_from_its_kit():
    text = (DEPLOY / "systemd" / "fedsynth-node.service").read_text()
    assert re.search(r"ExecStart=\S*fedsynth-node start \\\n\s+--kit /etc/fedsynth/kit", text)
    assert "RestartPreventExitStatus=2" in text


@pytest.mark.parametrize("image", ["Dockerfile.node", "Dockerfile.serverapp"])
def test_every_package_the_distribution_installs_is_copied_into_the_image(image):
    """The console scripts need every package: `fedsynth-coordinator` enters through
    `simulation`, so an image without it could not run the command it ships."""
    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]
                ["include"]]
    text = (DEPLOY / image).read_text()
    for package in packages:
        assert f" {package} ./{package}\n" in text, package


def test_every_state_volume_is_mounted_on_a_folder_its_image_gives_to_flowers_user(compose):
    """Docker fills a new named volume from the image's folder at the mount point, owner
    included; where the image has no such folder the volume is root's, and Flower's
    processes (uid 49999) cannot write their state there (the SuperLink then dies with a
    sqlalchemy error: it cannot open its database)."""
    for name, service in compose["services"].items():
        build = service.get("build", {})
        dockerfile = build.get("dockerfile_inline") or (
            (DEPLOY.parent / build["dockerfile"]).read_text() if "dockerfile" in build else "")
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if "/" in source or "$" in source:
                continue  # a host file, read-only
            made = re.search(rf"mkdir [^\n]*{re.escape(target)}\b", dockerfile)
            given = re.search(rf"chown app:app [^\n]*{re.escape(target)}\b", dockerfile)
            assert made and given, f"{name}: {volume}"
