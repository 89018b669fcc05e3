"""Generation metadata other tools (and the studio) embed in images, read into one shape.

``read_generation(chunks, parameters, studio_json)`` answers a ``Generation``-shaped dict::

    {"source": "image-studio" | "automatic1111" | "comfyui" | "invokeai" | "novelai" | "fooocus"
               | "swarmui" | "draw-things",
     "prompt": str, "negative_prompt": str, "seed": int | None, "steps": int | None,
     "guidance": float | None, "width": int | None, "height": int | None,
     "model": str | None, "sampler": str | None}

or ``None`` with a note: "no generation metadata" (nothing a generator writes is in the file) or
"unrecognised format" (text that looks like generation metadata, in a shape no reader here knows).

One small reader per tool, each following the tool's own documented file format:

- the studio: the ``studio`` JSON (PNG chunk, or the EXIF image description); preferred over the
  A1111 text it also writes, whose ``Negative prompt:`` line is ambiguous when a prompt has one;
- AUTOMATIC1111 / Forge / SD.Next: the ``parameters`` text (PNG chunk or EXIF UserComment);
- JSON in ``parameters``: SwarmUI (``sui_image_params``), Fooocus (its ``fooocus`` scheme, marked
  by the ``fooocus_scheme`` chunk or a ``Fooocus`` version), NovelAI (the ``Comment`` shape);
- ComfyUI: the ``prompt`` chunk (the API graph: sampler node, its text-encode inputs, checkpoint
  loader, latent size); a file with only the ``workflow`` chunk (the editor's graph) is recognised
  as ComfyUI but its parameters are not taken from it;
- InvokeAI: ``invokeai_metadata`` (3.x and later), ``sd-metadata`` (2.x);
- NovelAI: the ``Comment`` chunk (JSON) beside ``Software: NovelAI``;
- Draw Things: an XMP packet whose ``exif:UserComment`` holds its JSON (``c``, ``uc``, ``scale``...).

Why our own readers rather than a library: ``sd-parsers`` 0.6 (2025-03, the maintained one) was
run on the files ``tests/test_metadata_read.py`` makes in each tool's format. It read A1111,
ComfyUI, InvokeAI 2.x/4.x and NovelAI (InvokeAI 4's model name and NovelAI's steps came back
empty), read Fooocus only when ``base_model_hash`` is present, and had no reader for SwarmUI, Draw
Things or the studio's own JSON (6 of 9 files, against 9 of 9 here). The formats are small and
documented; a reader here is a few lines per tool, returns our one shape directly, and adds no
dependency whose Pillow handling and result types we would have to follow.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Callable

log = logging.getLogger(__name__)

NO_METADATA = "no generation metadata"
UNRECOGNISED = "unrecognised format"

# Text chunks that carry generation metadata in some tool's format; any of them present but unread
# makes the answer "unrecognised format" rather than "no generation metadata".
GENERATION_CHUNKS = ("parameters", "prompt", "workflow", "invokeai_metadata", "invokeai_graph", "sd-metadata",
                     "Dream", "Comment", "fooocus_scheme", "XML:com.adobe.xmp", "studio")


def generation(source: str, prompt: Any = "", negative_prompt: Any = "", *, seed: Any = None, steps: Any = None,
               guidance: Any = None, width: Any = None, height: Any = None, model: Any = None,
               sampler: Any = None) -> dict[str, Any]:
    """The normalised shape, with each value converted (a value that does not convert is None)."""
    return {"source": source, "prompt": _text(prompt), "negative_prompt": _text(negative_prompt),
            "seed": _int(seed), "steps": _int(steps), "guidance": _float(guidance), "width": _int(width),
            "height": _int(height), "model": _text(model) or None, "sampler": _text(sampler) or None}


def read_generation(chunks: dict[str, Any], parameters: str | None,
                    studio_json: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    """(generation, note) from an image's text chunks (PNG text / XMP, as Pillow's ``info``), its
    ``parameters`` text (PNG chunk or EXIF UserComment) and the studio's JSON. Exactly one of the two
    is None: the note says why there is no generation ("no generation metadata" or
    "unrecognised format")."""
    texts = {name: value for name, value in chunks.items() if isinstance(value, str)}
    if parameters is not None:
        texts["parameters"] = parameters
    if studio_json:
        found = _studio(studio_json)
        if found is not None:
            return found, None
    for reader in _READERS:
        try:
            found = reader(texts)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            # One tool's odd file must not hide another reader's answer; what failed is logged.
            log.info("%s could not read this image's metadata: %s: %s", reader.__name__, type(error).__name__, error)
            found = None
        if found is not None:
            return found, None
    if any(texts.get(name, "").strip() for name in GENERATION_CHUNKS):
        return None, UNRECOGNISED
    return None, NO_METADATA


# -- one reader per tool -------------------------------------------------------------------------


def _studio(data: dict[str, Any]) -> dict[str, Any] | None:
    if not isinstance(data.get("prompt"), str):
        return None
    params = data.get("params") if isinstance(data.get("params"), dict) else {}
    return generation("image-studio", data["prompt"], data.get("negative_prompt", ""), seed=data.get("seed"),
                      steps=params.get("steps"), guidance=params.get("guidance"),
                      # the image's own size: an edit's result is fitted back to its input after the provider
                      width=data.get("width") or params.get("width"), height=data.get("height") or params.get("height"),
                      model=data.get("model"), sampler=params.get("sampler"))


def _comfyui(texts: dict[str, str]) -> dict[str, Any] | None:
    """ComfyUI's ``prompt`` chunk: ``{node id: {"class_type", "inputs"}}``, where an input wired to
    another node is ``[node id, output index]``."""
    graph = _json_object(texts.get("prompt"))
    if graph is None:
        if _json_object(texts.get("workflow")) is not None:
            return generation("comfyui")  # the editor's graph only: the tool is known, its values are not read
        return None
    nodes = {key: node for key, node in graph.items() if isinstance(node, dict) and "class_type" in node}
    if not nodes:
        return None
    # The sampler node: KSampler (seed), KSamplerAdvanced / SamplerCustom (noise_seed).
    samplers = [node for node in nodes.values() if "sampler" in str(node["class_type"]).lower()
                and isinstance(node.get("inputs"), dict)
                and ("seed" in node["inputs"] or "noise_seed" in node["inputs"])]
    if not samplers:
        return generation("comfyui")
    inputs = samplers[0]["inputs"]

    def linked(value: Any) -> dict[str, Any] | None:
        if isinstance(value, list) and value and str(value[0]) in nodes:
            return nodes[str(value[0])]
        return None

    def text_of(value: Any, depth: int = 0) -> str:
        node = linked(value)
        if node is None or depth > 8:
            return value if isinstance(value, str) else ""
        node_inputs = node.get("inputs") or {}
        for name in ("text", "text_g", "prompt", "conditioning", "conditioning_1", "string"):
            if name in node_inputs:
                return text_of(node_inputs[name], depth + 1)
        return ""

    def find(value: Any, names: tuple[str, ...], depth: int = 0) -> Any:
        node = linked(value)
        if node is None or depth > 8:
            return None
        node_inputs = node.get("inputs") or {}
        for name in names:
            if name in node_inputs and linked(node_inputs[name]) is None:
                return node_inputs[name]
        for upstream in ("model", "samples", "latent_image", "pixels"):
            if upstream in node_inputs:
                found = find(node_inputs[upstream], names, depth + 1)
                if found is not None:
                    return found
        return None

    return generation(
        "comfyui", text_of(inputs.get("positive")), text_of(inputs.get("negative")),
        seed=inputs.get("seed", inputs.get("noise_seed")), steps=inputs.get("steps"), guidance=inputs.get("cfg"),
        width=find(inputs.get("latent_image"), ("width",)), height=find(inputs.get("latent_image"), ("height",)),
        model=find(inputs.get("model"), ("ckpt_name", "unet_name", "model_name")),
        sampler=_joined(inputs.get("sampler_name"), inputs.get("scheduler")))


def _invokeai(texts: dict[str, str]) -> dict[str, Any] | None:
    data = _json_object(texts.get("invokeai_metadata"))
    if data is not None:  # InvokeAI 3.x and later
        model = data.get("model")  # 4.x: {"name", "key", "base"...}; 3.x: {"model_name", "base_model"...}
        if isinstance(model, dict):
            model = model.get("name") or model.get("model_name")
        prompt = data.get("positive_prompt", data.get("positive_style_prompt", ""))
        return generation("invokeai", prompt, data.get("negative_prompt", ""), seed=data.get("seed"),
                          steps=data.get("steps"), guidance=data.get("cfg_scale"), width=data.get("width"),
                          height=data.get("height"),
                          model=model,
                          sampler=data.get("scheduler"))
    legacy = _json_object(texts.get("sd-metadata"))
    if legacy is not None and isinstance(legacy.get("image"), dict):  # InvokeAI 2.x
        image = legacy["image"]
        prompt = image.get("prompt")
        if isinstance(prompt, list):  # weighted sub-prompts: [{"prompt", "weight"}]
            prompt = " ".join(part.get("prompt", "") for part in prompt if isinstance(part, dict))
        positive, negative = _split_bracketed_negative(_text(prompt))
        return generation("invokeai", positive, negative, seed=image.get("seed"), steps=image.get("steps"),
                          guidance=image.get("cfg_scale"), width=image.get("width"), height=image.get("height"),
                          model=legacy.get("model_weights"), sampler=image.get("sampler"))
    return None


def _novelai(texts: dict[str, str]) -> dict[str, Any] | None:
    comment = _json_object(texts.get("Comment"))
    if comment is None or "NovelAI" not in texts.get("Software", "NovelAI"):
        return None
    return _novelai_shape(comment, fallback_prompt=texts.get("Description", ""), model=texts.get("Source"))


def _novelai_shape(data: dict[str, Any], *, fallback_prompt: str = "", model: Any = None) -> dict[str, Any] | None:
    if not ("uc" in data or "scale" in data or "n_samples" in data):
        return None
    return generation("novelai", data.get("prompt", fallback_prompt), data.get("uc", ""), seed=data.get("seed"),
                      steps=data.get("steps"), guidance=data.get("scale"), width=data.get("width"),
                      height=data.get("height"), model=model, sampler=data.get("sampler"))


def _json_parameters(texts: dict[str, str]) -> dict[str, Any] | None:
    """JSON in the ``parameters`` chunk: SwarmUI, Fooocus or NovelAI shapes (never a prompt)."""
    data = _json_object(texts.get("parameters"))
    if data is None:
        return None
    swarm = data.get("sui_image_params")
    if isinstance(swarm, dict):
        return generation("swarmui", swarm.get("prompt", ""), swarm.get("negativeprompt", ""), seed=swarm.get("seed"),
                          steps=swarm.get("steps"), guidance=swarm.get("cfgscale"), width=swarm.get("width"),
                          height=swarm.get("height"), model=swarm.get("model"),
                          sampler=_joined(swarm.get("sampler"), swarm.get("scheduler")))
    if texts.get("fooocus_scheme") == "fooocus" or "Fooocus" in str(data.get("version", "")):
        width, height = _pair(data.get("resolution"))
        return generation("fooocus", data.get("prompt", ""), data.get("negative_prompt", ""), seed=data.get("seed"),
                          steps=data.get("steps"), guidance=data.get("guidance_scale"), width=width, height=height,
                          model=data.get("base_model"), sampler=_joined(data.get("sampler"), data.get("scheduler")))
    return _novelai_shape(data)


def _draw_things(texts: dict[str, str]) -> dict[str, Any] | None:
    xmp = texts.get("XML:com.adobe.xmp") or texts.get("xmp") or ""
    match = re.search(r"<exif:UserComment>.*?<rdf:li[^>]*>(.*?)</rdf:li>", xmp, re.S)
    if not match:
        return None
    data = _json_object(_xml_unescape(match.group(1)))
    if data is None or "c" not in data:
        return None
    width, height = _pair(data.get("size"))
    return generation("draw-things", data.get("c", ""), data.get("uc", ""), seed=data.get("seed"),
                      steps=data.get("steps"), guidance=data.get("scale"), width=width, height=height,
                      model=data.get("model"), sampler=data.get("sampler"))


def _automatic1111(texts: dict[str, str]) -> dict[str, Any] | None:
    text = texts.get("parameters")
    if not text or not text.strip() or text.lstrip().startswith(("{", "[")):
        return None  # JSON that no reader knew is not a prompt
    from studio.metadata import parse_parameters  # metadata imports this module; parse lives there

    parsed = parse_parameters(text)
    pairs = parsed["pairs"]
    if not pairs:
        return None  # a free text with no settings line: not something a generator wrote
    width, height = _pair(pairs.get("Size"))
    return generation("automatic1111", parsed["prompt"], parsed["negative_prompt"], seed=pairs.get("Seed"),
                      steps=pairs.get("Steps"), guidance=pairs.get("CFG scale"), width=width, height=height,
                      model=pairs.get("Model"), sampler=pairs.get("Sampler"))


# The tools' own chunks first: a ComfyUI or InvokeAI file may also carry a ``parameters`` chunk
# written by an extension, in less detail.
_READERS: tuple[Callable[[dict[str, str]], dict[str, Any] | None], ...] = (
    _comfyui, _invokeai, _novelai, _draw_things, _json_parameters, _automatic1111)


# -- small conversions ---------------------------------------------------------------------------


def _json_object(text: Any) -> dict[str, Any] | None:
    if not isinstance(text, str) or not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: nesting deeper than any real record
        return None
    return value if isinstance(value, dict) else None


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ("" if value is None else str(value))


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    text = str(value).strip()
    return int(text) if re.fullmatch(r"-?\d{1,40}", text) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None


def _pair(value: Any) -> tuple[Any, Any]:
    """A size as two sides from "512x768", "(512, 768)" or [512, 768]."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return value[0], value[1]
    numbers = re.findall(r"\d+", str(value or ""))
    return (numbers[0], numbers[1]) if len(numbers) == 2 else (None, None)


def _joined(*parts: Any) -> str | None:
    named = [str(part) for part in parts if part not in (None, "")]
    return " ".join(named) or None


def _split_bracketed_negative(prompt: str) -> tuple[str, str]:
    """InvokeAI 2.x wrote the negative prompt inside the prompt, in square brackets."""
    negatives = re.findall(r"\[([^\[\]]*)\]", prompt)
    positive = re.sub(r"\s*\[[^\[\]]*\]", "", prompt).strip()
    return positive, ", ".join(part.strip() for part in negatives if part.strip())


def _xml_unescape(text: str) -> str:
    for entity, char in (("&quot;", '"'), ("&apos;", "'"), ("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&")):
        text = text.replace(entity, char)
    return text


# -- re-running ----------------------------------------------------------------------------------


def request_fields(meta: dict[str, Any]) -> dict[str, Any]:
    """``GenerationRequest`` fields that re-make an image, from ``read_metadata``'s answer: the
    studio's JSON when present (the user's own prompt and negative prompt, apart from what a style
    added, and the edit's mode, strength and source references under ``source_image`` /
    ``source_mask``), else the normalised generation of the tool that wrote the file.

    A foreign seed outside the studio's 0..2**32-1 (ComfyUI writes 64-bit seeds) is wrapped into it:
    another tool's sampler never gives the same picture anyway. Raises InvalidRequest (saying "no
    generation metadata" or "unrecognised format") when there is nothing to re-run, and when the
    metadata has no prompt."""
    from studio.errors import InvalidRequest
    from studio.validation import SEED_SPACE

    data = meta.get("studio") or {}
    if data and isinstance(data.get("prompt"), str):
        params = data.get("params", {})
        if not isinstance(params, dict):
            raise InvalidRequest("this image's generation parameters are unreadable (params is not an object)")
        if "user_negative_prompt" in params:
            negative = params["user_negative_prompt"] or ""
        else:  # written before the user's part was kept apart: a style's negative cannot be told from it
            negative = "" if data.get("style") else data.get("negative_prompt", "")
        fields = {
            "prompt": data.get("user_prompt") or data["prompt"], "provider": data.get("provider"),
            "model": data.get("model"), "negative_prompt": negative, "style": data.get("style"),
            "width": params.get("width"), "height": params.get("height"), "seed": data.get("seed"),
            "steps": params.get("steps"), "guidance": params.get("guidance"), "quality": params.get("quality"),
            "output_format": data.get("format", "png"), "category": data.get("category", ""),
            "tags": list(data.get("tags") or []), "extra": params.get("extra") or {},
            "postprocess": params.get("postprocess") or {}, "mode": data.get("mode") or "text-to-image",
            "strength": params.get("strength"), "parent_id": data.get("parent_id"),
            "source_image": params.get("source_image"), "source_mask": params.get("source_mask"),
            "run_mode": params.get("run_mode"), "id": data.get("id"),
        }
        if isinstance(fields["seed"], int) and not 0 <= fields["seed"] < SEED_SPACE:
            fields["seed"] %= SEED_SPACE  # recorded by versions that added image numbers past the range
        return fields
    found = meta.get("generation")
    if not found:
        raise InvalidRequest(f"this image carries no generation parameters we can re-run "
                             f"({meta.get('note') or NO_METADATA})")
    if not found.get("prompt"):
        raise InvalidRequest(f"this image's {found['source']} metadata has no prompt to re-run")
    seed = found.get("seed")
    if seed is not None and not 0 <= seed < SEED_SPACE:
        seed %= SEED_SPACE
    return {"prompt": found["prompt"], "negative_prompt": found.get("negative_prompt") or "", "seed": seed,
            "width": found.get("width"), "height": found.get("height"), "steps": found.get("steps"),
            "guidance": found.get("guidance")}


def seed_note(found: dict[str, Any] | None) -> str | None:
    """What a re-run does with a foreign seed outside the studio's range (None when it fits)."""
    from studio.validation import SEED_SPACE

    seed = (found or {}).get("seed")
    if seed is None or 0 <= seed < SEED_SPACE:
        return None
    return (f"seed {seed} ({found['source']}) is outside the studio's 0-{SEED_SPACE - 1}: "
            f"a re-run uses {seed % SEED_SPACE}")
