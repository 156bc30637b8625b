"""The reward corpus: (response, gold, mode, accuracy, format, status) cases checked through gRPC and HTTP.

Written by hand per category of the issue, plus cases from math-verify's own published tests
(huggingface/Math-Verify tests/test_all.py) where they apply to our pipeline (the prediction is the
content of <answer>, the gold is wrapped as `$...$`).
"""

from __future__ import annotations

from dataclasses import dataclass

OK, GOLD_UNPARSEABLE = "ok", "gold_unparseable"
THINK = "Let me work through this step by step."
LONG_THINK = "I reason carefully about every part of the figure and the question. " * 6  # > 300 chars


@dataclass(frozen=True)
class Case:
    response: str
    gold: str
    accuracy: float
    format: float
    mode: str = "instruct"
    status: str = OK
    options: tuple[str, ...] = ()
    note: str = ""


def ans(answer: str, think: str = THINK) -> str:
    """A well-formed instruct response."""
    return f"<think>{think}</think><answer>{answer}</answer>"


def same(gold: str, *answers: str, note: str = "") -> list[Case]:
    return [Case(ans(a), gold, 1.0, 1.0, note=note) for a in answers]


def differ(gold: str, *answers: str, note: str = "") -> list[Case]:
    return [Case(ans(a), gold, 0.0, 1.0, note=note) for a in answers]


INTEGERS = (
    same("12", "12", "12.0", "+12", " 12 ", "012", "The answer is 12", "12 apples", note="integers")
    + same("-5", "-5", "-5.0", "- 5", note="negative")
    + same("1000", "1,000", "1000.0", "1 000", "10^3", note="thousands")
    + same("0", "0", "0.0", "-0", note="zero")
    + differ("12", "13", "-12", "120", "1.2", "twelve hundred", note="wrong integers")
)

DECIMALS = (
    same("0.5", "0.5", ".5", "0.50", "1/2", "\\frac{1}{2}", "\\dfrac{1}{2}", note="decimals")
    + same("3.14", "3.14", "3.140", note="decimals")
    + same("2.74", "2.74", "2,74", note="comma decimal")
    + differ("0.5", "0.6", "5", "0.05", note="wrong decimals")
    + differ("3.14", "\\pi", "3.15", note="pi is not 3.14")
)

FRACTIONS = (
    same("\\frac{3}{4}", "3/4", "0.75", "\\frac{3}{4}", "\\frac{6}{8}", "\\tfrac{3}{4}", "\\cfrac{3}{4}", "\\frac34", note="fractions")
    + same("-\\frac{10}{9}", "-10/9", "-\\frac{10}{9}", "\\frac{-10}{9}", note="negative fractions")
    + same("\\frac{14}{3}", "\\frac{14}{3}", "14/3", "\\frac{28}{6}", note="fractions")
    + differ("\\frac{3}{4}", "4/3", "0.7", "\\frac{3}{5}", note="wrong fractions")
)

LATEX = (
    same("\\sqrt{2}", "\\sqrt{2}", "\\sqrt2", "2^{1/2}", "\\frac{2}{\\sqrt{2}}", note="sqrt")
    + same("2\\sqrt{3}", "2\\sqrt{3}", "\\sqrt{12}", note="sqrt")
    + same("\\pi", "\\pi", note="pi")
    + same("2\\pi", "2\\pi", "2 \\pi", "\\pi \\cdot 2", note="pi")
    + same("\\frac{\\pi}{2}", "\\frac{\\pi}{2}", "\\pi/2", "0.5\\pi", note="pi")
    + same("x^2+1", "x^2+1", "1+x^2", note="polynomial")
    + same("\\frac{1}{3}", "\\left( \\frac{1}{3} \\right)", "\\boxed{\\frac{1}{3}}", "k = \\frac{1}{3}", "\\frac{1}{3} \\text{ meters}", note="styling")
    + same("\\text{Evelyn}", "\\text{Evelyn}", "Evelyn", note="text answer")
    + differ("\\sqrt{2}", "\\sqrt{3}", "2", "1.41", note="wrong sqrt")
    + differ("2\\pi", "2", "\\pi", "6.28", note="wrong pi")
    + differ("x^2+1", "x^2-1", "x^2", note="wrong polynomial")
)

PERCENT_DEGREE_UNITS = (
    same("50\\%", "50\\%", "50", "50 \\%", "50 percent", note="percent")
    + same("28\\%", "28 %", "28 pct", "28\\%", note="percent")
    + differ("50\\%", "40\\%", "5", note="wrong percent")
    + same("30^\\circ", "30^\\circ", "30", "30^{\\circ}", "30 degrees", note="degrees")
    + same("90^\\circ", "90^\\circ", "90", note="degrees")
    + differ("30^\\circ", "60^\\circ", "\\frac{\\pi}{6}", note="wrong degrees")
    + same("5 \\text{ cm}", "5", "5 cm", "5\\text{cm}", "5 \\text{ cm}", note="units")
    + same("12", "12 \\text{ m}^2", "12 meters", "$12$ dollars", note="units on the response")
    + same("1000.99", "\\$1,000.99", "1,000.99", note="currency")
    + differ("5 \\text{ cm}", "6 cm", "50 mm", note="units are stripped, not converted")
)

SETS_INTERVALS = (
    same("\\{1,2\\}", "\\{1,2\\}", "\\{2,1\\}", "\\{1, 2\\}", note="sets")
    + same("\\{1,2,3\\}", "\\{3,2,1\\}", note="sets")
    + differ("\\{1,2\\}", "\\{1,3\\}", "\\{1,2,3\\}", note="wrong sets")
    + same("(1,2]", "(1,2]", "(1, 2]", note="intervals")
    + same("[0,1)", "[0,1)", note="intervals")
    + same("(-\\infty, 3)", "(-\\infty,3)", "(-\\infty, 3)", note="infinite interval")
    + differ("[0,1)", "[0,1]", "(0,1)", "[0,9)", note="wrong intervals")
    + same("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)", note="tuples")
    + differ("(3, \\frac{\\pi}{2})", "(3, \\pi)", note="wrong tuple")
)

PLAIN_TEXT_NUMBERS = (
    same("7", "seven", "Seven", "7", "The answer is 7.", "There are 7 cats.", note="plain text numbers")
    + same("20", "twenty", note="plain text numbers")
    + same("3", "three", "x = 3", "3.", note="plain text numbers")
    + differ("7", "eight", "seventy", note="wrong plain text numbers")
    + same("x=3", "3", "x=3", note="equation gold")
)

_OPTS = ("10", "12", "14", "16")
MULTIPLE_CHOICE = (
    same("B", "B", "(B)", "B.", "B. 12", "B) 12", "option B", "Option (B)", "The answer is B", "b", "[B]", note="letters")
    + same("(C)", "C", "(C)", note="parenthesised gold letter")
    + differ("B", "C", "(A)", "A. 10", "option D", "B or C", "AB", "Bob", note="wrong letters")
    + [Case(ans("12"), "B", 1.0, 1.0, options=_OPTS, note="option text for a letter gold"),
       Case(ans("14"), "B", 0.0, 1.0, options=_OPTS, note="wrong option text"),
       Case(ans("B"), "12", 1.0, 1.0, options=_OPTS, note="letter for an option-text gold"),
       Case(ans("C"), "12", 0.0, 1.0, options=_OPTS, note="wrong letter for an option-text gold"),
       Case(ans("12"), "B", 0.0, 1.0, note="number for a letter gold without options")]
)

FORMAT = [
    Case("<think>ok</think><answer>4</answer>", "4", 1.0, 1.0, note="format ok"),
    Case("<think>ok</think>\n\n<answer>4</answer>\n", "4", 1.0, 1.0, note="whitespace between tags"),
    Case("<answer>4</answer>", "4", 1.0, 0.0, note="no think"),
    Case("<think>ok</think>4", "4", 0.0, 0.0, note="no answer tag"),
    Case("4", "4", 0.0, 0.0, note="bare answer"),
    Case("", "4", 0.0, 0.0, note="empty response"),
    Case("<answer>4</answer><think>ok</think>", "4", 1.0, 0.0, note="answer before think"),
    Case("<think>a</think><think>b</think><answer>4</answer>", "4", 1.0, 0.0, note="two thinks"),
    Case("<think>a</think><answer>4</answer><answer>5</answer>", "4", 1.0, 0.0, note="two answers: the first counts"),
    Case("<think>a</think><answer>5</answer><answer>4</answer>", "4", 0.0, 0.0, note="two answers: the first counts"),
    Case("<think></think><answer>4</answer>", "4", 1.0, 0.0, note="empty think"),
    Case("<think>a</think><answer></answer>", "4", 0.0, 0.0, note="empty answer"),
    Case("Sure! <think>a</think><answer>4</answer>", "4", 1.0, 0.0, note="text before think"),
    Case("<think>a</think><answer>4</answer> Done.", "4", 1.0, 0.0, note="text after answer"),
    Case("<think>a<answer>4</answer></think>", "4", 1.0, 0.0, note="answer inside think"),
    Case("<think>a</think><answer>4", "4", 0.0, 0.0, note="unclosed answer"),
    Case("<THINK>a</THINK><ANSWER>4</ANSWER>", "4", 0.0, 0.0, note="tags are case-sensitive"),
]

PRETRAINED = [
    Case("The sum is \\boxed{7}.", "7", 1.0, 0.0, mode="pretrained", note="boxed"),
    Case("First \\boxed{3}, no wait, \\boxed{7}", "7", 1.0, 0.0, mode="pretrained", note="last boxed counts"),
    Case("First \\boxed{7}, no wait, \\boxed{3}", "7", 0.0, 0.0, mode="pretrained", note="last boxed counts"),
    Case("\\boxed{\\frac{1}{2}}", "0.5", 1.0, 0.0, mode="pretrained", note="nested braces"),
    Case("\\boxed{\\{1,2\\}}", "\\{1,2\\}", 1.0, 0.0, mode="pretrained", note="escaped braces"),
    Case("\\boxed{x^{2}+1}", "x^2+1", 1.0, 0.0, mode="pretrained", note="nested braces"),
    Case("no box here: 7", "7", 0.0, 0.0, mode="pretrained", note="no boxed"),
    Case("\\boxed{7} and \\boxed{8", "7", 1.0, 0.0, mode="pretrained", note="unbalanced last box is skipped"),
    Case("<answer>7</answer>", "7", 0.0, 0.0, mode="pretrained", note="answer tag is not a box"),
    Case("\\boxed{B}", "B", 1.0, 0.0, mode="pretrained", note="boxed letter"),
    Case(f"<think>{LONG_THINK}</think><answer>\\boxed{{7}}</answer>", "7", 1.0, 1.0, mode="pretrained", note="pretrain format"),
    Case("<think>short</think><answer>\\boxed{7}</answer>", "7", 1.0, 0.0, mode="pretrained", note="think under 300 chars"),
    Case(f"<think>{LONG_THINK}</think>\\boxed{{7}}", "7", 1.0, 0.0, mode="pretrained", note="no answer tag"),
    Case(f"<think>{LONG_THINK}</think><answer>\\boxed{{8}}</answer>", "7", 0.0, 1.0, mode="pretrained", note="wrong, well formed"),
    Case(f"<think>{LONG_THINK}</think><answer>7</answer>", "7", 0.0, 0.0, mode="pretrained", note="answer tag without a box"),
    Case(f"<think>{LONG_THINK}</think><answer>\\boxed{{B}}</answer>", "B", 1.0, 1.0, mode="pretrained", note="boxed letter in the tag"),
]

# Held-out cases the small world found: scientific notation, and a box inside the answer tag.
HELD_OUT = (
    same("300", "3e2", "3E2", "3.0e2", "+3e+2", note="scientific notation")
    + same("0.0015", "1.5e-3", note="scientific notation")
    + differ("300", "3e3", "3e1", note="wrong scientific notation")
    + same("B", "\\boxed{B}", "\\boxed{(B)}", "\\boxed{B. 12}", note="boxed letter in the answer tag")
    + differ("B", "\\boxed{C}", "\\boxed{A. 10}", note="wrong boxed letter in the answer tag")
    + same("12", "\\boxed{12}", note="boxed number in the answer tag")
)

GOLD_ERRORS = [
    Case(ans("4"), "", 0.0, 0.0, status=GOLD_UNPARSEABLE, note="empty gold"),
    Case(ans("4"), "   ", 0.0, 0.0, status=GOLD_UNPARSEABLE, note="blank gold"),
    Case(ans("\\frac{"), "\\frac{", 0.0, 0.0, status=GOLD_UNPARSEABLE, note="unparseable gold never rewards 1"),
    Case(ans("("), "(", 0.0, 0.0, status=GOLD_UNPARSEABLE, note="unparseable gold"),
    Case(ans(""), "\\text{}", 0.0, 0.0, status=GOLD_UNPARSEABLE, note="empty text gold"),
    Case("\\boxed{4}", "", 0.0, 0.0, mode="pretrained", status=GOLD_UNPARSEABLE, note="empty gold, pretrained"),
]

# huggingface/Math-Verify tests/test_all.py (test_number_extraction, test_simple_fraction_notation,
# test_sets_handling, test_latex_notation, test_percent_notation): (gold, prediction, expected).
MATH_VERIFY = [
    Case(ans(pred), gold, float(exp), 1.0, note="math-verify published")
    for gold, pred, exp in [
        ("-5", "-5", 1), ("7425000", "7,425,000", 1), ("1000", "1 000", 1), ("1000", "1000.0", 1),
        ("1000.0", "1,000.0", 1), ("1000.99", "1000,99", 1), ("1,22", "1.22", 1), ("0.4", ".4", 1),
        ("1000.99", "1,000.99", 1), ("1000.99", "$1,000.99", 1), ("1000.99", "1,000.99€", 1),
        ("1000.99", "the number is not 10 which is 1,000.99€", 1), ("0,111", "0.111", 1),
        ("10/9", "\\frac{10}{9}", 1), ("-10/9", "-\\frac{10}{9}", 1),
        ("[0,1)", "$[0,1)$", 1), ("[0,9)", "$[0,1)$", 0), ("(0,9)", "$[0,9)$", 0), ("1", "$-[0,1)$", 0),
        ("9", "Answer \\[ 9 \\]", 1), ("9", "Answer $ 9 $", 1), ("9", "Answer $$ 9 $$", 1),
        ("9", "Answer \\( 9 \\)", 1), ("10", "Answer \\( (9+1) \\)", 1), ("9", "Answer \\[ \n 9 \n \\]", 1),
        ("1/3", "$\\frac13 $", 1), ("1", "$\\frac3{3} $", 1), ("\\sqrt{3}", "$\\sqrt3 $", 1),
        ("1/3", "$\\cfrac{1}{3} $", 1), ("1/3", "$\\dfrac{1}{3} $", 1), ("1/3", "$\\tfrac{1}{3} $", 1),
        ("1/3", "$ 1/3 $", 1), ("1/3", "$\\left( \\frac{1}{3} \\right)$", 1), ("1/3", "$\\boxed{\\frac{1}{3}}$", 1),
        ("1/3", "$\\frac{1}{3} \\text{meters}$", 1), ("1/3", "$k = \\frac{1}{3}$", 1),
        ("28\\%", "28 percent", 1), ("28\\%", "28 pct", 1), ("28\\%", "28 %", 1), ("28\\%", "$28$ %", 1),
        ("28\\%", "$28$ percent", 1), ("28\\%", "28", 1), ("0.28", "28", 0), ("28/100", "28", 0),
        ("28", "28/100", 0), ("\\frac{28}{100}", "28", 0),
    ]
]

CORPUS: list[Case] = (
    INTEGERS + DECIMALS + FRACTIONS + LATEX + PERCENT_DEGREE_UNITS + SETS_INTERVALS + PLAIN_TEXT_NUMBERS
    + MULTIPLE_CHOICE + FORMAT + PRETRAINED + HELD_OUT + GOLD_ERRORS + MATH_VERIFY
)
