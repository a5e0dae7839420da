import pytest

from howsure.errors import TaskError
from howsure.core.task import Example, Task, load_task

INSTRUCTION = "Is this positive or negative?\n\n{text}"


def test_bundled_task_loads_and_renders():
    task = load_task("sentiment")
    assert task.label_names == ["positive", "negative"]
    assert "a fine film" in task.render("a fine film")


def test_toml_round_trip(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(
        'name = "yn"\ninstruction = "Q: {text} {{json}}"\nsystem = "Be brief."\n'
        '[labels]\nyes = ["yes", "y"]\nno = ["no"]\n'
        '[[examples]]\ntext = "is water wet?"\nlabel = "yes"\n'
    )
    task = load_task(path)
    assert task.labels == {"yes": ("yes", "y"), "no": ("no",)}
    assert task.render("hi") == "Q: hi {json}"
    messages = task.messages("hi")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == "yes"
    assert Task.from_dict(task.to_dict()) == task


def test_fingerprint_tracks_prompt_changes():
    a = Task(instruction=INSTRUCTION, labels={"positive": ["positive"], "negative": ["negative"]})
    b = Task(instruction=INSTRUCTION + " ", labels={"positive": ["positive"], "negative": ["negative"]})
    c = Task(instruction=INSTRUCTION, labels={"positive": ["positive"], "negative": ["negative"]},
             variant_rule="exact")
    assert len({a.fingerprint(), b.fingerprint(), c.fingerprint()}) == 3


def test_plain_prompt_has_examples_and_answer_cue():
    task = Task(instruction=INSTRUCTION, labels={"pos": ["positive"], "neg": ["negative"]},
                examples=[Example("great", "pos")])
    prompt = task.plain_prompt("awful")
    assert prompt.endswith("awful\nAnswer:")
    assert "great\nAnswer: positive" in prompt


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(instruction="Classify: {txt}"), r"unknown placeholder \{txt\}"),
        (dict(instruction="Classify this."), r"exactly once, found it 0 times"),
        (dict(instruction="{text} and {text}"), r"exactly once, found it 2 times"),
        (dict(labels={"pos": ["good"], "POS": ["fine"]}), r"duplicate label 'POS'"),
        (dict(labels={"pos": ["good"], "neg": ["Good"]}), r"verbalizer 'Good' is shared by labels 'pos' and 'neg'"),
        (dict(labels={"pos": ["good"]}), r"at least 2 labels"),
        (dict(labels={"pos": [], "neg": ["bad"]}), r"label 'pos' has no verbalizers"),
        (dict(labels={"pos": ["  "], "neg": ["bad"]}), r"empty verbalizer"),
        (dict(variant_rule="fuzzy"), r"variant_rule 'fuzzy' is not one of variants, exact"),
        (dict(examples=[{"text": "x", "label": "maybe"}]), r"example label 'maybe' is not one of"),
    ],
)
def test_invalid_tasks_name_the_bad_value(kwargs, match):
    base = dict(instruction=INSTRUCTION, labels={"pos": ["good"], "neg": ["bad"]})
    base.update(kwargs)
    with pytest.raises(TaskError, match=match):
        Task(**base)


@pytest.mark.parametrize(
    "content, match",
    [
        ("instruction = ", "not valid TOML"),
        ('instruction = "{text}"\ncolour = "red"\n[labels]\na=["x"]\nb=["y"]', "unknown task field 'colour'"),
        ('[labels]\na=["x"]\nb=["y"]', "missing the required field 'instruction'"),
        ('instruction = "{text}"\nlabels = "a"', "must be a table"),
    ],
)
def test_bad_task_files(tmp_path, content, match):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(TaskError, match=match):
        load_task(path)


def test_unknown_task_source():
    with pytest.raises(TaskError, match="neither a TOML file nor a bundled task"):
        load_task("no-such-task.toml")
