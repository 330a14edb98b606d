"""Property-based fuzzing, bounded, against a real server: schemathesis over /openapi.json with every
check (no 5xx; every status, content type, header and body as documented; schema-valid requests accepted,
schema-violating ones refused) and random gRPC messages (never UNKNOWN)."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recdistill.core._proto import ranking_pb2, ranking_v3_pb2
from student_server.launcher import student_process
from tests.student_server.conftest import TOKEN, make_settings, run_server

pytestmark = pytest.mark.integration
SCHEMATHESIS = str(Path(sys.executable).parent / "st")
CONFIG = Path(__file__).with_name("schemathesis.toml")


@pytest.mark.parametrize("seed", [1, 2])
async def test_schemathesis_with_every_check_finds_nothing(registry: Path, tmp_path: Path, seed: int) -> None:
    """Every answer each route can give is in the OpenAPI document (13 of 15 checks failed before)."""
    settings = make_settings(registry, tmp_path, sampling_rate=1.0)
    async with run_server(settings) as server:
        process = await asyncio.create_subprocess_exec(
            SCHEMATHESIS, "--config-file", str(CONFIG), "run", f"{server.http_url}/openapi.json", "--checks", "all",
            "--max-examples", "40", "--seed", str(seed),
            "--header", f"Authorization: Bearer {TOKEN}", "--workers", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=os.environ | {"NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""})
        output, _ = await asyncio.wait_for(process.communicate(), timeout=300)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-6000:]


_text = st.text(max_size=40)
_double = st.floats(allow_nan=True, allow_infinity=True) | st.floats(-1e20, 1e20)
_value = (st.builds(ranking_pb2.Value, string_value=_text) | st.builds(ranking_pb2.Value, number_value=_double)
          | st.builds(ranking_pb2.Value, list_value=st.builds(ranking_pb2.StringList,
                                                              values=st.lists(_text, max_size=3))))
# Keys the MovieLens schema declares, and keys it does not.
_user_keys = st.sampled_from(["age", "gender", "occupation", "zip_code", "colour", ""])
_item_keys = st.sampled_from(["genres", "release_year", "brand"])
_messages = st.builds(
    ranking_pb2.RankRequest,
    user=st.builds(ranking_pb2.User, user_id=_text, features=st.dictionaries(_user_keys, _value, max_size=4)),
    history=st.lists(st.builds(ranking_pb2.HistoryEvent, item_id=_text, ts=_double, action=_value), max_size=30),
    candidates=st.lists(st.builds(ranking_pb2.Candidate, item_id=_text,
                                  features=st.dictionaries(_item_keys, _value, max_size=2)), max_size=60),
    request_id=st.text(max_size=200),
    context=st.builds(ranking_pb2.Context, ts=_double,
                      features=st.dictionaries(st.sampled_from(["device", "ts"]), _value, max_size=1)),
).map(lambda m: m.SerializeToString()) | st.binary(max_size=300)


@pytest.fixture(scope="module")
def grpc_server(registry_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    registry = tmp_path_factory.mktemp("fuzz") / "registry"
    shutil.copytree(registry_template, registry)
    with student_process(registry, registry.parent / "samples") as (server, _):
        yield server.grpc_target


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=_messages)
def test_random_grpc_messages_never_get_unknown_or_internal(grpc_server: str, payload: bytes) -> None:
    code, detail, reply = grpc.StatusCode.OK, "", ranking_pb2.RankResponse()
    with grpc.insecure_channel(grpc_server) as channel:
        rank = channel.unary_unary("/recdistill.v2.Ranking/Rank")  # bytes in, bytes out
        try:
            reply = ranking_pb2.RankResponse.FromString(rank(payload, timeout=30))
        except grpc.RpcError as exc:
            code, detail = exc.code(), exc.details()
    if code != grpc.StatusCode.OK:
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION), (code, detail)
        return
    assert all(math.isfinite(score) and 0 <= score <= 1 for score in reply.scores)
    assert len(reply.scores) == len(ranking_pb2.RankRequest.FromString(payload).candidates)


_column = (st.builds(ranking_v3_pb2.Column, strings=st.lists(_text, max_size=4))
           | st.builds(ranking_v3_pb2.Column, numbers=st.lists(_double, max_size=4))
           | st.builds(ranking_v3_pb2.Column, lists=st.lists(st.builds(ranking_v3_pb2.StringList,
                                                                       values=st.lists(_text, max_size=3)), max_size=3))
           | st.builds(ranking_v3_pb2.Column, strings=st.lists(_text, max_size=2),
                       numbers=st.lists(_double, max_size=2)))


@st.composite
def _columnar(draw: st.DrawFn) -> bytes:
    """v3 messages: columns mostly as long as their ids (so most reach the model), some not."""
    history = draw(st.lists(_text, max_size=30))
    candidates = draw(st.lists(_text, max_size=60))
    rows = st.integers(0, 3) | st.just(0)
    ts = draw(st.lists(_double, min_size=len(history), max_size=len(history)) | st.lists(_double, max_size=3))
    message = ranking_v3_pb2.RankRequest(
        user_id=draw(_text), user_features=draw(st.dictionaries(_user_keys, _column, max_size=3)),
        history_item_ids=history, history_ts=ts,
        history_actions=ranking_v3_pb2.Column(strings=draw(st.lists(_text, min_size=len(history),
                                                                    max_size=len(history) + draw(rows)))),
        candidate_ids=candidates,
        candidate_features=draw(st.dictionaries(_item_keys, _column, max_size=2)),
        request_id=draw(st.text(max_size=200)),
        context_features=draw(st.dictionaries(st.sampled_from(["device", "ts"]), _column, max_size=1)))
    if draw(st.booleans()):
        message.context_ts = draw(_double)
    return message.SerializeToString()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=_columnar() | st.binary(max_size=300))
def test_random_columnar_messages_never_get_unknown_or_internal(grpc_server: str, payload: bytes) -> None:
    code, detail, reply = grpc.StatusCode.OK, "", ranking_v3_pb2.RankResponse()
    with grpc.insecure_channel(grpc_server) as channel:
        rank = channel.unary_unary("/recdistill.v3.Ranking/Rank")  # bytes in, bytes out
        try:
            reply = ranking_v3_pb2.RankResponse.FromString(rank(payload, timeout=30))
        except grpc.RpcError as exc:
            code, detail = exc.code(), exc.details()
    if code != grpc.StatusCode.OK:
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION), (code, detail)
        return
    assert all(math.isfinite(score) and 0 <= score <= 1 for score in reply.scores)
    assert len(reply.scores) == len(ranking_v3_pb2.RankRequest.FromString(payload).candidate_ids)
