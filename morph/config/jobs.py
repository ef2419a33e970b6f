"""A job's config as a declared schema (pydantic), checked before any model loads. No torch.

Three job kinds share the common keys (common_keys.py): a walk (`prompts`), a one-word edit (`base` + `edit`) and a
grid (`grid`); which one a config is follows from which of those keys it has. Every key is declared with its type,
range and meaning (the sections in sections.py, a walk's keyframes in keyframes.py); `morph schema` prints the JSON
Schema. yaml_file.py reads a YAML file into one.
"""

from typing import Annotated, ClassVar, Union

from pydantic import Discriminator, Field, Tag, TypeAdapter, ValidationError, model_validator

from .common_keys import JobConfig
from .messages import bad, one_line, short
from .keyframes import InversionSpec, KeyframeEntry
from .sections import Ease, EditSpec, Frames, GridSpec, IpAdapterSpec, Spacing, SpacingSpec, Text, TimingSpec, VideoSpec
from ..errors import MorphError, did_you_mean
from .expr import parse_prompt_expression
from .image_keys import INVERTIBLE, check_image_keyframes


def segment_steps(frames: int | list[int], n_keyframes: int) -> list[int]:
    """Steps per segment: a list is taken as is; a total F shares F - 1 steps as evenly as possible."""
    if isinstance(frames, list):
        return list(frames)
    segments = n_keyframes - 1
    base, extra = divmod(frames - 1, segments)
    return [base + (1 if i < extra else 0) for i in range(segments)]


class _Keyframed(JobConfig):
    """Walks and edits: keyframes joined by segments of frames."""

    frames: Frames = 100
    """Total frames, or the steps of each segment ([100, 300] -> 401 frames)."""
    spacing: Spacing = SpacingSpec()
    """Where the frames sit along the walk: uniform, even, or {mode: even, max_extra_renders: N, budget: walk}."""
    video: VideoSpec = VideoSpec()
    """Platform files besides the master MP4: {preset: tiktok, fit: pad, loop: pingpong}; see docs/platforms.md."""
    timing: TimingSpec | None = None
    """Time the walk to music: {audio: track.mp3, start: 0, duration: 12.5}; the picture changes most on beats."""
    ease: Ease = "linear"
    """How each segment moves between its keyframes: linear, smoothstep, cosine (slow at both ends), ease-in, ease-out;
    a keyframe mapping's ease sets the segment that starts there."""
    def segment_eases(self) -> list[str]:
        """Each segment's easing: its first keyframe's own, else the top level's."""
        return [self.ease] * (len(self.keyframe_sources()) - 1)

    def keyframe_sources(self) -> list[str]:
        raise NotImplementedError

    def keyframe_settings(self) -> list[dict]:
        """Each keyframe's seed, negative_prompt and guidance_scale (the top level's unless a keyframe sets its own)."""
        return [{"seed": self.seed, "negative_prompt": self.negative_prompt, "guidance_scale": self.guidance_scale}
                for _ in self.keyframe_sources()]

    def keyframe_lora_scales(self) -> list[list[float]]:
        """Each keyframe's strength of each LoRA (in the order of `loras:`): the top level's unless it sets its own."""
        return [[lora.scale for lora in self.loras] for _ in self.keyframe_sources()]

    def keyframe_controlnet_scales(self) -> list[list[float]]:
        """Each keyframe's strength of each ControlNet (in the order of `controlnets:`): the top level's unless it sets
        its own."""
        return [[controlnet.scale for controlnet in self.controlnets] for _ in self.keyframe_sources()]

    def varying(self) -> list[str]:
        """The settings that differ between keyframes: walked along with the prompts."""
        settings = self.keyframe_settings()
        varying = [k for k in ("seed", "negative_prompt", "guidance_scale") if len({s[k] for s in settings}) > 1]
        return varying + [name for name, scales in (("loras", self.keyframe_lora_scales()),
                                                    ("controlnets", self.keyframe_controlnet_scales()))
                          if len({tuple(s) for s in scales}) > 1]

    def frame_count(self) -> int:
        if self.timing:  # the music's length decides; every keyframe still lands on a frame
            return max(round(self.timing.duration * self.fps), len(self.keyframe_sources()))
        return sum(segment_steps(self.frames, len(self.keyframe_sources()))) + 1

    def steps(self) -> list[int]:
        """Steps of each segment: from `frames`, or with timing the music's frames shared in proportion to a
        `frames` list (evenly without one), each segment at least one step."""
        segments = len(self.keyframe_sources()) - 1
        if not self.timing:
            return segment_steps(self.frames, segments + 1)
        total = self.frame_count() - 1
        weights = self.frames if isinstance(self.frames, list) else [1] * segments
        ideal = [total * w / sum(weights) for w in weights]
        steps = [max(1, int(x)) for x in ideal]
        while sum(steps) < total:  # the largest shortfalls first
            steps[max(range(segments), key=lambda i: ideal[i] - steps[i])] += 1
        while sum(steps) > total:  # a segment raised to its one step took it from the largest excess
            steps[max((i for i in range(segments) if steps[i] > 1), key=lambda i: steps[i] - ideal[i])] -= 1
        return steps

    @model_validator(mode="after")
    def _check_timing(self):
        if self.timing and "frames" in self.model_fields_set and not isinstance(self.frames, list):
            raise MorphError("frames: with timing, the frame count is timing.duration x fps; leave frames out, or "
                             "give a list to share the frames between segments in those proportions")
        eased = any(name != "linear" for name in self.segment_eases())
        for clash, what in ((self.spacing.mode == "even", "spacing: even places frames at equal steps of change"),
                            (self.timing, "timing places frames by the music")):
            if eased and clash:
                raise MorphError(f"ease: {what}, which decides where each frame sits, as ease would; use one of them")
        if self.timing and self.spacing.mode == "even" and self.spacing.budget == "walk":
            raise MorphError("spacing.budget: walk moves frames between segments, and timing keeps each segment's "
                             "frames (from a frames list, or evenly); use budget: segment with timing")
        return self

    @model_validator(mode="before")
    @classmethod
    def _check_frames(cls, raw):
        """frames against the number of keyframes, before the total is ever computed from it."""
        if not isinstance(raw, dict):
            return raw
        edit = raw.get("edit")
        keyframes = raw.get("prompts") if "prompts" in raw else edit.get("prompts") if isinstance(edit, dict) else None
        if not isinstance(keyframes, list) or len(keyframes) < 2:
            return raw  # the field checks say what is wrong
        segments = len(keyframes) - 1
        value = raw.get("frames", 100)
        if isinstance(value, list) and len(value) != segments:
            raise bad("frames", value, f"a list gives the steps of each segment: {segments} whole number(s) >= 1 "
                                        f"for {len(keyframes)} keyframes")
        if isinstance(value, int) and not isinstance(value, bool) and value < max(2, segments + 1):
            raise bad("frames", value, f"expected a whole number >= {max(2, segments + 1)} "
                                        f"(every one of the {len(keyframes)} keyframes lands on a frame)")
        return raw


class WalkJob(_Keyframed):
    """A walk through two or more keyframe prompts."""

    prompts: list[KeyframeEntry] = Field(min_length=2)
    """Keyframes in order: texts (or expressions over `define`), or {prompt, seed, negative_prompt, guidance_scale,
    image, ...}."""
    inversion: InversionSpec | None = None
    """How keyframe images are inverted: {guidance_scale: 1, num_inference_steps: the job's}."""
    ip_adapter: IpAdapterSpec | None = None
    """An IP-Adapter, {path, image_encoder, scale}: keyframes' reference images steer the picture; see
    docs/references.md."""
    kind: ClassVar[str] = "walk"

    def keyframe_images(self) -> list[tuple[int, str, str]]:
        """(index, path, fit) of each keyframe with an image."""
        return [(i, p.image, p.fit or "crop") for i, p in enumerate(self.prompts) if p.image]

    def scheduler_choice(self) -> tuple[str | None, dict]:
        """Image keyframes render with the scheduler DDIM inversion runs backwards, unless one is named."""
        if self.scheduler is None and self.keyframe_images():
            return INVERTIBLE, {}
        return super().scheduler_choice()

    def keyframe_sources(self) -> list[str]:
        return [p.prompt for p in self.prompts]

    def prompt_sources(self) -> list[tuple[str, str]]:
        return [(f"prompts[{i}]", p) for i, p in enumerate(self.keyframe_sources())]

    def negative_sources(self) -> list[tuple[str, str]]:
        return super().negative_sources() + [(f"prompts[{i}].negative_prompt", p.negative_prompt)
                                             for i, p in enumerate(self.prompts) if p.negative_prompt]

    def negatives(self) -> list[tuple[str, str, str, float]]:
        return [(self._key_of(i, "negative_prompt"), own["negative_prompt"], self._key_of(i, "guidance_scale"),
                 own["guidance_scale"]) for i, own in enumerate(self.keyframe_settings())]

    def _key_of(self, i: int, setting: str) -> str:
        """The key keyframe i's setting comes from: its own, else the top level's."""
        return f"prompts[{i}].{setting}" if getattr(self.prompts[i], setting) is not None else setting

    def keyframe_settings(self) -> list[dict]:
        settings = super().keyframe_settings()
        for keyframe, own in zip(self.prompts, settings):
            own.update({k: getattr(keyframe, k) for k in own if getattr(keyframe, k) is not None})
        return settings

    def segment_eases(self) -> list[str]:
        return [keyframe.ease or self.ease for keyframe in self.prompts[:-1]]

    def keyframe_references(self) -> list[str | None]:
        """Each keyframe's reference image (None: it has none)."""
        return [keyframe.reference for keyframe in self.prompts]

    def keyframe_ip_scales(self) -> list[float]:
        """Each keyframe's reference strength: its own, else ip_adapter.scale; 0 where it has no reference."""
        return [0.0 if not keyframe.reference else self.ip_adapter.scale if keyframe.ip_adapter_scale is None
                else keyframe.ip_adapter_scale for keyframe in self.prompts]

    @model_validator(mode="after")
    def _check_keyframe_references(self):
        if self.ip_adapter and not any(self.keyframe_references()):
            raise MorphError("ip_adapter: no keyframe has a reference; give keyframes reference: image.png, or "
                             "remove ip_adapter")
        for i, keyframe in enumerate(self.prompts):
            if keyframe.reference and keyframe.image:  # an image keyframe is inverted and checked without the adapter
                raise MorphError(f"prompts[{i}].reference: a keyframe with an image: starts from that picture's "
                                 "inversion, which is made without the IP-Adapter; give the reference to another "
                                 "keyframe, or drop one of them")
            if keyframe.reference and not self.ip_adapter:
                raise MorphError(f"prompts[{i}].reference: a reference image needs an IP-Adapter to embed it; add "
                                 "ip_adapter: {path: ...} at the top level")
            if keyframe.ip_adapter_scale is not None and not keyframe.reference:
                raise MorphError(f"prompts[{i}].ip_adapter_scale: the keyframe has no reference to scale; add "
                                 "reference: image.png to it, or remove ip_adapter_scale")
        return self

    def keyframe_lora_scales(self) -> list[list[float]]:
        names = self.lora_names()
        return [[(keyframe.loras or {}).get(name, lora.scale) for name, lora in zip(names, self.loras)]
                for keyframe in self.prompts]

    @model_validator(mode="after")
    def _settings_every_keyframe_gives(self):
        """A setting that every keyframe gives one value is the whole walk's: it walks nowhere (varying leaves it
        out), so the job renders, keys and records it as if written at the top level, whose own value then reaches
        no frame. (LoRA strengths always go along, each frame at its own.)"""
        for key in ("seed", "negative_prompt", "guidance_scale"):
            values = {getattr(keyframe, key) for keyframe in self.prompts}
            if len(values) == 1 and None not in values:
                setattr(self, key, values.pop())
        return self

    @model_validator(mode="after")
    def _check_keyframe_loras(self):
        return self._check_keyframe_strengths("loras", self.lora_names(), "LoRA", "loras: [{path: ..., name: ...}]",
                                              "max_lora_scale")

    def _check_keyframe_strengths(self, key: str, names: list[str], kind: str, declare: str, limit: str):
        """Each keyframe's {name: strength} under `key` names one the top level's `key` declares, within `limit`."""
        for i, keyframe in enumerate(self.prompts):
            for name, scale in (getattr(keyframe, key) or {}).items():
                if name not in names:
                    raise MorphError(f"prompts[{i}].{key}: {name!r} is not a {kind} of {key}:; "
                                     f"{did_you_mean(name, names)}" + (f"its {kind}s are {', '.join(names)}" if names
                                                                       else f"declare it there first: {declare}"))
                self._check_strength(f"prompts[{i}].{key}.{name}", scale, limit)
        return self

    def keyframe_controlnet_scales(self) -> list[list[float]]:
        names = self.controlnet_names()
        return [[(keyframe.controlnets or {}).get(name, controlnet.scale) for name, controlnet in
                 zip(names, self.controlnets)] for keyframe in self.prompts]

    @model_validator(mode="after")
    def _check_keyframe_controlnets(self):
        return self._check_keyframe_strengths("controlnets", self.controlnet_names(), "ControlNet",
                                              "controlnets: [{path: ..., image: ...}]", "max_controlnet_scale")

    @model_validator(mode="after")
    def _check_images(self):
        check_image_keyframes(self)
        return self

    @model_validator(mode="after")
    def _check_last_ease(self):
        if self.prompts[-1].ease is not None:
            raise MorphError(f"prompts[{len(self.prompts) - 1}].ease: the last keyframe starts no segment; set ease on "
                             "the keyframe a segment starts from")
        return self

    @model_validator(mode="after")
    def _check_guidance(self):
        guidance = {s["guidance_scale"] for s in self.keyframe_settings()}
        if len(guidance) > 1 and min(guidance) <= 1:
            raise MorphError(f"prompts: keyframes with different guidance_scale need every one above 1 (classifier-"
                             f"free guidance); got {sorted(guidance)}")
        return self


class EditJob(_Keyframed):
    """A one-word edit: only the token slots of `edit.word` in `base` walk through `edit.prompts`."""

    base: Text
    """The sentence whose word is edited."""
    edit: EditSpec
    """Which word, and what its slots walk through."""
    kind: ClassVar[str] = "edit"

    def keyframe_sources(self) -> list[str]:
        return self.edit.prompts

    def prompt_sources(self) -> list[tuple[str, str]]:
        return [(f"edit.prompts[{i}]", p) for i, p in enumerate(self.edit.prompts)]

    def prompt_texts(self) -> list[tuple[str, str]]:
        return super().prompt_texts() + [("base", self.base)]

    def prompt_terms(self, source: str, where: str) -> dict[str, float]:
        """Edit values walk through words, so a bare name that is not defined is the word itself."""
        return parse_prompt_expression(source, self.define, where, bare_names_are_text=True)


class GridJob(JobConfig):
    """Rows walked between two prompts, columns adding k times a third."""

    grid: GridSpec
    """Rows and columns of the grid."""
    kind: ClassVar[str] = "grid"

    def frame_count(self) -> int:
        return self.grid.rows.steps * self.grid.columns.steps

    def prompt_sources(self) -> list[tuple[str, str]]:
        return [("grid.rows.from", self.grid.rows.start), ("grid.rows.to", self.grid.rows.end),
                ("grid.columns.add", self.grid.columns.add)]


JOB_KINDS = {"prompts": WalkJob, "edit": EditJob, "grid": GridJob}


def _kind_of(raw) -> str | None:
    present = [key for key in JOB_KINDS if isinstance(raw, dict) and key in raw]
    return present[0] if len(present) == 1 else None


JOB_SCHEMA = TypeAdapter(Annotated[Union[tuple(Annotated[cls, Tag(key)] for key, cls in JOB_KINDS.items())],
                                   Discriminator(_kind_of)])


def json_schema() -> dict:
    """The JSON Schema of a job file, for editors and other tools."""
    schema = JOB_SCHEMA.json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "morph job", **schema}


def validate(raw, default_name: str = "job") -> JobConfig:
    """Turn a parsed YAML mapping into a job config, or raise MorphError naming the bad key."""
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else f"a {type(raw).__name__}"
        raise MorphError(f"the config is {kind}, not a YAML mapping of keys such as model: and prompts:")
    bad_keys = [k for k in raw if not isinstance(k, str)]
    if bad_keys:
        raise MorphError(f"{short(bad_keys[0])}: keys are names such as model: and prompts:, not numbers or lists")
    modes = [k for k in JOB_KINDS if k in raw]
    if len(modes) != 1:
        raise MorphError("a job has exactly one of prompts: (a walk), edit: (a one-word edit) or grid:; "
                         f"this config has {', '.join(modes) if modes else 'none'}")
    if "base" in raw and "edit" not in raw:
        raise MorphError("base: only used together with edit:; remove it or add an edit: section")
    if "grid" in raw and "frames" in raw:
        raise MorphError("frames: not used by grid jobs; the grid's rows.steps x columns.steps sets the cells")
    raw = {"name": default_name, **raw}
    try:
        return JOB_SCHEMA.validate_python(raw)
    except ValidationError as e:
        raise one_line(e.errors(include_url=False)[0], JOB_KINDS[modes[0]]) from None
    except RecursionError:
        raise MorphError("the config nests too deeply to be a job config") from None
