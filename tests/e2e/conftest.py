"""The four services as real processes on the session's broker and database, isolated by a
topic, group and schema prefix of their own (see support.running_system)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import System, running_system

from services.stack import StackInfo


@pytest.fixture(scope="module")
def system(stack_info: StackInfo, broker,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(stack_info, broker, tmp_path_factory.mktemp("system")) as running:
        yield running
