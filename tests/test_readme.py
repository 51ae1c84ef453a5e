import re

from conftest import ROOT


def _code_lines(text: str) -> list[str]:
    return [line.strip() for block in re.findall(r"```\n(.*?)```", text, re.S) for line in block.splitlines()]


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = _code_lines(quick)
    assert commands[0] == "pip install -e . && loadgen run"
    test_command = commands[1]
    assert "pytest" in test_command
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-1] == test_command


def test_readme_documents_every_command():
    readme = (ROOT / "README.md").read_text()
    for command in ("loadgen run --backend",
                    "loadgen run", "loadgen sweep", "loadgen scenarios", "loadgen report", "loadgen compare", "loadgen locust", "loadgen plan",
                    "python -m training_bench micro", "python -m training_bench pretrain|finetune|sweep",
                    "loadgen make-model", "loadgen engine-wheels",
                    "loadgen serve-sim", "loadgen catalog"):
        headings = [line for line in readme.splitlines() if line.startswith(("### ", "## "))]
        assert any(f"`{command}`" in h or f"`{command} " in h for h in headings), command
