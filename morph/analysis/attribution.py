"""Why did it jump? A step of a walk attributed to the rows of the prompt tensor that moved: BOS, each word, EOS,
the padding after it and SDXL's pooled row.

For the step from frame i to frame i + 1, frame i is rendered again with only one group's rows moved to
frame i + 1's values (the seed, latent and everything else as frame i's), one render per group, and its
change from frame i is measured with the walk's metric. A group's share is that change over the whole
step's change; the remainder, 1 minus the shares, is what the groups do only together (it may be
negative). CLIP's attention is causal: rows before the first changed word are the same at both frames,
and their groups get exactly 0 without a render.
"""

from dataclasses import dataclass

import torch
from tqdm import tqdm

from ..errors import MorphError
from ..prompts.encode import word_slots
from ..render.shard import Shard
from ..render.store import frame_identity
from .samples import SampleRenderer
from .storm import downscale
from .storm_map import distance_function

SHOWN = 0.01  # groups with a smaller share are left out of the one-line summary (never out of the manifest)


@dataclass
class Group:
    label: str  # "BOS", "'red'", "'circle'→'square'", "slots 3-7", "EOS", "padding", "pooled"
    rows: list[int]  # the rows of the conditioning [L(+1), D] it moves, in order


def row_groups(words_a: list[tuple[str, list[int]]], eos_a: int, words_b: list[tuple[str, list[int]]], eos_b: int,
               slots: int, pooled: bool = False) -> list[Group]:
    """The groups of rows of a step between two prompts, from each prompt's words with their token slots and its EOS
    slot (encode.word_slots): BOS; the words, one group each while the two tokenizations agree slot for slot; where
    they stop agreeing, one group of the slots up to the later EOS, named by its range; else EOS; the padding after
    it; SDXL's pooled row (row `slots`)."""
    groups, aligned = [Group("BOS", [0])], 0
    for (a, rows_a), (b, rows_b) in zip(words_a, words_b):
        if rows_a != rows_b:
            break
        groups.append(Group(f"'{a}'" if a == b else f"'{a}'→'{b}'", rows_a))
        aligned += 1
    end = max(eos_a, eos_b)
    if aligned < max(len(words_a), len(words_b)) or eos_a != eos_b:
        first = groups[-1].rows[-1] + 1
        groups.append(Group(f"slots {first}-{end}", list(range(first, end + 1))))
    else:
        groups.append(Group("EOS", [end]))
    if end + 1 < slots:
        groups.append(Group("padding", list(range(end + 1, slots))))
    if pooled:
        groups.append(Group("pooled", [slots]))
    return groups


def shares(changes: list[float], step: float) -> tuple[list[float], float]:
    """Each group's share of a step's change, and the remainder: 1 minus their sum."""
    parts = [change / step for change in changes]
    return parts, 1.0 - sum(parts)


def summary_line(record: dict) -> str:
    """98→99: 'triangle' 0.61, padding 0.22, remainder 0.05"""
    shown = sorted((g for g in record["groups"] if abs(g["share"]) >= SHOWN), key=lambda g: -abs(g["share"]))
    parts = [f"{g['label']} {g['share']:.2f}" for g in shown] + [f"remainder {record['remainder']:.2f}"]
    return f"{record['step']}→{record['step'] + 1}: " + ", ".join(parts)


def biggest_steps(distances: list[float], top: int, storms: list[tuple[int, int]] | None = None) -> list[int]:
    """The `top` steps of most change, biggest first; with `storms`, only each storm zone's biggest step."""
    candidates = range(len(distances)) if storms is None else \
        [max(range(a, b + 1), key=lambda i: distances[i]) for a, b in storms]
    return sorted(candidates, key=lambda i: -distances[i])[:top]


def _sentence(config, segment_end: int) -> str:
    """The text of keyframe k whose words name the groups: its prompt, or its heaviest term for an expression; for a
    one-word edit, the base sentence with the keyframe's value in the word's place."""
    where, source = config.prompt_sources()[segment_end]
    terms = config.prompt_terms(source, where)
    text = max(terms, key=lambda t: abs(terms[t]))
    if config.kind == "edit":
        from ..prompts.encode import find_word

        start, end = find_word(config.base, config.edit.word, config.edit.occurrence)
        return config.base[:start] + text + config.base[end:]
    return text


def step_groups(job, path, step: int) -> list[Group]:
    """The groups of the step from frame `step` of the walk `path` to the next, by the words of the two keyframes
    around it."""
    pipe = job.loaded.pipe
    segment = int(path.segment[step + 1])
    tokenizer = pipe.tokenizer
    ends = [word_slots(tokenizer, _sentence(job.config, k)) for k in (segment, segment + 1)]
    conds = path.conditionings([step])
    slots = tokenizer.model_max_length
    return row_groups(*ends[0], *ends[1], slots, pooled=conds.shape[1] > slots)


class MovedRows:
    """The renders of an attribution, as a path the job renders through the store: case k is frame i with `rows`
    moved to frame j's values (no rows: frame i itself, rendered beside its groups)."""

    def __init__(self, path, config, cases: list[tuple[int, int, list[int]]]):
        self.path, self.config, self.cases = path, config, cases

    def __len__(self):
        return len(self.cases)

    def conditionings(self, indices):
        out = []
        for k in indices:
            i, j, rows = self.cases[k]
            own = self.path.conditionings([i])[0].clone()
            own[rows] = self.path.conditionings([j])[0][rows]
            out.append(own)
        return torch.stack(out)

    def frame_inputs(self, indices):
        return self.path.frame_inputs([self.cases[k][0] for k in indices])

    def describe(self, k):
        i, j, rows = self.cases[k]
        return {**self.path.describe(i), "file": f"{k:05d}.png",
                "moved": {"to": frame_identity(self.config, self.path.describe(j)), "rows": rows}}


def attribute(job, store, steps: list[int], distances: list[float], progress=None) -> list[dict]:
    """Attribute each step (frame i -> i + 1) to its groups of rows: renders through the job's renderer and `store`
    (each render under a key of its own, so explaining again renders nothing), measured with the walk's metric
    against `distances` (the walk's own, per step). Records: {step, groups: [{label, slots, share, key}], remainder}.
    """
    distance, walk = distance_function(job.config.analysis.metric), job.path
    renderer = SampleRenderer(job, store, Shard(), False, progress or tqdm(disable=True))
    records = []
    try:
        for step in steps:
            if distances[step] <= 0:
                raise MorphError(f"step {step}: frames {step} and {step + 1} are the same picture; there is no "
                                 "change to attribute")
            groups = step_groups(job, walk, step)
            now, after = walk.conditionings([step])[0], walk.conditionings([step + 1])[0]
            moving = [g for g in groups if not torch.equal(now[g.rows], after[g.rows])]
            cases = [(step, step + 1, [])] + [(step, step + 1, g.rows) for g in moving]
            keys = renderer.render_path(MovedRows(walk, job.config, cases))
            # prepared for the metric once: every group's render is compared with the same first frame
            frames = [distance.prepare(downscale(torch.from_numpy(store.read(key)))) for key in keys]
            renders = dict(zip(map(id, moving), zip(frames[1:], keys[1:])))
            found = [renders.get(id(g), (None, None)) for g in groups]  # (frame, key); a group that does not move: none
            parts, remainder = shares([0.0 if frame is None else distance.between(frames[0], frame)
                                       for frame, _ in found],
                                      distances[step])
            records.append({"step": step, "groups": [
                {"label": g.label, "slots": [g.rows[0], g.rows[-1]], "share": share, "key": key}
                for g, share, (_, key) in zip(groups, parts, found)], "remainder": remainder})
    finally:
        job.use_path(walk)
    return records


def publish(records: list[dict], store, folder) -> None:
    """Copies of the group renders beside the report, explain/<step>/<n>.png; each group's record names its file."""
    for record in records:
        for n, group in enumerate(record["groups"]):
            if group["key"]:
                group["file"] = f"explain/{record['step']:05d}/{n:02d}.png"
                (folder / group["file"]).parent.mkdir(parents=True, exist_ok=True)
                store.publish(group["key"], folder / group["file"])


def explain_storms(job, store, analysis, folder, progress=None, top: int = 3) -> list[dict]:
    """After a walk (analysis.explain): the biggest step of each of the `top` worst storm zones attributed, the
    renders published into `folder`."""
    steps = biggest_steps(analysis.distances, top, analysis.storms)
    records = attribute(job, store, steps, analysis.distances, progress)
    publish(records, store, folder)
    return records
