"""Schemathesis over the API's own OpenAPI document, against a real uvicorn server on loopback.

With a valid admin token, every operation gets generated requests, valid and not: none may answer
a 5xx, and each answer must
have a documented status code, content type and shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import content_type_conformance, response_schema_conformance, status_code_conformance
from schemathesis.generation import GenerationMode

from frontdoor import tokens
from lockman import LockManager
from models import get_engine
from models.migrate import upgrade
from tests.apiserver import running_api
from tests.e2e.harness import Env
from tests.integration.test_api import _seed

pytestmark = [pytest.mark.slow]

#: Generated requests per operation and mode (valid, then invalid data): about 1,500 requests in all.
EXAMPLES = 25


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    data = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite:///{data / 'boxtasks.db'}"
    upgrade(url)
    env = Env(database_url=url, broker_url="", data_dir=data)
    env.apply_to_this_process()
    manager = LockManager.from_settings()
    manager.ensure_row()
    manager.dispose()
    _seed()
    return env


@pytest.fixture(scope="module")
def fuzz_token(fuzz_env: Env) -> str:
    return tokens.create(get_engine(), name="fuzz", scopes=["admin"])[1]


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_env: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with running_api(fuzz_env, tmp_path_factory.mktemp("fuzz-log")) as server:
        yield schemathesis.openapi.from_url(server.url + "/api/v1/openapi.json")


def test_no_server_errors_and_documented_answers(fuzz_schema: Any, fuzz_token: str) -> None:
    headers = {"Authorization": f"Bearer {fuzz_token}"}
    checked = 0
    for result in fuzz_schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if mode is GenerationMode.NEGATIVE and not _takes_input(operation.definition.raw):
                continue  # nothing to get wrong (the public index): no invalid request to make
            _fuzz(operation, mode, headers)
            checked += 1
    assert checked >= 50


def _takes_input(definition: dict[str, Any]) -> bool:
    return any(key in definition for key in ("parameters", "requestBody", "security"))


def _fuzz(operation: Any, mode: GenerationMode, headers: dict[str, str]) -> None:

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def one(case: Any) -> None:
        response = case.call(headers=headers, timeout=30)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} ({mode.value}) answered {response.status_code}: {response.text[:500]}"
        )
        if mode is GenerationMode.POSITIVE:
            case.validate_response(response, checks=[status_code_conformance, response_schema_conformance])
        case.validate_response(response, checks=[content_type_conformance])

    one()
