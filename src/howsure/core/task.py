"""Task: what to ask the model and which answers count as which label.

A task is an instruction template with one ``{text}`` placeholder, an optional system prompt,
optional few-shot examples, and labels, each with one or more verbalizers (the words the model
may answer with). It loads from TOML::

    name = "sentiment"
    instruction = "Is this review positive or negative? Answer with one word.\\n\\n{text}"
    variant_rule = "variants"      # or "exact"

    [labels]
    positive = ["positive"]
    negative = ["negative"]

    [[examples]]
    text = "A gorgeous, witty film."
    label = "positive"

``variant_rule`` says how a label's probability is read from the next-token distribution:

* ``variants`` sums every vocabulary token whose decoded, stripped, case-folded string equals one
  of the label's verbalizers ("yes", "Yes", " YES" ...), as the public Classification-with-
  Confidence write-up does;
* ``exact`` scores only the verbalizer exactly as it would follow the prompt, as
  lm-evaluation-harness scores a continuation.
"""

from __future__ import annotations

import hashlib
import json
import string
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from howsure.errors import TaskError

VARIANT_RULES = ("variants", "exact")
BUNDLED_TASKS = ("sentiment",)


@dataclass(frozen=True)
class Example:
    """One few-shot demonstration: a text and the label it should get."""

    text: str
    label: str


@dataclass(frozen=True)
class Task:
    """A classification prompt and its labels. Construct it directly or with `load_task`.

    ``labels`` maps each label name to its verbalizers, in the order the labels are reported.
    """

    instruction: str
    labels: dict[str, tuple[str, ...]]
    name: str = "task"
    system: str | None = None
    examples: tuple[Example, ...] = ()
    # "variants" sums all case/space variants of a verbalizer; "exact" only the exact continuation.
    variant_rule: str = "variants"
    # Used only when the tokenizer has no chat template: the prompt ends with this cue.
    answer_prefix: str = "Answer:"
    description: str = ""

    def __post_init__(self) -> None:
        labels = {str(k): tuple(v) if not isinstance(v, str) else (v,) for k, v in self.labels.items()}
        object.__setattr__(self, "labels", labels)
        object.__setattr__(
            self,
            "examples",
            tuple(e if isinstance(e, Example) else Example(**e) for e in self.examples),
        )
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise `TaskError` naming the first bad value found."""
        fields = [f for _, f, _, _ in string.Formatter().parse(self.instruction) if f is not None]
        unknown = [f for f in fields if f != "text"]
        if unknown:
            raise TaskError(
                f"instruction has unknown placeholder {{{unknown[0]}}}; the only placeholder "
                "allowed is {text} (write {{ and }} for literal braces)"
            )
        if fields.count("text") != 1:
            raise TaskError(
                f"instruction must contain the placeholder {{text}} exactly once, found it "
                f"{fields.count('text')} times in {self.instruction!r}"
            )
        if len(self.labels) < 2:
            raise TaskError(f"a task needs at least 2 labels, got {list(self.labels)}")
        if self.variant_rule not in VARIANT_RULES:
            raise TaskError(
                f"variant_rule {self.variant_rule!r} is not one of {', '.join(VARIANT_RULES)}"
            )
        seen_labels: dict[str, str] = {}
        owner: dict[str, str] = {}
        for label, verbalizers in self.labels.items():
            if not label.strip():
                raise TaskError("a label name is empty")
            key = label.strip().casefold()
            if key in seen_labels:
                raise TaskError(
                    f"duplicate label {label!r} (same as {seen_labels[key]!r} once case is ignored)"
                )
            seen_labels[key] = label
            if not verbalizers:
                raise TaskError(f"label {label!r} has no verbalizers; give at least one word")
            for verbalizer in verbalizers:
                if not isinstance(verbalizer, str) or not verbalizer.strip():
                    raise TaskError(f"label {label!r} has an empty verbalizer {verbalizer!r}")
                vkey = normalize_answer(verbalizer)
                if vkey in owner and owner[vkey] != label:
                    raise TaskError(
                        f"verbalizer {verbalizer!r} is shared by labels {owner[vkey]!r} and "
                        f"{label!r}; each answer word must belong to one label"
                    )
                owner[vkey] = label
        for example in self.examples:
            if example.label not in self.labels:
                raise TaskError(
                    f"few-shot example label {example.label!r} is not one of the task's labels "
                    f"{list(self.labels)}"
                )

    # ------------------------------------------------------------------ rendering
    @property
    def label_names(self) -> list[str]:
        return list(self.labels)

    def render(self, text: str) -> str:
        """The user message for one text (instruction with ``{text}`` filled)."""
        return self.instruction.replace("{{", "\0").replace("}}", "\1").replace(
            "{text}", text
        ).replace("\0", "{").replace("\1", "}")

    def messages(self, text: str) -> list[dict[str, str]]:
        """Chat messages: system, few-shot turns (answered with the label's first verbalizer),
        then the question for ``text``."""
        out: list[dict[str, str]] = []
        if self.system:
            out.append({"role": "system", "content": self.system})
        for example in self.examples:
            out.append({"role": "user", "content": self.render(example.text)})
            out.append({"role": "assistant", "content": self.labels[example.label][0]})
        out.append({"role": "user", "content": self.render(text)})
        return out

    def plain_prompt(self, text: str) -> str:
        """The prompt for models without a chat template."""
        parts = [self.system] if self.system else []
        for example in self.examples:
            parts.append(
                f"{self.render(example.text)}\n{self.answer_prefix} {self.labels[example.label][0]}"
            )
        parts.append(f"{self.render(text)}\n{self.answer_prefix}")
        return "\n\n".join(parts)

    # ------------------------------------------------------------------ identity and I/O
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = {k: list(v) for k, v in self.labels.items()}
        data["examples"] = [asdict(e) for e in self.examples]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Task":
        allowed = {
            "instruction", "labels", "name", "system", "examples", "variant_rule",
            "answer_prefix", "description",
        }
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise TaskError(f"unknown task field {unknown[0]!r}; allowed fields: {sorted(allowed)}")
        for required in ("instruction", "labels"):
            if required not in data:
                raise TaskError(f"task is missing the required field {required!r}")
        if not isinstance(data["labels"], dict):
            raise TaskError(
                f"task field 'labels' must be a table of label = [verbalizers], got {data['labels']!r}"
            )
        return cls(**data)

    def fingerprint(self) -> str:
        """Stable short hash of everything that changes the prompt or the label reading."""
        blob = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def normalize_answer(text: str) -> str:
    """How answer strings are compared under the ``variants`` rule: stripped and case-folded."""
    return text.strip().casefold()


def load_task(source: str | Path | dict | Task) -> Task:
    """Load a task from a TOML file, a bundled task name (``sentiment``), a dict or a Task."""
    if isinstance(source, Task):
        return source
    if isinstance(source, dict):
        return Task.from_dict(source)
    path = Path(source)
    if not path.exists():
        if str(source) in BUNDLED_TASKS:
            text = resources.files("howsure.tasks").joinpath(f"{source}.toml").read_text("utf-8")
            return _parse_toml(text, f"bundled task {source!r}")
        raise TaskError(
            f"task {str(source)!r} is neither a TOML file nor a bundled task "
            f"({', '.join(BUNDLED_TASKS)})"
        )
    return _parse_toml(path.read_text("utf-8"), str(path))


def _parse_toml(text: str, where: str) -> Task:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TaskError(f"{where} is not valid TOML: {exc}") from exc
    try:
        return Task.from_dict(data)
    except TaskError as exc:
        raise TaskError(f"{where}: {exc}") from exc
    except TypeError as exc:  # wrong value types inside examples etc.
        raise TaskError(f"{where}: {exc}") from exc
