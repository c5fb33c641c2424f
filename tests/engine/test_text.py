"""Pure text helpers."""

from playground.engine.text import all_clauses, split_clauses, spoken_prefix, word_error_rate, words


def test_words_spell_digits_and_drop_punctuation():
    assert words("A table for 2, at 7:30!") == ["a", "table", "for", "two", "at", "seven", "thirty"]


def test_word_error_rate_counts_edits_per_reference_word():
    assert word_error_rate("book a table for two", "book a table for two") == 0
    assert word_error_rate("book a table for two", "book the table for") == 0.4


def test_clauses_split_on_sentences_and_long_comma_phrases_keeping_the_unfinished_rest():
    clauses, rest = split_clauses("Sure, I can do that. We open at noon, and close at ten")
    assert clauses == ["Sure, I can do that.", "We open at noon,"]
    assert rest == "and close at ten"
    assert all_clauses("Yes. Of course we can.") == ["Yes. Of course we can."]


def test_spoken_prefix_takes_the_share_of_words():
    assert spoken_prefix("one two three four", 0.5) == "one two"
    assert spoken_prefix("one two", 2.0) == "one two"
