"""The running consortium the deployment tests share.

Starting a federation of real processes (a TLS SuperLink, its ServerApp's SuperExec,
three nodes) takes tens of seconds on a 2-core machine, so the tests that leave every
process as they found it run against one, started once for tests/deploy/: three enrolled
hospitals and a fourth provisioned but never enrolled (`federation.STRANGER`), in the
coordinator's production layout (the SuperLink runs no app code; a SuperExec of its own
runs the ServerApp). Each test's studies get fresh study ids and their own output folder;
the sites' budgets are large enough for all of them, so a test reads ledgers by study, not
by position. Tests that kill a process, revoke a key or need another SuperLink start their
own federation.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from federation import SHARED_SITES, STRANGER, Federation

SHARED_EPSILON_BUDGET = 100.0


@pytest.fixture(scope="package")
def consortium(tmp_path_factory, demo_registry) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("consortium")
    fed = Federation(root, [*SHARED_SITES, STRANGER], demo_registry.schema_yaml)
    for site in [*SHARED_SITES, STRANGER]:
        demo_registry.sites[site].to_csv(root / f"{site}.csv", index=False)
    fed.provision(epsilon_budget=SHARED_EPSILON_BUDGET)
    try:
        fed.start_superlink(separate_serverapp=True)
        for site in SHARED_SITES:
            fed.enroll(site)
            fed.start_node(site, root / f"{site}.csv")
        fed.wait_until_online(len(SHARED_SITES))
        yield fed
    finally:
        fed.stop()
