"""The builder's options, one dataclass field per flag, each default written once with its help
text and with when the flag means something: the stages that read it and the setting it needs
(``--clip_model`` needs ``--ranker clip``). A flag given a value other than its default where it
would do nothing is an error (:func:`check_options`), as elsewhere in the project."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from mcmdpo.data.templates import CONVERSATION_TEMPLATES
from mcmdpo.eval.openai_client import DEFAULT_API_KEY_ENV, DEFAULT_ATTEMPTS, DEFAULT_TIMEOUT_S
from mcmdpo.model.loading import DTYPES, IMAGE_ASPECT_RATIOS

STAGES = ("collect", "correct", "sample", "rank", "pair")
RANKERS = ("reference", "clip", "judge", "human")
PAIRINGS = ("reference_vs_worst", "best_vs_worst")
# Where a local model or an endpoint is named: --corrector, --judge.
MODEL_PREFIX, ENDPOINT_PREFIX = "model:", "endpoint:"


class OptionsError(ValueError):
    """Options that cannot work together, or a flag that would do nothing."""


def _runs(options: "BuildOptions", *stages: str) -> bool:
    return any(stage in options.stages for stage in stages)


def local_corrector(options: "BuildOptions") -> bool:
    return _runs(options, "correct") and options.corrector.startswith(MODEL_PREFIX)


def endpoint_corrector(options: "BuildOptions") -> bool:
    return _runs(options, "correct") and options.corrector.startswith(ENDPOINT_PREFIX)


def ranks_with(options: "BuildOptions", ranker: str) -> bool:
    return _runs(options, "rank") and options.ranker == ranker


def local_judge(options: "BuildOptions") -> bool:
    return ranks_with(options, "judge") and (options.judge or "").startswith(MODEL_PREFIX)


def endpoint_judge(options: "BuildOptions") -> bool:
    return ranks_with(options, "judge") and (options.judge or "").startswith(ENDPOINT_PREFIX)


def option(default: Any, help: str, used: Callable[["BuildOptions"], bool] | None = None, used_when: str = "",
           choices: tuple[str, ...] | None = None, nargs: str | None = None) -> Any:
    """A dataclass field for one flag: ``used`` says whether the flag means something in a run
    (None: always), ``used_when`` how to say when it does."""
    metadata = {"help": help, "used": used, "used_when": used_when, "choices": choices, "nargs": nargs}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


COLLECT = (lambda o: _runs(o, "collect"), "the collect stage")
CORRECT = (lambda o: _runs(o, "correct"), "the correct stage")
SAMPLE = (lambda o: _runs(o, "sample"), "the sample stage")
RANK = (lambda o: _runs(o, "rank"), "the rank stage")
PAIR = (lambda o: _runs(o, "pair"), "the pair stage")
A_CORRECTOR = (lambda o: _runs(o, "correct") and o.corrector != "none", "a corrector (--corrector model:PATH or endpoint:URL)")
LOCAL_CORRECTOR = (local_corrector, "a local corrector (--corrector model:PATH)")
ENDPOINT_CORRECTOR = (endpoint_corrector, "an endpoint corrector (--corrector endpoint:URL)")
CLIP = (lambda o: ranks_with(o, "clip"), "--ranker clip")
JUDGE = (lambda o: ranks_with(o, "judge"), "--ranker judge")
ENDPOINT_JUDGE = (endpoint_judge, "a judge endpoint (--judge endpoint:URL)")
HUMAN = (lambda o: ranks_with(o, "human"), "--ranker human")
AN_ENDPOINT = (lambda o: endpoint_corrector(o) or endpoint_judge(o), "an endpoint (--corrector or --judge endpoint:URL)")
A_MODEL = (lambda o: _runs(o, "sample") or local_corrector(o) or local_judge(o),
           "a model (the sample stage, --corrector model:PATH or --judge model:PATH)")


@dataclass
class BuildOptions:
    """Everything a build reads. Build one in Python (``BuildOptions(data_path=..., ...)``) or
    from a command line (:mod:`mcmdpo.build.cli`); :func:`check_options` checks it."""

    output_dir: str = option("", "folder of the stage files, build_report.json and pairs.json")
    stages: list[str] = option(list(STAGES), "the stages to run now (in pipeline order, whatever the order given); each "
                               "reads the previous stage's file in --output_dir", choices=STAGES, nargs="+")
    data_path: str | None = option(None, "the user's alt-text: SFT file (LLaVA conversations or question/chosen records), "
                                   "upstream preference file, or with --columns a table (JSON, JSON Lines, CSV, parquet, or a "
                                   "`datasets` folder); required by collect, checked against collect's file otherwise")
    image_folder: str | None = option(None, "folder the image paths are relative to (none: paths as written); "
                                      "checked against collect's file when collect does not run")
    quiet: bool = option(False, "no progress bars")

    # collect
    columns: str | None = option(None, "a table's columns: image=COL,context=COL,alt_text=COL[,id=COL]", *COLLECT)
    min_words: int = option(2, "drop alt-text of fewer words", *COLLECT)
    max_words: int = option(200, "drop alt-text of more words", *COLLECT)

    # correct
    corrector: str = option("none", "grammar and spelling correction: none, model:PATH (a local instruct model, text only, "
                            "through transformers) or endpoint:URL (an OpenAI-compatible endpoint)", *CORRECT)
    correction_prompt: str | None = option(None, "the corrector's prompt, a text file with {alt_text} and optionally "
                                           "{context} (none: the shipped mcmdpo/build/prompts/correction.txt)", *A_CORRECTOR)
    max_edit_ratio: float = option(0.3, "keep the original where the correction's character edit distance exceeds this "
                                   "share of the original's length", *A_CORRECTOR)
    corrector_model_name: str | None = option(None, "the model an endpoint corrector is asked for (required with "
                                              "--corrector endpoint:URL)", *ENDPOINT_CORRECTOR)
    correction_batch_size: int = option(8, "alt-texts per batch of a local corrector", *LOCAL_CORRECTOR)

    # sample
    sampler_model: str | None = option(None, "the checkpoint that writes the candidates, typically the user's SFT "
                                       "checkpoint (on-policy); required by sample", *SAMPLE)
    num_candidates: int = option(4, "candidates per record", *SAMPLE)
    temperature: float = option(1.0, "sampling temperature (> 0)", *SAMPLE)
    top_p: float = option(0.9, "nucleus sampling", *SAMPLE)
    max_new_tokens: int = option(256, "longest candidate, in tokens", *SAMPLE)
    seed: int = option(0, "seeds each record's candidates with the record's id: a rerun, a resume or another sharding "
                       "gives the same candidates", *SAMPLE)
    image_aspect_ratio: str = option("auto", "the sampler's image protocol (auto: what the checkpoint records, as "
                                     "inference)", *SAMPLE, choices=IMAGE_ASPECT_RATIOS)
    conversation_template: str = option("auto", "the sampler's prompt template (auto: the checkpoint's, as inference)",
                                        *SAMPLE, choices=CONVERSATION_TEMPLATES)
    dtype: str | None = option(None, "dtype of every local model (none: bfloat16 on a GPU, float32 on a CPU)", *A_MODEL,
                               choices=tuple(sorted(DTYPES)))

    # rank
    ranker: str = option("reference", "reference: CIDEr-D + ROUGE-L against the corrected alt-text; clip: CLIPScore "
                         "(reference-free); judge: a VLM or endpoint comparing candidates two by two in both orders; "
                         "human: the annotation page's answers", *RANK, choices=RANKERS)
    clip_model: str | None = option(None, "any CLIP checkpoint (required by --ranker clip)", *CLIP)
    clip_context_weight: float = option(0.0, "weight of the CLIPScore between candidate and post, added to the image's "
                                        "(0: image only)", *CLIP)
    judge: str | None = option(None, "model:PATH (a local VLM) or endpoint:URL (required by --ranker judge)", *JUDGE)
    judge_prompt: str | None = option(None, "the judge's prompt, a text file with {context}, {first} and {second} "
                                      "(none: the shipped mcmdpo/build/prompts/judge.txt)", *JUDGE)
    judge_model_name: str | None = option(None, "the model a judge endpoint is asked for (required with --judge "
                                          "endpoint:URL)", *ENDPOINT_JUDGE)
    annotations: str | None = option(None, "SQLite database of the annotation page's answers (required by --ranker human)",
                                     *HUMAN)

    # pair
    pairing: str = option("reference_vs_worst", "reference_vs_worst: chosen = the corrected user alt-text, rejected = the "
                          "lowest-ranked candidate; best_vs_worst: both from the candidates", *PAIR, choices=PAIRINGS)
    min_margin: float = option(0.0, "skip records whose best candidate's score exceeds the rejected one's by this or "
                               "less (0: skip ties only)", *PAIR)
    length_balance: float | None = option(None, "the rejected must be within this ratio of the chosen's length in words "
                                          "(longer / shorter, e.g. 1.5; none: any length)", *PAIR)

    # endpoints (corrector and judge)
    api_key_env: str = option(DEFAULT_API_KEY_ENV, "environment variable holding the endpoints' API key", *AN_ENDPOINT)
    request_timeout: float = option(DEFAULT_TIMEOUT_S, "seconds per endpoint request", *AN_ENDPOINT)
    request_retries: int = option(DEFAULT_ATTEMPTS, "attempts per endpoint request (backoff between them)", *AN_ENDPOINT)
    endpoint_workers: int = option(4, "endpoint requests in flight at once", *AN_ENDPOINT)


def option_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(BuildOptions))


def default_of(spec: dataclasses.Field) -> Any:
    return spec.default if spec.default_factory is dataclasses.MISSING else spec.default_factory()


def unused_options(options: BuildOptions) -> list[str]:
    """'--flag (read only by ...)' for each option given a value other than its default where
    nothing reads it."""
    unused = []
    for spec in option_fields():
        used = spec.metadata["used"]
        if used is not None and getattr(options, spec.name) != default_of(spec) and not used(options):
            unused.append(f"--{spec.name} (read only with {spec.metadata['used_when']})")
    return unused


def _check_spec(name: str, value: str, allow_none: bool) -> str | None:
    choices = ("none, " if allow_none else "") + f"{MODEL_PREFIX}PATH or {ENDPOINT_PREFIX}URL"
    if allow_none and value == "none":
        return None
    if value.startswith(MODEL_PREFIX) and value[len(MODEL_PREFIX):].strip():
        return None
    if value.startswith(ENDPOINT_PREFIX):
        url = value[len(ENDPOINT_PREFIX):]
        if url.startswith(("http://", "https://")) and len(url) > len("https://"):
            return None
        return f"--{name} {value}: the endpoint must be an http:// or https:// URL"
    return f"--{name} must be {choices}, got {value!r}"


def check_options(options: BuildOptions) -> None:
    """Raise :class:`OptionsError` naming every option that is wrong, missing or would do nothing
    (files are checked later, by :func:`mcmdpo.build.pipeline.check_inputs`)."""
    problems: list[str] = []
    if not options.output_dir:
        problems.append("--output_dir is required")
    unknown = [stage for stage in options.stages if stage not in STAGES]
    if unknown or not options.stages:
        problems.append(f"--stages takes some of {' '.join(STAGES)}, got {' '.join(options.stages) or 'none'}")
    for spec in option_fields():
        choices = spec.metadata["choices"]
        value = getattr(options, spec.name)
        if choices and spec.name != "stages" and value is not None and value not in choices:
            problems.append(f"--{spec.name} must be one of {', '.join(choices)}, got {value!r}")
    if not unknown:
        problems += [f"{flag} would do nothing here" for flag in unused_options(options)]
        problems += _required(options)
        problems += _values(options)
    if problems:
        raise OptionsError("; ".join(problems))


def _required(options: BuildOptions) -> list[str]:
    required = [
        ("data_path", _runs(options, "collect")),
        ("sampler_model", _runs(options, "sample")),
        ("clip_model", ranks_with(options, "clip")),
        ("judge", ranks_with(options, "judge")),
        ("annotations", ranks_with(options, "human")),
        ("corrector_model_name", endpoint_corrector(options)),
        ("judge_model_name", endpoint_judge(options)),
    ]
    return [f"--{name} is required {_why(name)}" for name, needed in required if needed and not getattr(options, name)]


def _why(name: str) -> str:
    return {"data_path": "by the collect stage", "sampler_model": "by the sample stage", "clip_model": "by --ranker clip",
            "judge": "by --ranker judge", "annotations": "by --ranker human",
            "corrector_model_name": "with --corrector endpoint:URL", "judge_model_name": "with --judge endpoint:URL"}[name]


def _values(options: BuildOptions) -> list[str]:
    problems = []
    checks = [
        ("min_words", options.min_words >= 0, "must be 0 or more"),
        ("max_words", options.max_words >= max(1, options.min_words), "must be at least 1 and --min_words"),
        ("max_edit_ratio", options.max_edit_ratio >= 0, "must be 0 or more"),
        ("correction_batch_size", options.correction_batch_size >= 1, "must be 1 or more"),
        ("num_candidates", options.num_candidates >= 2, "must be 2 or more (a pair needs two candidates to rank)"),
        ("temperature", options.temperature > 0, "must be above 0 (candidates are sampled)"),
        ("top_p", 0 < options.top_p <= 1, "must be in (0, 1]"),
        ("max_new_tokens", options.max_new_tokens >= 1, "must be 1 or more"),
        ("clip_context_weight", options.clip_context_weight >= 0, "must be 0 or more"),
        ("min_margin", options.min_margin >= 0, "must be 0 or more"),
        ("length_balance", options.length_balance is None or options.length_balance >= 1, "must be 1 or more (longer / shorter)"),
        ("request_timeout", options.request_timeout > 0, "must be above 0"),
        ("request_retries", options.request_retries >= 1, "must be 1 or more"),
        ("endpoint_workers", options.endpoint_workers >= 1, "must be 1 or more"),
    ]
    problems += [f"--{name} {message}, got {getattr(options, name)}" for name, ok, message in checks if not ok]
    if _runs(options, "correct"):
        problems += [p for p in [_check_spec("corrector", options.corrector, allow_none=True)] if p]
    if ranks_with(options, "judge") and options.judge:
        problems += [p for p in [_check_spec("judge", options.judge, allow_none=False)] if p]
    return problems


def spec_target(spec: str) -> str:
    """The PATH or URL of ``model:PATH`` / ``endpoint:URL``."""
    return spec.split(":", 1)[1]
