"""The schema file: bad files are refused with the line or feature named and nothing written; the
shipped files and their JSON Schema are current."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recdistill.core.data.prepare import prepare
from recdistill.core.data.sources import load_log, shipped_schema
from recdistill.core.errors import RecDistillError
from recdistill.core.features.spec import SchemaError, json_schema, load_schema_spec, parse_schema_spec

pytestmark = pytest.mark.unit
RECDISTILL = str(Path(sys.executable).parent / "recdistill")
SCHEMAS = Path(__file__).parents[2] / "recdistill" / "schemas"
ML = (SCHEMAS / "movielens-100k.toml").read_text()


def _line(text: str, fragment: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), start=1) if fragment in line)


@pytest.mark.parametrize(("text", "message"), [
    (ML.replace('kind = "numeric"', 'kind = "numerik"'),
     "feature `release_year` (item_features.1.kind, line {})".format(_line(ML, 'kind = "numeric"'))),
    (ML.replace('name = "gender"', 'name = "occupation"'),
     "duplicate feature name `occupation` (line {})".format(_line(ML, 'name = "occupation"'))),
    (ML.replace('label = "rating >= 4"', 'label = "rating >="'), "label expression `rating >=` does not parse"),
    (ML.replace('label = "rating >= 4"', 'label = "__import__(\'os\')"'), "is not allowed"),
    (ML.replace("[sequence]", "[sequence"), "not valid TOML"),
    (ML.replace("prefix = 2", "prefix = 2\nbuckets = 0"), "feature `zip_prefix`"),
    (ML.replace('boundaries = [18, 25, 35, 45, 50, 56]', 'boundaries = [25, 18]'), "strictly increasing"),
    (ML.replace("[views.student]", "[views.pupil]"), "needs a `student` view"),
    (ML + '\n[views.mini]\nhistory_len = 3\nfeatures = ["colour"]\n', "unknown feature(s) ['colour']"),
    (ML.replace('name = "gender"', 'name = "gender"\nwidth = 3'), "Extra inputs are not permitted"),
])
def test_a_bad_schema_file_names_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(SchemaError) as caught:
        parse_schema_spec(text, "bad.toml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("bad.toml: ")


def test_a_feature_missing_from_the_data_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    spec = parse_schema_spec(ML.replace('column = "zip_code"', 'column = "postcode"'))
    out = tmp_path / "prepared"
    with pytest.raises(RecDistillError, match="feature `zip_prefix` reads column `postcode`"):
        prepare(load_log("ml-100k"), spec, out)
    assert not out.exists()


def test_the_cli_refuses_a_bad_schema_before_writing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(ML.replace('label = "rating >= 4"', 'label = "ratings >= 4"'))
    out = tmp_path / "prepared"
    finished = subprocess.run([RECDISTILL, "data", "prepare", "--schema", str(bad), "--out", str(out)],
                              capture_output=True, text=True, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert finished.returncode == 2
    assert "ratings" in finished.stdout + finished.stderr
    assert not out.exists()


def test_shipped_schema_files_load_and_their_json_schema_is_current() -> None:
    for name in ("ml-100k", "ecommerce"):
        assert load_schema_spec(shipped_schema(name)).views["student"].history_len == 10
    assert json.loads((SCHEMAS / "schema.json").read_text()) == json_schema(), \
        "regenerate: recdistill data schema --json-schema recdistill/schemas/schema.json"


def test_the_example_schema_for_another_grocery_log_loads() -> None:
    """docs/demo.md runs the Complete Journey log through the own-data path with this file."""
    spec = load_schema_spec(Path(__file__).parents[2] / "examples" / "completejourney.toml")
    assert (spec.source.user_id, spec.source.session, spec.views["student"].history_len) == \
        ("household_id", "basket_id", 10)


@pytest.mark.parametrize("unit", ["ms", "us"])
def test_a_timestamp_unit_that_plainly_does_not_fit_stops_preparation(tmp_path: Path, unit: str) -> None:
    """MovieLens rates in unix seconds: declared finer, every event would fall in the first days of 1970."""
    spec = parse_schema_spec(ML.replace('[source]\n', f'[source]\ntimestamp_unit = "{unit}"\n', 1))
    out = tmp_path / "prepared"
    with pytest.raises(RecDistillError, match="timestamp_unit"):
        prepare(load_log("ml-100k"), spec, out)
    assert not out.exists()


def test_a_log_in_milliseconds_encodes_as_the_same_log_in_seconds(tmp_path: Path) -> None:
    """The unit is applied at preparation and at serving: the same events, logged in seconds or in
    milliseconds (each schema declaring its unit), give the same training rows and the same served tensors
    from requests that carry each log's own unit."""
    from dataclasses import replace

    from recdistill.core.data.dataset import PreparedDataset
    from recdistill.core.data.ecommerce import generate_ecommerce
    from recdistill.core.features.encoder import Encoder

    seconds = generate_ecommerce(events=4_000)
    millis = replace(seconds, events=seconds.events.assign(ts=seconds.events["ts"] * 1_000))
    text = shipped_schema("ecommerce").read_text()
    prepare(seconds, parse_schema_spec(text), tmp_path / "s")
    prepare(millis, parse_schema_spec(text.replace('timestamp = "ts"\n', 'timestamp = "ts"\ntimestamp_unit = "ms"\n')),
            tmp_path / "ms")
    in_s, in_ms = PreparedDataset(tmp_path / "s"), PreparedDataset(tmp_path / "ms")
    event = int(in_s.split("test", "slate")[3])
    body_s, body_ms = in_s.to_request(event, "slate"), in_ms.to_request(event, "slate")
    assert body_ms["context"]["ts"] == body_s["context"]["ts"] * 1_000
    assert body_ms["history"][-1]["ts"] == body_s["history"][-1]["ts"] * 1_000
    for view in ("student", "teacher"):
        served_s, _ = Encoder(in_s.schema, view).encode_requests([in_s.schema.parse_request(body_s)])
        served_ms, _ = Encoder(in_ms.schema, view).encode_requests([in_ms.schema.parse_request(body_ms)])
        trained, _ = Encoder(in_ms.schema, view).assemble(in_ms.contexts(Encoder(in_ms.schema, view),
                                                                         [event], "slate"))
        for name, array in served_s.items():
            np.testing.assert_allclose(served_ms[name], array, rtol=1e-6, err_msg=f"{view} {name}")
            np.testing.assert_allclose(trained[name], array, rtol=1e-6, err_msg=f"{view} {name} (training)")
    with pytest.raises(RecDistillError, match="ts"):  # milliseconds where seconds are declared: refused
        in_s.schema.parse_request(body_ms)
