"""test.tasks above the cap is refused with one line naming the key."""

from __future__ import annotations

import pytest

from metarep.config.schema import validate
from metarep.running.resources import MAX_TEST_TASKS, ResourceError, check_memory


def test_test_tasks_above_the_cap_is_refused_naming_the_key():
    check_memory(validate({"test": {"tasks": MAX_TEST_TASKS}}))
    with pytest.raises(ResourceError, match=rf"^test\.tasks = {MAX_TEST_TASKS + 1} is above the cap of "
                                            rf"{MAX_TEST_TASKS} .*: lower test\.tasks$"):
        check_memory(validate({"test": {"tasks": MAX_TEST_TASKS + 1}}))
