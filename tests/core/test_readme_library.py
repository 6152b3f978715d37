"""The README's library quick start runs with the library alone and prints what the README says it prints."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^(original|alpha = \S+) +(\d\.\d{3}) +(\d\.\d{3})$", flags=re.M)
EXPECTED = ("the original model scores above 0.95 on both", "at alpha = 1 class 3 falls below 0.05",
            "stays above 0.95")


def _library_section() -> str:
    text = README.read_text()
    return text[text.index("## The library"): text.index("## The paper")]


def test_the_library_quick_start_prints_the_ranges_the_readme_states(capsys):
    section = _library_section()
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    assert "amnesiac_paper" not in code  # the library's quick start needs the library alone
    exec(compile(code, str(README), "exec"), {})  # noqa: S102 - the README's own code
    out = capsys.readouterr().out
    table = {name: (float(f), float(r)) for name, f, r in ROW.findall(out)}
    assert set(table) == {"original", "alpha = 0.5", "alpha = 1"}, out
    printed = {name: (float(f), float(r)) for name, f, r in ROW.findall(re.findall(r"```text\n(.*?)```", section,
                                                                                  flags=re.S)[0])}
    assert printed.keys() == table.keys()  # the README shows the rows the code prints
    assert all(phrase in " ".join(section.split()) for phrase in EXPECTED)
    (of, orr), (f1, r1) = table["original"], table["alpha = 1"]
    assert of > 0.95 and orr > 0.95, out
    assert f1 < 0.05 and r1 > 0.95, out
