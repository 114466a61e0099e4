"""The README's promises that code can check: its first command segments the shipped photo, its second is exactly
what CI runs, and every picture and file it links exists."""

import re
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)


def test_first_command_makes_a_virtual_environment_installs_pinned_and_segments_the_example_photo():
    first = BASH_BLOCKS[0].strip()
    assert first.startswith("python -m venv .venv && . .venv/bin/activate && ")
    assert "&& pip install torch==2.13.0 && pip install torch==2.13.0 -e " in first
    example = re.search(r"gss-segment (\S+)", first).group(1)
    assert (REPO / example).is_file()


def test_second_command_is_the_one_ci_runs():
    ci_command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert BASH_BLOCKS[1].strip() == ci_command


def test_every_linked_file_exists():
    links = re.findall(r'(?:src="|\]\()([^")#]+)', README)
    local = [link for link in links if not link.startswith("http")]
    assert local
    missing = [link for link in local if not (REPO / link).exists()]
    assert not missing


def test_every_test_the_reliability_table_names_exists():
    section = README[README.index("## Reliability") : README.index("## Results on CamVid")]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "::" in line]
    assert len(rows) >= 20
    named = []
    for row in rows:
        test_file = None
        for file_name, test_name in re.findall(r"`(test_\w+\.py)?::(test_\w+)`", row.split("|")[-2]):
            test_file = file_name or test_file
            named.append((test_file, test_name))
    missing = [(file, name) for file, name in named if f"def {name}(" not in (REPO / "tests" / file).read_text()]
    assert not missing


def test_the_released_models_table_is_the_converters():
    from gss_hf.convert_official_gss import DATASET_NAMES, RELEASED_MODELS

    section = README[README.index("## The paper's models") : README.index("## The token loss never forms")]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| GSS-")]
    table = {row[-1].strip(" `"): (row[1].strip(), float(row[3]), row[4].strip(" `")) for row in rows}
    expected = {
        release.preset: (DATASET_NAMES[release.dataset], release.reported_miou, release.official_config)
        for release in RELEASED_MODELS
    }
    assert table == expected
