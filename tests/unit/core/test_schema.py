"""gateway.core.schema: typed construction of frozen dataclasses from TOML / JSON documents."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, Optional, Union

import pytest

from gateway.core.schema import _BAD, _convert, build, describe


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Mode(StrEnum):
    FAST = "fast"
    SLOW = "slow"


class Marker:
    """A plain class: values must be instances of it."""


@dataclass(frozen=True)
class Sample:
    name: str
    count: int = 1
    ratio: float = 0.5
    enabled: bool = False
    color: Color = Color.RED
    tags: tuple[str, ...] = ()
    limit: int | None = None
    either: int | str = 0
    extra: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TwoRequired:
    host: str
    port: int


class TestConvertScalars:
    @pytest.mark.parametrize("value", [True, False])
    def test_a_bool_field_takes_only_bools(self, value: bool) -> None:
        assert _convert(value, bool) is value

    @pytest.mark.parametrize("value", [0, 1, "true", None])
    def test_a_bool_field_refuses_ints_strings_and_none(self, value: Any) -> None:
        assert _convert(value, bool) is _BAD

    def test_an_int_field_takes_ints(self) -> None:
        assert _convert(7, int) == 7

    @pytest.mark.parametrize("value", [True, False, 1.0, "1", None])
    def test_an_int_field_refuses_bools_floats_and_strings(self, value: Any) -> None:
        assert _convert(value, int) is _BAD

    @pytest.mark.parametrize(("value", "expected"), [(2, 2.0), (0, 0.0), (2.5, 2.5)])
    def test_a_float_field_takes_ints_as_floats(self, value: Any, expected: float) -> None:
        converted = _convert(value, float)
        assert converted == expected
        assert type(converted) is float

    @pytest.mark.parametrize("value", [True, "1.5", None])
    def test_a_float_field_refuses_bools_and_strings(self, value: Any) -> None:
        assert _convert(value, float) is _BAD

    def test_a_str_field_takes_only_strings(self) -> None:
        assert _convert("x", str) == "x"
        assert _convert(1, str) is _BAD

    def test_other_classes_take_their_instances(self) -> None:
        marker = Marker()
        assert _convert(marker, Marker) is marker
        assert _convert("marker", Marker) is _BAD

    def test_any_takes_anything(self) -> None:
        value = object()
        assert _convert(value, Any) is value


class TestConvertEnums:
    def test_an_enum_field_takes_a_members_value(self) -> None:
        assert _convert("blue", Color) is Color.BLUE
        assert _convert("slow", Mode) is Mode.SLOW

    @pytest.mark.parametrize("value", ["BLUE", "green", 1, None, ["red"]])
    def test_an_enum_field_refuses_anything_else(self, value: Any) -> None:
        assert _convert(value, Color) is _BAD


class TestConvertUnions:
    # The typing module's spellings are what is tested here, not a style choice.
    @pytest.mark.parametrize(
        "tp",
        [int | None, Optional[int], Union[None, int]],  # noqa: UP007, UP045
    )
    def test_an_optional_field_takes_none_and_its_type(self, tp: Any) -> None:
        assert _convert(None, tp) is None
        assert _convert(3, tp) == 3
        assert _convert("3", tp) is _BAD

    def test_a_union_without_none_refuses_none(self) -> None:
        assert _convert(None, int | str) is _BAD

    def test_a_union_takes_the_first_member_that_fits(self) -> None:
        assert _convert("a", int | str) == "a"
        assert _convert(1, int | str) == 1
        assert type(_convert(1, float | int)) is float
        assert _convert(1.5, int | str) is _BAD

    def test_a_union_does_not_take_a_bool_as_an_int(self) -> None:
        assert _convert(True, int | str) is _BAD
        assert _convert(True, int | bool) is True


class TestConvertContainers:
    @pytest.mark.parametrize("value", [["a", "b"], ("a", "b")])
    def test_a_tuple_field_takes_a_list_or_tuple_as_a_tuple(self, value: Any) -> None:
        assert _convert(value, tuple[str, ...]) == ("a", "b")

    def test_tuple_items_are_converted(self) -> None:
        assert _convert([1, 2.5], tuple[float, ...]) == (1.0, 2.5)
        assert _convert(["red"], tuple[Color, ...]) == (Color.RED,)

    def test_an_empty_list_is_an_empty_tuple(self) -> None:
        assert _convert([], tuple[int, ...]) == ()

    @pytest.mark.parametrize("value", ["ab", {"a": 1}, 1, None])
    def test_a_tuple_field_refuses_strings_tables_and_scalars(self, value: Any) -> None:
        assert _convert(value, tuple[str, ...]) is _BAD

    def test_one_bad_item_refuses_the_whole_tuple(self) -> None:
        assert _convert(["a", 1], tuple[str, ...]) is _BAD

    def test_a_fixed_length_tuple_converts_every_item_as_its_first_type(self) -> None:
        assert _convert([1, 2, 3], tuple[int, str]) == (1, 2, 3)
        assert _convert([1, "a"], tuple[int, str]) is _BAD

    @pytest.mark.parametrize("tp", [Mapping[str, int], dict[str, int]])
    def test_mapping_fields_check_their_keys_and_values(self, tp: Any) -> None:
        """A table field takes a table whose keys and values have the declared types."""
        assert _convert({"a": 1}, tp) == {"a": 1}
        assert _convert({"a": "not an int"}, tp) is _BAD
        assert _convert(5, tp) is _BAD

    def test_other_generic_containers_pass_unchecked(self) -> None:
        assert _convert({"a": "not an int"}, list[int]) == {"a": "not an int"}
        assert _convert(5, list[int]) == 5


class TestDescribe:
    @pytest.mark.parametrize(
        ("tp", "text"),
        [
            (bool, "true or false"),
            (int, "an integer"),
            (float, "a number"),
            (str, "a string"),
            (int | None, "an integer"),
            (int | str, "an integer or a string"),
            (Optional[float], "a number"),  # noqa: UP045  # typing.Optional is what is tested
            (tuple[str, ...], "a list of a string"),
            (tuple[int | None, ...], "a list of an integer"),
            (Color, "one of 'red', 'blue'"),
            (Mode, "one of 'fast', 'slow'"),
            (Marker, "Marker"),
            (Mapping[str, int], "Mapping"),
            ("Later", "Later"),
        ],
    )
    def test_each_type_is_described_in_words(self, tp: Any, text: str) -> None:
        assert describe(tp) == text


class TestBuild:
    def test_a_complete_document_builds_the_dataclass(self) -> None:
        problems: list[str] = []
        built = build(
            Sample,
            {
                "name": "n",
                "count": 3,
                "ratio": 2,
                "enabled": True,
                "color": "blue",
                "tags": ["a", "b"],
                "limit": None,
                "either": "x",
                "extra": {"a": 1},
            },
            "f.toml [t]",
            problems,
        )
        assert problems == []
        assert built == Sample("n", 3, 2.0, True, Color.BLUE, ("a", "b"), None, "x", {"a": 1})
        assert built is not None
        assert type(built.ratio) is float

    def test_fields_left_out_take_their_defaults_and_factories(self) -> None:
        problems: list[str] = []
        assert build(Sample, {"name": "n"}, "w", problems) == Sample("n")
        assert problems == []

    def test_a_missing_required_field_is_a_problem(self) -> None:
        problems: list[str] = []
        assert build(Sample, {"count": 2}, "f.toml [t]", problems) is None
        assert problems == ["f.toml [t]: 'name' is required"]

    def test_every_missing_required_field_is_reported(self) -> None:
        problems: list[str] = []
        assert build(TwoRequired, {}, "w", problems) is None
        assert problems == ["w: 'host' is required", "w: 'port' is required"]

    def test_a_present_but_wrongly_typed_required_field_is_a_type_problem_only(self) -> None:
        problems: list[str] = []
        assert build(TwoRequired, {"host": "h", "port": "80"}, "w", problems) is None
        assert problems == ["w.port: expected an integer, got '80'"]

    def test_an_unknown_key_is_a_problem_naming_the_known_keys(self) -> None:
        problems: list[str] = []
        assert build(TwoRequired, {"host": "h", "port": 1, "hots": "x"}, "w", problems) is None
        assert problems == ["w: unknown key 'hots' (known: host, port)"]

    @pytest.mark.parametrize(
        ("key", "value", "expected"),
        [
            ("count", True, "expected an integer, got True"),
            ("count", 1.0, "expected an integer, got 1.0"),
            ("enabled", 1, "expected true or false, got 1"),
            ("ratio", "0.5", "expected a number, got '0.5'"),
            ("color", "green", "expected one of 'red', 'blue', got 'green'"),
            ("tags", "a,b", "expected a list of a string, got 'a,b'"),
            ("limit", "10", "expected an integer, got '10'"),
            ("either", None, "expected an integer or a string, got None"),
            ("name", None, "expected a string, got None"),
        ],
    )
    def test_a_wrongly_typed_value_is_a_problem_saying_what_was_expected(
        self, key: str, value: Any, expected: str
    ) -> None:
        problems: list[str] = []
        doc = {"name": "n", key: value}
        assert build(Sample, doc, "f.toml [t]", problems) is None
        assert problems == [f"f.toml [t].{key}: {expected}"]

    def test_every_problem_is_reported_at_once(self) -> None:
        problems: list[str] = []
        doc = {"count": "x", "enabled": "yes", "bogus": 1}
        assert build(Sample, doc, "w", problems) is None
        assert len(problems) == 4
        assert problems[-1] == "w: 'name' is required"

    @pytest.mark.parametrize("doc", [5, "text", ["a"], None])
    def test_a_document_that_is_not_a_table_is_a_problem(self, doc: Any) -> None:
        problems: list[str] = []
        assert build(Sample, doc, "f.toml [t]", problems) is None
        assert problems == [f"f.toml [t]: expected a table, got {doc!r}"]

    def test_problems_already_in_the_list_do_not_fail_this_build(self) -> None:
        problems = ["earlier problem"]
        assert build(Sample, {"name": "n"}, "w", problems) == Sample("n")
        assert problems == ["earlier problem"]
