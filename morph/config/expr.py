"""Prompt expressions such as ``cat + 3/7 * tabby``: a small parser, no eval.

Every operator morph allows is linear (sum, difference, scaling by a number), so an expression
reduces to a weighted sum of prompt texts: ``{"a photo of a cat": 1.0, "tabby": 0.4286}``. The
caller encodes each text once and adds the tensors with those weights.
"""

import math
import re
from dataclasses import dataclass

from ..errors import MorphError

MAX_LENGTH = 10_000  # characters in one expression
MAX_DEPTH = 50  # nested parentheses and signs: (((cat))), - - cat
MAX_WEIGHT = 1000.0  # |weight| of a prompt; beyond it half-precision conditionings overflow to inf
QUOTE_HINT = "; put literal prompt text in quotes"  # plain text, such as `dark, blurry`, where an expression goes

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+(?:\.\d*)?|\.\d+)
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*|<[^<>\s"']+>)  # <token>: a textual-inversion token
      | (?P<string>"[^"]*"|'[^']*')
      | (?P<op>[-+*/()])
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str  # number | name | string | op | end
    text: str
    column: int  # 1-based, for error messages


@dataclass(frozen=True)
class _Value:
    """A parsed sub-expression: a plain number, or a weighted sum of prompt texts."""

    number: float | None = None
    terms: tuple[tuple[str, float], ...] = ()

    @property
    def is_prompt(self) -> bool:
        return self.number is None


_SPACE = re.compile(r"\s*")


def excerpt(source: str, column: int, width: int = 60) -> str:
    """The expression for an error message: whole when short, else the part around `column` (1-based)."""
    if len(source) <= width:
        return repr(source)
    start = max(0, min(column - 1 - width // 2, len(source) - width))
    return f"{'...' if start else ''}{source[start:start + width]!r}{'...' if start + width < len(source) else ''}"


def _tokenize(source: str, where: str, hint: str) -> list[_Token]:
    """Tokens of `source` in one pass (linear in its length); `hint` ends the error of a character no token starts
    with."""
    tokens, pos = [], _SPACE.match(source).end()
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise MorphError(f"{where}: unexpected {source[pos]!r} at column {pos + 1} in {excerpt(source, pos + 1)}"
                             f"{hint}")
        kind = match.lastgroup
        tokens.append(_Token(kind, match.group(kind), match.start(kind) + 1))
        pos = _SPACE.match(source, match.end()).end()
    tokens.append(_Token("end", "", len(source) + 1))
    return tokens


def _combine(a: _Value, b: _Value, sign: float) -> _Value:
    weights: dict[str, float] = dict(a.terms)
    for text, weight in b.terms:
        weights[text] = weights.get(text, 0.0) + sign * weight
    return _Value(terms=tuple(weights.items()))


def _scale(a: _Value, k: float) -> _Value:
    return _Value(terms=tuple((text, k * w) for text, w in a.terms))


class _Parser:
    """Recursive descent: expr := term (+|- term)*; term := unary (*|/ unary)*; unary := -unary | atom."""

    def __init__(self, source: str, names: dict[str, str], where: str, bare_names_are_text: bool = False,
                 hint: str = QUOTE_HINT):
        if len(source) > MAX_LENGTH:
            raise MorphError(f"{where}: an expression of {len(source)} characters is too long (at most {MAX_LENGTH}); "
                             f"define: names for long prompts")
        self.source, self.names, self.where = source, names, where
        self.bare_names_are_text = bare_names_are_text
        self.tokens = _tokenize(source, where, hint)
        self.i = 0
        self.depth = 0

    def fail(self, token: _Token, why: str, hint: str = "") -> MorphError:
        return MorphError(f"{self.where}: {why} at column {token.column} in {excerpt(self.source, token.column)}{hint}")

    def nest(self, token: _Token) -> None:
        """Count one level of parentheses or signs; recursion stays far from Python's limit."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(token, f"the expression nests deeper than {MAX_DEPTH} levels")

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def parse(self) -> _Value:
        value = self.expr()
        token = self.peek()
        if token.kind != "end":
            raise self.fail(token, f"unexpected {token.text!r}")
        if not value.is_prompt:
            raise self.fail(self.tokens[0], "the expression is a plain number, not a prompt")
        for text, weight in value.terms:
            if not abs(weight) <= MAX_WEIGHT:
                raise self.fail(self.tokens[0], f"the weight of {text[:40]!r} comes to {weight:.6g}, beyond "
                                                f"+-{MAX_WEIGHT:g} (a picture of nothing but overflow)")
        return value

    def expr(self) -> _Value:
        value = self.term()
        while self.peek().text in ("+", "-") and self.peek().kind == "op":
            op = self.take()
            right = self.term()
            if value.is_prompt != right.is_prompt:
                raise self.fail(op, f"cannot {'add' if op.text == '+' else 'subtract'} a number and a prompt")
            if value.is_prompt:
                value = _combine(value, right, 1.0 if op.text == "+" else -1.0)
            else:
                value = _Value(number=value.number + right.number if op.text == "+" else value.number - right.number)
        return value

    def term(self) -> _Value:
        value = self.unary()
        while self.peek().text in ("*", "/") and self.peek().kind == "op":
            op = self.take()
            right = self.unary()
            if right.is_prompt and (op.text == "/" or value.is_prompt):
                raise self.fail(op, "a prompt can only be multiplied or divided by a number")
            if op.text == "/" and right.number == 0:
                raise self.fail(op, "division by zero")
            k = right.number if op.text == "*" else 1.0 / right.number
            if value.is_prompt:
                value = _scale(value, k)
            elif right.is_prompt:
                value = _scale(right, value.number)
            else:
                value = _Value(number=value.number * k)
        return value

    def unary(self) -> _Value:
        token = self.peek()
        if token.kind == "op" and token.text in ("-", "+"):
            self.take()
            self.nest(token)
            inner = self.unary()
            self.depth -= 1
            k = -1.0 if token.text == "-" else 1.0
            return _scale(inner, k) if inner.is_prompt else _Value(number=k * inner.number)
        return self.atom()

    def atom(self) -> _Value:
        token = self.take()
        if token.kind == "number":
            number = float(token.text)
            if not math.isfinite(number) or number > 1e15:
                raise self.fail(token, f"the number {token.text[:20]}... is too large")
            return _Value(number=number)
        if token.kind == "string":
            return _Value(terms=((token.text[1:-1], 1.0),))
        if token.kind == "name":
            if token.text not in self.names and self.bare_names_are_text:
                return _Value(terms=((token.text, 1.0),))
            if token.text not in self.names:
                defined = ", ".join(sorted(self.names)) or "none (add a define: section)"
                raise self.fail(token, f"unknown name {token.text!r}", f"; defined names: {defined}{QUOTE_HINT}")
            return _Value(terms=((self.names[token.text], 1.0),))
        if token.text == "(":
            self.nest(token)
            value = self.expr()
            closing = self.take()
            if closing.text != ")":
                raise self.fail(closing, "expected ')'")
            self.depth -= 1
            return value
        raise self.fail(token, "expected a name, a quoted prompt, a number or '('" if token.kind != "end"
                        else "the expression ends too early")


def parse_prompt_expression(source: str, names: dict[str, str], where: str,
                            bare_names_are_text: bool = False) -> dict[str, float]:
    """Reduce an expression over defined names and quoted texts to {prompt text: weight}.

    With `bare_names_are_text`, a name that is not defined stands for itself (``kitten`` is the
    word "kitten"): one-word edits walk through words, so that is what a user writes.
    """
    return dict(_Parser(source, names, where, bare_names_are_text).parse().terms)


def parse_number(source: str | int | float, where: str) -> float:
    """A number written in YAML as 0.5, -3/7 or (1 - 2/7): same grammar, no prompts."""
    if isinstance(source, (int, float)) and not isinstance(source, bool):
        number = float(source)
    elif isinstance(source, str):
        parser = _Parser(source, {}, where, hint="")
        value = parser.expr()
        token = parser.peek()
        if token.kind != "end":
            raise parser.fail(token, f"unexpected {token.text!r}")
        if value.is_prompt:
            raise MorphError(f"{where}: {excerpt(source, 1)} is a prompt, not a number")
        number = value.number
    else:
        raise MorphError(f"{where}: {source!r} is not a number; write e.g. 0.5 or -3/7")
    if not abs(number) <= MAX_WEIGHT:
        raise MorphError(f"{where}: {source!r} is not a number between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}")
    return number
