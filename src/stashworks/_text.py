"""Small helpers for messages that read right: counts and articles.

Used by the command line and the batch layer alike, so "1 worker",
"2 workers" and "an int" are spelled the same way everywhere.
"""

from __future__ import annotations

__all__ = ['plural', 'a_or_an', 'first_line']

# Plurals that adding an 's' gets wrong, for the nouns our messages use.
_IRREGULAR = {'entry': 'entries', 'process': 'processes', 'this': 'these', 'it': 'they'}


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``count`` followed by ``noun``, in the plural unless ``count`` is 1.

    >>> plural(1, 'worker'), plural(2, 'worker'), plural(0, 'key'), plural(3, 'entry')
    ('1 worker', '2 workers', '0 keys', '3 entries')

    Args:
        count: how many.
        noun: the singular form.
        many: the plural form, when it is not ``noun + 's'`` (nor a
            known irregular one).
    """
    if count == 1:
        return f'{count} {noun}'
    return f'{count} {many or _IRREGULAR.get(noun, noun + "s")}'


def a_or_an(noun: str) -> str:
    """``noun`` with its indefinite article: ``'an int'``, ``'a str'``.

    Decided by the first letter, which is right for Python type names
    (``'an int'``, ``'an object'``, ``'a list'``, ``'a NoneType'``).
    """
    return f'{"an" if noun[:1].lower() in "aeio" else "a"} {noun}'


def first_line(text: object, width: int = 200) -> str:
    """The first non-blank line of ``str(text)``, cut to ``width`` characters.

    A failure message can be megabytes long (a repr of a whole input);
    listings show this much of it and point to where the rest is.
    """
    for line in str(text if text is not None else '').splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= width else line[: width - 3] + '...'
    return ''
