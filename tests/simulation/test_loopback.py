"""The simulation's Ray cluster listens on loopback only, and asks for a token.

The review found GCS, raylet and workers bound to every interface (Ray rewrites
127.0.0.1 to the host's routable address), unauthenticated: whoever reached the
host could run code as the user holding every site's CSV. This test reads the
operating system's socket table while a real simulated study runs and fails on
any socket of this process or its descendants (Ray's GCS, raylet, workers,
agents) that listens beyond 127.0.0.1 / ::1.
"""

from __future__ import annotations

import ipaddress
import os
import threading

import psutil
import pytest

from protocols.plan import StudyPlan
from simulation import engine as simulation

pytestmark = pytest.mark.integration
PLAN = StudyPlan(epsilon=2.0, rounds=2, local_steps=2, hidden=8, latent=2, rows=50)


def _listening(pids: set[int]) -> set[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket of `pids`."""
    found = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                name = psutil.Process(conn.pid).name()
            except psutil.NoSuchProcess:
                name = "?"
            found.add((conn.laddr.ip, conn.laddr.port, name))
    return found


def _tree() -> set[int]:
    me = psutil.Process(os.getpid())
    return {me.pid, *(child.pid for child in me.children(recursive=True))}


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def test_every_socket_of_a_simulated_study_listens_on_loopback_only(tmp_path, demo_registry):
    schema = tmp_path / "schema.yaml"
    schema.write_text(demo_registry.schema_yaml)
    paths = []
    for name in ("hospital-01", "hospital-02"):
        paths.append(tmp_path / f"{name}.csv")
        demo_registry.sites[name].to_csv(paths[-1], index=False)
    seen: set[tuple[str, int, str]] = set()
    tokens: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(_listening(_tree()))
            for pid in _tree():
                try:
                    if psutil.Process(pid).name() == "gcs_server":
                        tokens.add(psutil.Process(pid).environ().get("RAY_AUTH_MODE", ""))
                except psutil.Error:
                    pass
            done.wait(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        simulation.simulate_study(schema, paths, PLAN, tmp_path / "out", lambda line: None)
    finally:
        done.set()
        watcher.join()
    names = {name for _, _, name in seen}
    assert "gcs_server" in names and "raylet" in names, seen  # Ray's servers were seen
    assert [s for s in seen if not _loopback(s[0])] == []
    assert tokens == {"token"}  # Ray's token authentication was on
    assert "RAY_AUTH_TOKEN" not in os.environ  # the token left with the study
