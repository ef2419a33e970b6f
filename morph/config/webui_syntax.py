"""Prompt syntax of other tools (A1111's web UI, ComfyUI) that morph does not read: the text encoder would take it as
words and render something else without a word said, so a prompt holding it is refused with what morph takes instead."""

import re

from ..errors import MorphError

_NUMBER = r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)\s*"
_NETWORK = re.compile(r"<(lora|lyco|locon|hypernet):\s*([^:<>]+?)\s*(?::(" + _NUMBER + r"))?(?::[^<>]*)?>", re.I)
_EMPHASIS = re.compile(r"\([^():]+:" + _NUMBER + r"\)")
_SCHEDULED = re.compile(r"\[[^\[\]:]*:[^\[\]:]*:" + _NUMBER + r"\]")


def refuse_webui_syntax(text: str, where: str) -> None:
    """Raise one line naming `where` if `text` holds `<lora:name:w>`, `(words:1.2)` or `[from:to:when]`."""
    if found := _NETWORK.search(text):
        kind, name, weight = found[1].lower(), found[2], (found[3] or "1").strip()
        if kind == "hypernet":
            raise MorphError(f"{where}: {found[0]!r} names a hypernetwork, which morph does not load; remove it "
                             "(LoRAs go under loras:)")
        raise MorphError(f"{where}: {found[0]!r} is A1111's LoRA syntax, which morph does not read in a prompt; "
                         f"declare the file under loras: [{{path: {name}.safetensors, name: {name}, scale: {weight}}}] "
                         f"and walk its strength with a keyframe's loras: {{{name}: …}}")
    if found := _EMPHASIS.search(text):
        # define: arithmetic weights the prompts a job walks through, not its negatives or an edit's base sentence
        weighable = "negative_prompt" not in where and where != "base"
        raise MorphError(f"{where}: {found[0]!r} is A1111's and ComfyUI's word emphasis, which morph does not read "
                         "(the text encoder would see the brackets and the number as words); write the words plainly"
                         + (", or weight whole prompts with define: and arithmetic (a + 0.3 * b)" if weighable else ""))
    if found := _SCHEDULED.search(text):
        raise MorphError(f"{where}: {found[0]!r} is A1111's prompt editing, which morph does not read; to change "
                         "one prompt into another, make them two keyframes of prompts: (or walk one word with edit:)")
