"""Tests of pyrovae/errors.py: the one-line texts of errors."""

from __future__ import annotations

import numpy as np
import pytest

from pyrovae.errors import ConfigError, check_count, first_line


def test_first_line_joins_a_line_that_announces_the_next():
    err = RuntimeError("Error(s) in loading state_dict for VAE:\n\tsize mismatch for w.\n more")
    assert first_line(err) == "Error(s) in loading state_dict for VAE: size mismatch for w."


def test_first_line_of_an_empty_message_is_the_type():
    assert first_line(ValueError()) == "ValueError"


def test_a_long_line_is_cut_at_a_sentence_that_fits():
    err = RuntimeError("failed finding central directory. " + "This is an internal error. " * 20)
    text = first_line(err, limit=100)
    assert text.endswith(".") and len(text) <= 100
    assert text.startswith("failed finding central directory. This is an internal error.")


def test_a_long_sentence_is_cut_at_a_word():
    err = RuntimeError("word " * 100)
    text = first_line(err, limit=50)
    assert text.endswith(" ...") and len(text) <= 54
    assert all(part == "word" for part in text[:-4].split())


def test_a_count_is_a_whole_number_in_its_range():
    assert check_count(np.int64(3), "-n") == 3 and type(check_count(np.int64(3), "-n")) is int
    for value, message in [(True, "whole number"), (2.0, "whole number"), ("2", "whole number"),
                           (None, "whole number"), (0, "at least 1, got 0")]:  # fmt: skip
        with pytest.raises(ConfigError, match=f"-n must be (a )?{message}"):
            check_count(value, "-n")
    with pytest.raises(ConfigError, match="--k must be from 2 to 5, got 6"):
        check_count(6, "--k", 2, 5)
