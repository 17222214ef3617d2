"""The close code a tunnel passes on."""

from __future__ import annotations

import pytest

from proxy.tunnel import relayable_close_code


@pytest.mark.parametrize(
    ("code", "relayed"),
    [
        (1000, 1000),
        (1001, 1001),
        (4001, 4001),
        (None, 1000),
        (0, 1000),
        (1005, 1000),  # "no status received": a state, never sent
        (1006, 1000),
        (1015, 1000),
        (5000, 1000),
    ],
)
def test_relayable_close_code(code: int | None, relayed: int) -> None:
    assert relayable_close_code(code) == relayed
