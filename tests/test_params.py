import pytest

from unlearn_cli.errors import InvalidParameterError
from unlearn_cli.params import Interval, Options, validate_params


def test_interval_messages():
    c = {"keep": Interval(float, 0, 1, closed="right")}
    validate_params("partial-amnesiac", {"keep": 0.5}, c)
    with pytest.raises(InvalidParameterError) as exc:
        validate_params("partial-amnesiac", {"keep": 1.5}, c)
    assert str(exc.value) == (
        "The 'keep' parameter of partial-amnesiac must be a float in the range (0, 1]. "
        "Got 1.5 instead."
    )
    with pytest.raises(InvalidParameterError):
        validate_params("x", {"keep": 0.0}, c)
    with pytest.raises(InvalidParameterError):
        validate_params("x", {"keep": True}, c)


def test_int_interval_rejects_float_and_options():
    with pytest.raises(InvalidParameterError, match="must be an int"):
        validate_params("x", {"n": 1.0}, {"n": Interval(int, 1, None)})
    with pytest.raises(InvalidParameterError, match="one of 'a', 'b'"):
        validate_params("x", {"o": "c"}, {"o": Options(("a", "b"))})
    validate_params("x", {"o": None}, {"o": [Options(("a",)), None]})
