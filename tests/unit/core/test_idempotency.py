"""gateway.core.idempotency: Idempotency-Key parsing and request fingerprints.

The encodings compared are the two SDKs' captured shapes (graph-api-notes Part B §2): the
Python SDK's form body with JSON-string nested values, ints as strings and bools as `true`;
the Node SDK's JSON body with native nesting, JSON numbers and an extra `"id": "act_…"`.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.idempotency import MAX_KEY_LENGTH, fingerprint, normalise_path, parse_key

ACCOUNT = "act_1234567890"
PATH = f"/v24.0/{ACCOUNT}/adsets"
TARGETING = {
    "geo_locations": {"countries": ["US", "CA"]},
    "age_min": 18,
    "age_max": 65,
    "publisher_platforms": ["facebook"],
}
NODE_ADSET = {
    "name": "example adset",
    "campaign_id": "120210000000000001",
    "daily_budget": 1000,
    "is_dynamic_creative": False,
    "status": "PAUSED",
    "targeting": TARGETING,
    "id": ACCOUNT,
}
PYTHON_ADSET = {
    "name": "example adset",
    "campaign_id": "120210000000000001",
    "daily_budget": "1000",
    "is_dynamic_creative": "false",
    "status": "PAUSED",
    "targeting": json.dumps(TARGETING, sort_keys=True, separators=(",", ":")),
}


class TestParseKey:
    @pytest.mark.parametrize("raw", ["abc", "  abc  ", '"abc"', ' "abc" '])
    def test_a_bare_or_quoted_key_is_read_without_quotes_or_spaces(self, raw: str) -> None:
        assert parse_key(raw) == "abc"

    def test_a_uuid_key_is_kept_as_is(self) -> None:
        key = "8e03978e-40d5-43e8-bc93-6894a57f9324"
        assert parse_key(key) == key

    @pytest.mark.parametrize("raw", ["", "   ", '""', ' "" '])
    def test_an_empty_key_bare_or_quoted_is_malformed(self, raw: str) -> None:
        assert parse_key(raw) is None

    def test_a_key_of_exactly_255_characters_is_accepted(self) -> None:
        assert parse_key("k" * MAX_KEY_LENGTH) == "k" * 255

    def test_a_key_of_256_characters_is_malformed(self) -> None:
        assert parse_key("k" * (MAX_KEY_LENGTH + 1)) is None

    def test_the_length_limit_applies_inside_the_quotes(self) -> None:
        assert parse_key('"' + "k" * 255 + '"') == "k" * 255
        assert parse_key('"' + "k" * 256 + '"') is None

    @pytest.mark.parametrize("raw", ["ab\x00c", "ab\tc", "ab\x7fc", "clé", "ab\u2028c", "键"])
    def test_non_printable_or_non_ascii_characters_are_malformed(self, raw: str) -> None:
        assert parse_key(raw) is None

    def test_inner_spaces_and_punctuation_are_printable(self) -> None:
        assert parse_key('a b~!@#$%^&*()_+{}|:"<>?') == 'a b~!@#$%^&*()_+{}|:"<>?'

    def test_a_lone_quote_is_kept_as_a_one_character_key(self) -> None:
        assert parse_key('"') == '"'

    @given(
        st.text(
            alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"'),
            min_size=1,
            max_size=MAX_KEY_LENGTH,
        )
    )
    def test_printable_keys_up_to_255_are_read_the_same_bare_and_quoted(self, key: str) -> None:
        assert parse_key(key) == key
        assert parse_key(f'"{key}"') == key
        assert parse_key(f' "{key}"\t') == key


class TestNormalisePath:
    @pytest.mark.parametrize(
        "path",
        [
            f"/{ACCOUNT}/adsets",
            f"/{ACCOUNT}/adsets/",
            f"/v24.0/{ACCOUNT}/adsets",
            f"/v26.0/{ACCOUNT}/adsets/",
            f"/v19/{ACCOUNT}/adsets",
            f"{ACCOUNT}/adsets",
            f"//{ACCOUNT}//adsets",
        ],
    )
    def test_version_prefix_and_slashes_are_dropped(self, path: str) -> None:
        assert normalise_path(path) == f"/{ACCOUNT}/adsets"

    @pytest.mark.parametrize(("path", "expected"), [("/", "/"), ("", "/"), ("/v24.0/", "/")])
    def test_the_root_stays_the_root(self, path: str, expected: str) -> None:
        assert normalise_path(path) == expected

    def test_only_a_leading_version_segment_is_dropped(self) -> None:
        assert normalise_path("/me/v24.0") == "/me/v24.0"
        assert normalise_path("/v24.0.1/me") == "/v24.0.1/me"


class TestFingerprint:
    def test_it_is_a_sha256_hex_digest(self) -> None:
        digest = fingerprint("POST", PATH, {"name": "x"})
        assert len(digest) == 64
        assert int(digest, 16) >= 0

    def test_the_python_form_and_node_json_encodings_give_the_same_fingerprint(self) -> None:
        assert fingerprint("POST", "/v26.0/" + ACCOUNT + "/adsets", PYTHON_ADSET) == fingerprint(
            "POST", PATH, NODE_ADSET
        )

    def test_a_nested_json_string_with_other_key_order_and_spacing_is_the_same(self) -> None:
        spaced = json.dumps({"age_max": 65, **TARGETING}, indent=2)
        assert fingerprint("POST", PATH, {"targeting": spaced}) == fingerprint(
            "POST", PATH, {"targeting": TARGETING}
        )

    def test_a_list_as_a_json_string_is_the_same_as_a_native_list(self) -> None:
        assert fingerprint("POST", PATH, {"special_ad_categories": "[]"}) == fingerprint(
            "POST", PATH, {"special_ad_categories": []}
        )
        assert fingerprint("POST", PATH, {"ids": ["1", 2]}) == fingerprint(
            "POST", PATH, {"ids": '[1,"2"]'}
        )

    def test_a_tuple_is_the_same_as_a_list(self) -> None:
        assert fingerprint("POST", PATH, {"ids": (1, 2)}) == fingerprint(
            "POST", PATH, {"ids": [1, 2]}
        )

    @pytest.mark.parametrize(
        ("native", "as_string"),
        [(1000, "1000"), (10.5, "10.5"), (True, "true"), (False, "false"), (-3, "-3")],
    )
    def test_numbers_and_bools_equal_their_string_forms(self, native: Any, as_string: str) -> None:
        assert fingerprint("POST", PATH, {"v": native}) == fingerprint(
            "POST", PATH, {"v": as_string}
        )

    def test_a_string_that_only_looks_like_json_is_kept_as_text(self) -> None:
        assert fingerprint("POST", PATH, {"name": "[Q1] {promo"}) != fingerprint(
            "POST", PATH, {"name": "[Q1] {promo2"}
        )
        assert fingerprint("POST", PATH, {"name": "[Q1] promo"}) == fingerprint(
            "POST", PATH, {"name": "[Q1] promo"}
        )

    def test_non_json_scalars_are_compared_by_their_text(self) -> None:
        assert fingerprint("POST", PATH, {"v": None}) == fingerprint("POST", PATH, {"v": "None"})

    def test_the_version_prefix_and_trailing_slash_are_ignored(self) -> None:
        params = {"name": "x"}
        assert fingerprint("POST", f"/v24.0/{ACCOUNT}/adsets", params) == fingerprint(
            "POST", f"/{ACCOUNT}/adsets/", params
        )

    def test_the_method_is_case_insensitive(self) -> None:
        assert fingerprint("post", PATH, {}) == fingerprint("POST", PATH, {})

    @pytest.mark.parametrize("ignored", ["access_token", "appsecret_proof", "appsecret_time"])
    def test_who_asks_is_not_part_of_the_fingerprint(self, ignored: str) -> None:
        assert fingerprint("POST", PATH, {"name": "x", ignored: "T1"}) == fingerprint(
            "POST", PATH, {"name": "x"}
        )
        assert fingerprint("POST", PATH, {"name": "x", ignored: "T1"}) == fingerprint(
            "POST", PATH, {"name": "x", ignored: "T2"}
        )

    def test_nodes_id_param_is_ignored_when_it_is_the_paths_account(self) -> None:
        assert fingerprint("POST", PATH, {"name": "x", "id": ACCOUNT}) == fingerprint(
            "POST", PATH, {"name": "x"}
        )

    def test_an_id_param_naming_another_account_is_kept(self) -> None:
        assert fingerprint("POST", PATH, {"name": "x", "id": "act_999"}) != fingerprint(
            "POST", PATH, {"name": "x"}
        )

    def test_an_id_param_off_an_account_path_is_kept(self) -> None:
        path = "/v24.0/120210000000000001/copies"
        assert fingerprint("POST", path, {"id": ACCOUNT}) != fingerprint("POST", path, {})
        assert fingerprint("POST", "/", {"id": ACCOUNT}) != fingerprint("POST", "/", {})

    def test_only_the_id_key_is_dropped_for_the_account_value(self) -> None:
        assert fingerprint("POST", PATH, {"account": ACCOUNT}) != fingerprint("POST", PATH, {})

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            (("POST", PATH, {"name": "x"}), ("POST", PATH, {"name": "y"})),
            (("POST", PATH, {"name": "x"}), ("DELETE", PATH, {"name": "x"})),
            (("POST", PATH, {"name": "x"}), ("POST", f"/{ACCOUNT}/campaigns", {"name": "x"})),
            (("POST", PATH, {"daily_budget": 1000}), ("POST", PATH, {"daily_budget": 1001})),
            (("POST", PATH, {"v": 1}), ("POST", PATH, {"v": 1.0})),
            (("POST", PATH, {"t": {"a": 1}}), ("POST", PATH, {"t": {"a": 2}})),
            (("POST", PATH, {"ids": [1, 2]}), ("POST", PATH, {"ids": [2, 1]})),
            (("POST", PATH, {"a": "1"}), ("POST", PATH, {"b": "1"})),
            (("POST", PATH, {}), ("POST", PATH, {"a": ""})),
        ],
    )
    def test_requests_that_mean_different_things_differ(
        self, a: tuple[str, str, dict[str, Any]], b: tuple[str, str, dict[str, Any]]
    ) -> None:
        assert fingerprint(*a) != fingerprint(*b)


# Values both SDK encodings can carry. No None (a form has no null), no NaN/inf (not JSON),
# and text that does not start a JSON document, so it stays text in both encodings.
_TEXT = st.text(max_size=12).filter(lambda s: s[:1] not in ("{", "["))
_SCALARS = (
    st.booleans()
    | st.integers(min_value=-(10**15), max_value=10**15)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT
)
_KEYS = st.text(min_size=1, max_size=8).filter(lambda k: k not in ("id", "access_token"))
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)
_PARAMS = st.dictionaries(_KEYS, _VALUES, max_size=6)


def _shuffled(value: Any, rng: random.Random) -> Any:
    """*value* with every object's keys in another order (lists keep theirs)."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


def _as_form(params: dict[str, Any]) -> dict[str, str]:
    """The Python SDK's form encoding: nested values and bools as JSON, the rest as text."""
    return {
        k: json.dumps(v, sort_keys=True, separators=(",", ":"))
        if isinstance(v, dict | list | bool)
        else str(v)
        for k, v in params.items()
    }


def _as_json_strings(params: dict[str, Any]) -> dict[str, Any]:
    """Nested values sent as spaced JSON strings in the caller's key order."""
    return {
        k: json.dumps(v, indent=1) if isinstance(v, dict | list) else v for k, v in params.items()
    }


class TestFingerprintProperties:
    @given(_PARAMS, st.randoms(use_true_random=False))
    def test_it_is_stable_under_key_order_at_every_depth(
        self, params: dict[str, Any], rng: random.Random
    ) -> None:
        assert fingerprint("POST", PATH, _shuffled(params, rng)) == fingerprint(
            "POST", PATH, params
        )

    @given(_PARAMS)
    def test_the_form_encoding_gives_the_json_encodings_fingerprint(
        self, params: dict[str, Any]
    ) -> None:
        assert fingerprint("POST", PATH, _as_form(params)) == fingerprint("POST", PATH, params)

    @given(_PARAMS, st.randoms(use_true_random=False))
    def test_nested_values_as_json_strings_give_the_native_fingerprint(
        self, params: dict[str, Any], rng: random.Random
    ) -> None:
        encoded = _as_json_strings(_shuffled(params, rng))
        assert fingerprint("POST", PATH, encoded) == fingerprint("POST", PATH, params)

    @given(_PARAMS, st.sampled_from(["", "/v24.0", "/v26.0", "/v3"]), st.booleans())
    def test_tokens_node_id_version_and_slash_never_change_it(
        self, params: dict[str, Any], version: str, slash: bool
    ) -> None:
        noisy = {**params, "access_token": "T", "appsecret_proof": "p", "id": ACCOUNT}
        path = f"{version}/{ACCOUNT}/adsets" + ("/" if slash else "")
        assert fingerprint("POST", path, noisy) == fingerprint("POST", PATH, params)

    @given(_PARAMS, _KEYS, _TEXT, _TEXT)
    def test_a_different_text_value_gives_a_different_fingerprint(
        self, params: dict[str, Any], key: str, a: str, b: str
    ) -> None:
        if a == b:
            return
        assert fingerprint("POST", PATH, {**params, key: a}) != fingerprint(
            "POST", PATH, {**params, key: b}
        )
