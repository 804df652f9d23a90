"""UPU S10 identifiers: check digit arithmetic and the polars check used by validation."""

from __future__ import annotations

import polars as pl
from hypothesis import given
from hypothesis import strategies as st

from kpi.contract import (
    is_s10,
    s10_check_digit,
    s10_invalid_expr,
    s10_valid,
    s10_with_check_digit,
)


def test_worked_example_from_the_upu_standard() -> None:
    # 1*8 + 2*6 + 3*4 + 4*2 + 5*3 + 6*5 + 7*9 + 8*7 = 204; 204 mod 11 = 6; 11 - 6 = 5
    assert s10_check_digit("12345678") == 5
    assert s10_valid("RR123456785CN")
    assert s10_with_check_digit("RR", 12345678, "CN") == "RR123456785CN"


def test_one_digit_change_is_invalid() -> None:
    assert not s10_valid("RR123456784CN")
    assert not s10_valid("RR123456775CN")  # serial changed, check digit kept


def test_special_remainders() -> None:
    # sum mod 11 == 1 -> C = 10 -> 0 ; sum mod 11 == 0 -> C = 11 -> 5
    # serial 00000001: sum 7 -> 11-7 = 4
    assert s10_check_digit("00000001") == 4
    # serial 00000000: sum 0 -> C = 11 -> 5
    assert s10_check_digit("00000000") == 5
    # serial 00000030: 3*9 = 27, 27 mod 11 = 5 -> 6 ; serial 00000300: 3*5=15 -> 4 -> 7
    assert s10_check_digit("00000030") == 6
    # find a serial with sum mod 11 == 1 by hand: 00000100 -> 1*3 = 3 -> 8; 00001000 -> 2 -> 9
    # 00000002 -> 14 -> 3 -> 8 ; 00000010 -> 9 -> 2 ; 00100000 -> 4 -> 7 ; 10000000 -> 8 -> 3
    # 01000000 -> 6 -> 5 ; 00000012: 9 + 14 = 23 -> 1 -> C = 10 -> 0
    assert s10_check_digit("00000012") == 0


def test_shapes() -> None:
    assert is_s10("EE123456785CN")
    assert not is_s10("ee123456785CN")
    assert not is_s10("EE12345678CN")
    assert not is_s10("OP-2027-000001")


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", max_size=15))
def test_polars_check_agrees_with_python(item_id: str) -> None:
    flagged = pl.DataFrame({"item_id": [item_id]}).select(s10_invalid_expr()).item()
    assert flagged == (is_s10(item_id) and not s10_valid(item_id))


@given(st.integers(0, 99_999_999), st.integers(0, 9))
def test_every_wrong_check_digit_is_flagged(serial: int, digit: int) -> None:
    good = s10_with_check_digit("EE", serial, "CN")
    candidate = good[:10] + str(digit) + good[11:]
    flagged = pl.DataFrame({"item_id": [candidate]}).select(s10_invalid_expr()).item()
    assert flagged == (candidate != good)
