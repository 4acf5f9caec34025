"""The troubleshooting page (docs/troubleshooting.md) quotes messages the code really raises."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _section() -> str:
    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    assert text.startswith("# Troubleshooting")
    return text


def _quoted_messages() -> list[str]:
    """The backticked messages of the first column, without the exception name."""
    out = []
    for line in _section().splitlines():
        if not line.startswith("| `"):
            continue
        first = line.split(" | ")[0]
        for quoted in re.findall(r"`([^`]+)`", first):
            out.append(re.sub(r"^\w+(Error|Warning): ", "", quoted))
    return out


# messages Python itself raises for a call that does not fit the signature
PYTHON_OWN = ("missing 1 required keyword-only argument", "takes 2 positional arguments but")


def test_every_quoted_message_fragment_is_in_the_source():
    source = "\n".join(
        p.read_text() for d in ("jaxprune", "experiments") for p in (ROOT / d).rglob("*.py")
    )
    messages = _quoted_messages()
    assert len(messages) >= 40
    missing = []
    for message in messages:
        # literal runs of words; "…", quotes, brackets and one-letter placeholders (N, w) split
        # them; a leading argument name or "is" may come from a placeholder ({name}: , is {kind})
        for chunk in re.split(r"…|\b[A-Z]\b|\bw\b|['\"\[\](){}/]", message):
            chunk = re.sub(r"^(\w+: |is )", "", chunk.strip(" ,:."))
            if len(chunk) >= 12 and chunk not in source and not chunk.startswith(PYTHON_OWN):
                missing.append((message, chunk))
    assert not missing, missing
