"""The README's code example runs and its asserted outcome holds."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "README.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    book = namespace["book"]
    assert (book.last_filled, book.last_resting, book.last_cancelled) == (5, 0, 3)


def test_ci_runs_the_readme_test_command():
    readme = README.read_text(encoding="utf-8")
    ci = (README.parent / ".ci" / "run").read_text(encoding="utf-8")
    test_command = re.findall(r"```sh\n(.*?)\n```", readme, re.DOTALL)[1]
    assert "pytest" in test_command
    assert test_command in ci
