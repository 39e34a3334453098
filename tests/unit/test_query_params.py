"""Search parameters: k and filters from the query string, and 400s for anything malformed."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from query.errors import ApiError
from query.params import SearchParams, parse_search_params


def parse(*pairs: tuple[str, str], default_k: int = 24) -> SearchParams:
    return parse_search_params(MultiDict(pairs), default_k)


def test_defaults_are_k_and_no_narrowing() -> None:
    params = parse(default_k=7)
    assert params.k == 7
    f = params.filters
    assert (f.category_prefix, f.price_min, f.price_max, f.shop_id) == (None, None, None, None)
    assert tuple(f.exclude_listing_ids) == ()
    assert f.only_active


def test_every_filter_is_read() -> None:
    params = parse(
        ("k", "5"),
        ("category", "/home_and_living/kitchen/"),
        ("price_min", "10"),
        ("price_max", "24.5"),
        ("currency", "EUR"),
        ("shop_id", "S42"),
        ("exclude", "L1,L2"),
        ("exclude", "L3"),
        ("exclude", "L1"),
    )
    f = params.filters
    assert params.k == 5
    assert f.category_prefix == "home_and_living/kitchen"
    assert (f.price_min, f.price_max, f.currency) == (10.0, 24.5, "EUR")
    assert f.shop_id == "S42"
    assert list(f.exclude_listing_ids) == ["L1", "L2", "L3"]


@pytest.mark.parametrize(
    ("pairs", "parameter"),
    [
        ((("k", "0"),), "k"),
        ((("k", "101"),), "k"),
        ((("k", "ten"),), "k"),
        ((("k", "1"), ("k", "2")), "k"),
        ((("price_min", "-1"),), "price_min"),
        ((("price_max", "nan"),), "price_max"),
        ((("price_max", "inf"),), "price_max"),
        ((("price_min", "30"), ("price_max", "20")), "price_min"),
        ((("category", " "),), "category"),
        ((("category", "//"),), "category"),
        ((("shop_id", "x" * 201),), "shop_id"),
        (tuple(("exclude", f"L{i}") for i in range(101)), "exclude"),
    ],
)
def test_malformed_parameters_are_400(pairs: tuple[tuple[str, str], ...], parameter: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse(*pairs)
    assert caught.value.status == 400
    assert caught.value.code == "bad_parameter"
    assert caught.value.details["parameter"] == parameter


def test_unknown_parameters_are_refused_not_ignored() -> None:
    with pytest.raises(ApiError) as caught:
        parse(("categroy", "mugs"))
    assert caught.value.status == 400
    assert caught.value.code == "unknown_parameter"
    assert "categroy" in caught.value.message
