import pytest

from api.accounts.money import dollars_to_micros, format_micros


@pytest.mark.parametrize("text, micros", [("5", 5_000_000), ("5.00", 5_000_000), ("$0.000001", 1),
                                          ("12.5", 12_500_000), ("-1", -1_000_000), (" 0 ", 0)])
def test_dollars_parse_to_whole_micro_dollars(text, micros):
    assert dollars_to_micros(text) == micros


@pytest.mark.parametrize("text", ["", "five", "1e400", "0.0000001", "nan", "inf", "1,00"])
def test_bad_amounts_are_refused(text):
    with pytest.raises(ValueError):
        dollars_to_micros(text)


@pytest.mark.parametrize("micros, text", [(5_000_000, "$5.000000"), (1, "$0.000001"), (-100_000, "-$0.100000"),
                                          (0, "$0.000000")])
def test_micro_dollars_format_as_dollars(micros, text):
    assert format_micros(micros) == text


def test_formatting_truncates_to_the_places_asked():
    assert format_micros(1_239_999, places=2) == "$1.23"
