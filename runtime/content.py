"""What an answer says beyond its words: a refusal or a placeholder, found with precision first.

- ``is_refusal(answer)`` looks at the opening of one answer (the one being trained), anchored at its start.
- ``is_placeholder(answer)`` is true for "<nooutput>", "N/A" and the like as a whole answer.
Personal data is `runtime.pii`.
"""

from __future__ import annotations

import re

from runtime.labels import normalize_label

# --- refusals ----------------------------------------------------------------------------------------

_CANNOT = (r"(?:can(?:'|’|no)?t|cannot|am\s+unable|'m\s+unable|am\s+not\s+able|'m\s+not\s+able|won't|will\s+not"
           r"|must\s+(?:decline|refuse)|refuse|(?:do\s+not|don't|don’t)\s+(?:have\s+(?:the\s+ability|access|enough)"
           r"|feel\s+comfortable|think\s+(?:i\s+should|it(?:'s|\s+is)\s+appropriate))"
           r"|am\s+not\s+(?:able|programmed|designed|comfortable|allowed)|'m\s+not\s+(?:able|programmed|designed"
           r"|comfortable|allowed|sure\s+(?:i|what)))")
_NOT_REFUSING = (r"(?!\s+(?:help\s+but|stress|emphasi[sz]e|overstate|wait|believe|imagine|thank|agree|recommend\s+enough"
                 r"|say\s+for\s+sure|be\s+sure|tell\s+(?:for\s+sure|if|whether)|understand|express|agree))")
_REFUSAL = re.compile(
    rf"""^\W*(?:
      (?:i(?:'m|’m|\s+am)\s+)?(?:so\s+|very\s+|really\s+)?(?:sorry|afraid)\b[^.!?\n]{{0,100}}?
          \b(?:(?:i|we)\s+(?:\w+\s+)?{_CANNOT}{_NOT_REFUSING}|(?:this|that|the\s+(?:task|instruction|request|question))\s+
          (?:\w+\s+)?(?:involves|requires|is\s+(?:not\s+possible|impossible|beyond|outside))|it(?:'s|\s+is)\s+not\s+
          (?:possible|appropriate))
     |i\s+apologi[sz]e\b[^.!?\n]{{0,100}}?\b(?:i|we)\s+(?:\w+\s+)?{_CANNOT}
     |(?:unfortunately|regrettably),?\s+(?:i|we|as\s+an?\s+ai)\b[^.!?\n]{{0,60}}?{_CANNOT}
     |as\s+an?\s+(?:ai|artificial\s+intelligence|(?:large\s+)?language\s+model|llm|gpt(?:-\d)?\s+model
         |text-based\s+(?:ai|model|assistant)|virtual\s+assistant|chatbot)\b
     |i\s+{_CANNOT}\b{_NOT_REFUSING}
     |(?:this|the)\s+(?:task|instruction|request|question)\s+(?:cannot|can(?:'|no)t|is\s+(?:not\s+possible|impossible
         |beyond|outside)|requires\s+(?:visual|physical|access|an?\s+(?:image|picture|video|audio|graph))
         |involves\s+(?:visual|physical|an?\s+(?:image|picture|video|audio)))
     |(?:that(?:'s|\s+is)\s+not\s+something\s+i)
     |(?:it(?:'s|\s+is)\s+not\s+(?:possible|appropriate)\s+for\s+me)
    )""", re.IGNORECASE | re.VERBOSE)
REFUSAL_WINDOW = 400  # refusals open an answer: only its first characters are read


def is_refusal(answer: str) -> bool:
    """Whether an answer opens by refusing ("I'm sorry, but I can't...", "As an AI...", "Sorry, the task
    involves visual output..."), anchored at its start: "I can't help but smile" and "As an air traffic
    controller" are not refusals, nor is "I'm sorry to hear that you can't sleep"."""
    return bool(answer) and _REFUSAL.search(answer[:REFUSAL_WINDOW]) is not None


# --- placeholders ------------------------------------------------------------------------------------

PLACEHOLDERS = frozenset({
    "<nooutput>", "<no output>", "nooutput", "no output", "<noinput>", "<no input>", "[no output]", "(no output)",
    "n/a", "n.a.", "na", "none", "null", "nil", "nan", "undefined", "tbd", "todo", "<empty>", "empty", "...", "…",
    "-", "--", "?", "<blank>", "blank", "no answer", "no response", "<answer>", "[answer]", "your answer here",
})


def is_placeholder(answer: str) -> bool:
    """A whole answer that stands for no answer ("<nooutput>", "N/A", "None", "...")."""
    if len(answer) > 40:
        return False
    v = normalize_label(answer)
    return v in PLACEHOLDERS or v.rstrip(".") in PLACEHOLDERS
