"""Every table and figure of results in README.md and docs/, rendered from the committed JSON.

    python -m benchmarks.docs            (= make docs) rewrite the rendered blocks and figures
    python -m benchmarks.docs --check    exit 1 naming each committed block that differs from a
                                         fresh render of the committed JSON

A rendered block sits between `<!-- rendered: NAME -->` and `<!-- end rendered -->` in a Markdown
file; NAME is one of RENDERERS below, each a function of the metrics and benchmark JSON only (the
machine that measured them comes from the JSON too). Nothing between the markers is typed by hand,
so a re-measurement is a rerun of this command, and a test fails while the committed text differs
from what the committed JSON renders. The check reads both as committed (git's index: staged or
committed), so a user's own `dvc repro`, which rewrites records/ with what their CPU measured,
never makes the docs "stale". Figures go to docs/figures/ and `dvc.yaml`'s artifacts get
their test top-1 and size from records/verify.json the same way.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- rendered: ([\w-]+) -->\n)(.*?)(<!-- end rendered -->)", re.S)
FIGURES = ROOT / "docs" / "figures"


COMMITTED = {"on": False}  # the check reads every page and JSON as committed (see text_of)


def _committed(path: Path) -> str | None:
    """`path` as staged or committed (git's index), or None outside a checkout or the index."""
    try:
        rel = path.relative_to(ROOT).as_posix()
        shown = subprocess.run(
            ["git", "show", f":{rel}"], cwd=ROOT, capture_output=True, check=True
        )
    except (OSError, ValueError, subprocess.CalledProcessError):
        return None
    return shown.stdout.decode()


def text_of(path: Path) -> str:
    """A file's text: as committed for the check, else as it stands in the working tree."""
    committed = _committed(path) if COMMITTED["on"] else None
    return path.read_text() if committed is None else committed


def read(path: str) -> dict[str, Any]:
    """A JSON file of results, by its path from the repository root."""
    return json.loads(text_of(ROOT / path))


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def drop_words(drop: float, reference: str) -> str:
    """A top-1 drop (a fraction; negative when higher) in words: '0.20 points below fp32'."""
    if round(100 * drop, 2) == 0:
        return f"equal to {reference}"
    return f"{abs(100 * drop):.2f} points {'below' if drop > 0 else 'above'} {reference}"


def machine_line(m: dict[str, Any]) -> str:
    """The machine a JSON file says measured it, in one line."""
    listed = m.get("cpu_flags", [])  # a list, or the records' "avx2, fma" string
    flags = (listed if isinstance(listed, str) else ", ".join(listed)) or "flags not recorded"
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    return f"{m.get('cpu', '?')} ({m.get('cores', '?')} cores; {flags}){gpu}, torch {m['torch']}"


# --- the quickstart (README) ---------------------------------------------------------------------


def _objectives(evaluation: dict[str, Any]) -> list[str]:
    return [k.split("/")[0] for k in evaluation if k.endswith("/student/top1")]


def quickstart() -> str:
    """The quickstart's networks and files, from records/ of the committed `dvc repro`."""
    ev, ve, ex = (
        read("records/evaluate.json"),
        read("records/verify.json"),
        read("records/export.json"),
    )
    shipped = ex["selection/objective"]
    rows = [
        "| network | role | params | MACs / image | validation top-1 | test top-1 |",
        "|---|---|---|---|---|---|",
        f"| teacher | pretrained with cross-entropy | {ev['teacher/params']:,} | "
        f"{ev['teacher/macs'] / 1e6:.1f} M | {pct(ev['teacher/val_top1_final'])} | "
        f"{pct(ev['teacher/top1'])} |",
    ]
    for name in _objectives(ev):
        mark = " (**shipped**)" if name == shipped else ""
        rows.append(
            f"| student | `{name}`{mark} | {ev[f'{name}/student/params']:,} | "
            f"{ev[f'{name}/student/macs'] / 1e6:.1f} M | "
            f"{pct(ex[f'selection/{name}/val_top1'])} | {pct(ev[f'{name}/student/top1'])} |"
        )
        if f"{name}/improved_teacher/top1" in ev:
            rows.append(
                f"| improved teacher | `{name}`'s trunk + bridge | "
                f"{ev[f'{name}/improved_teacher/params']:,} | "
                f"{ev[f'{name}/improved_teacher/macs'] / 1e6:.1f} M | "
                f"{pct(read(f'records/distill/{name}.json')['improved_teacher/val_top1'])} | "
                f"{pct(ev[f'{name}/improved_teacher/top1'])} |"
            )
    files = {"onnx": "student.onnx", "int8": "int8/student.int8.onnx"}
    for target, title in (("onnx", "fp32 ONNX"), ("int8", "INT8 ONNX")):
        rows.append(
            f"| `models/{files[target]}` | {title} of the "
            f"shipped student, {ve[f'{target}/file_bytes'] / 1024:.0f} KiB | | | | "
            f"{pct(ve[f'{target}/top1'])} |"
        )
    gain = ev[f"{shipped}/student/top1"] - ev.get("vanilla/student/top1", float("nan"))
    seconds = (
        sum(read(f"records/distill/{n}.json")["time/train_s"] for n in _objectives(ev))
        + ev["teacher/time_train_s"]
    )
    notes = [
        "",
        f"- Shipped: `{shipped}`, {ex['selection/reason']}; {gain * 100:+.2f} test points over "
        f"`vanilla` (one seed: docs/comparison.md has the statistics).",
        f"- The gate: onnxruntime fp32 agrees with torch on {pct(ve['onnx/agreement'])} of the "
        f"{ve['test/images']:,} test images (max |Δlogit| {ve['onnx/max_abs_logit_diff']:.1e}), "
        f"INT8 on {pct(ve['int8/agreement'])}, {drop_words(ve['int8/top1_drop'], 'torch')}; "
        f"the INT8 file is {ve['int8/size_ratio']:.1f}x smaller.",
        f"- Made on {ve['machine/cpu']} ({ve['machine/cores']} cores; "
        f"{ve['machine/cpu_flags']}), torch {ve['versions/torch']}, where training took "
        f"{seconds / 60:.1f} min (`time/train_s` in records/). bf16 results differ slightly "
        "between CPUs with and without AMX; the same seeds on one machine give the same numbers.",
    ]
    return "\n".join(rows + notes) + "\n"


# --- dvc.yaml artifacts -----------------------------------------------------------------------


def artifacts_meta(dvc_yaml: str) -> str:
    """`dvc.yaml` with each artifact's `meta:` line set from records/verify.json."""
    ve, ev = read("records/verify.json"), read("records/evaluate.json")
    shipped = read("records/export.json")["selection/objective"]
    figures = {
        "student": (ve["torch/top1"], ev[f"{shipped}/student/file_bytes"]),
        "student-onnx": (ve["onnx/top1"], ve["onnx/file_bytes"]),
        "student-int8": (ve["int8/top1"], ve["int8/file_bytes"]),
    }
    for name, (top1, size) in figures.items():
        meta = f"meta: {{test_top1: {round(top1, 4)}, bytes: {size}}}"
        pattern = rf"(\n  {re.escape(name)}:\n(?:    .*\n)*?    )meta: .*"
        dvc_yaml = re.sub(pattern, rf"\g<1>{meta}", dvc_yaml)
    return dvc_yaml


# --- presets (docs/presets.md, README.md) ----------------------------------------------------


def _preset_text(stem: str) -> str:
    return text_of(ROOT / "presets" / f"{stem}.yaml")


def presets() -> str:
    """Each preset's header and the `dvc exp run` line that applies it to params.yaml."""
    from pipeline.core.template import exp_run_line, preset_overrides

    current = yaml.safe_load(text_of(ROOT / "params.yaml"))
    parts = []
    for path in sorted((ROOT / "presets").glob("*.yaml")):
        text = _preset_text(path.stem)
        about = " ".join(
            line.removeprefix("#").strip()
            for line in text.splitlines()
            if line.startswith("#") and "An overlay onto" not in line
        )
        line = exp_run_line(path.stem, preset_overrides(yaml.safe_load(text), current))
        parts.append(f"### `presets/{path.name}`\n\n{about}\n\n```bash\n{line}\n```\n")
    return "\n".join(parts)


def preset_photos() -> str:
    """The own-photos preset's values, as the README shows them."""
    body = [ln for ln in _preset_text(PHOTOS).splitlines() if not ln.startswith("#")]
    return "```yaml\n" + "\n".join(body) + "\n```\n"


PHOTOS = "photos_tv_resnet34_mobilenet_v2"


# --- benchmarks (docs/) --------------------------------------------------------------------------


def comparison() -> str:
    """The comparison benchmark: setting, table, verdicts (benchmarks/comparison.json)."""
    from benchmarks.experiments import table, verdicts

    r = read("benchmarks/comparison.json")
    return (
        f"Measured on {machine_line(r['machine'])}: {len(r['rows'])} student runs and one "
        f"teacher, {r['compute_min']:.0f} min of training. Setting: {r['setting']}\n\n"
        "Test top-1 in %, mean ± std over seeds. *Last*: the final weights (what you ship). "
        "*Best*: the best epoch on the test set, as papers quote it (nothing is selected with "
        "it). *SOKD − method*: the mean paired difference with its 95 % t interval.\n\n"
        + table(r)
        + "\n**Verdicts** (last epoch; the interval decides, not the means):\n\n"
        + verdicts(r)
    )


def user_path() -> str:
    """The user-path benchmark (benchmarks/user_path.json)."""
    from benchmarks.experiments import summarise

    r = read("benchmarks/user_path.json")
    return f"Measured on {machine_line(r['machine'])}.\n\n" + summarise(r)


def _speed_rows(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| pair | objective | plain img/s | fast img/s | speed-up | compiled img/s | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['pair']} | {r['objective']} | {r['plain_images_per_s']:,.0f} | "
        f"{r['fast_images_per_s']:,.0f} | {r['speedup']:.2f}x | "
        f"{r['compiled_images_per_s']:,.0f} | {r['compiled_speedup']:.2f}x |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def speed_cpu() -> str:
    """One training step three ways on the CPU (benchmarks/speed.json)."""
    r = read("benchmarks/speed.json")
    m = r["machine"]
    bf16 = "native bf16" if m["native_bf16"] else "no native bf16"
    where = f"{m['cpu']} ({m['threads']} threads, {m['cpu_capability']}, {bf16})"
    fast = read("benchmarks/fast_vs_plain.json")["summary"]
    return (
        f"Measured on {where}, torch {m['torch']}, batch {r['batch_size']}, medians of "
        f"{r['rounds']} alternating rounds:\n\n"
        + _speed_rows(r["rows"])
        + f"\nAccuracy of the two paths (`make bench-accuracy`, SOKD on the quickstart, "
        f"{len(read('benchmarks/fast_vs_plain.json')['seeds'])} seeds): test top-1 "
        f"{100 * fast['fast/test_top1/mean']:.2f} ± {100 * fast['fast/test_top1/std']:.2f} % "
        f"fast, {100 * fast['plain/test_top1/mean']:.2f} ± {100 * fast['plain/test_top1/std']:.2f}"
        " % plain.\n"
    )


def speed_gpu() -> str:
    """`make gpu-check` (benchmarks/gpu.json)."""
    r = read("benchmarks/gpu.json")
    m, parts = r["machine"], r["parts"]
    epoch = parts["epoch"]
    lines = [
        f"Measured on one {m['device']} (torch {m['torch']}, CUDA {m['cuda']}, "
        f"{m['cpu_count']}-core host): parts "
        + ", ".join(f"{name} {part['status']}" for name, part in parts.items())
        + f", {r['total_s']:.0f} s in all.",
        "",
        f"| SOKD epoch, {epoch['pair']}, {epoch['images']:,} images, batch {epoch['batch']} | "
        "seconds | images/s | peak GPU memory |",
        "|---|---|---|---|",
    ]
    for mode in ("eager", "compiled"):
        e = epoch[mode]
        lines.append(
            f"| {mode} ({e['amp']}) | {e['epoch_s']:.2f} | {e['images_per_s']:,.0f} | "
            f"{e['peak_memory_mb']:.0f} MB |"
        )
    return "\n".join(lines) + "\n\n" + _speed_rows(parts["speed"]["rows"])


def int8_files() -> str:
    """The quickstart's shipped student as torch, fp32 ONNX and INT8 (records/verify.json)."""
    ve = read("records/verify.json")
    lines = [
        "| file | bytes | test top-1 | same prediction as torch | max \\|Δlogit\\| |",
        "|---|---|---|---|---|",
        f"| `student.pt` (torch fp32) | — | {pct(ve['torch/top1'])} | — | — |",
    ]
    for target, name in (("onnx", "student.onnx"), ("int8", "student.int8.onnx")):
        lines.append(
            f"| `{name}` | {ve[f'{target}/file_bytes']:,} | {pct(ve[f'{target}/top1'])} | "
            f"{pct(ve[f'{target}/agreement'])} | {ve[f'{target}/max_abs_logit_diff']:.1e} |"
        )
    q = read("records/quantize.json")
    lines += [
        "",
        f"`quantize` on validation: plain INT8 {drop_words(q['int8/val_top1_drop_plain'], 'fp32')}"
        f", agreement {pct(q['int8/val_agreement_plain'])}; {q['int8/fallback_layers']}"
        f" layer(s) kept fp32 by the fallback; {ve['int8/how']}.",
    ]
    return "\n".join(lines) + "\n"


def int8_speed() -> str:
    """fp32 against INT8 under onnxruntime, side by side (benchmarks/int8_speed.json)."""
    r = read("benchmarks/int8_speed.json")
    lines = [
        f"Measured on {machine_line(r['machine'])}, onnxruntime {r['machine']['onnxruntime']}, "
        f"{r['rounds']} alternating rounds:",
        "",
        "| threads | batch | fp32 images/s | INT8 images/s | INT8 speed-up | p10–p90 |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {x['threads']} | {x['batch']} | {x['fp32_images_per_s']:,.0f} | "
        f"{x['int8_images_per_s']:,.0f} | {x['int8_speedup']:.2f}x | "
        f"{x['int8_speedup_p10']:.2f}–{x['int8_speedup_p90']:.2f} |"
        for x in r["rows"]
    ]
    return "\n".join(lines) + "\n"


def int8_format() -> str:
    """QDQ against QOperator, quantized and timed side by side (benchmarks/int8_format.json)."""
    r = read("benchmarks/int8_format.json")
    names = {"fp32": "fp32", "qoperator": "QOperator", "qdq": "QDQ"}
    lines = [
        f"Measured on {machine_line(r['machine'])}, onnxruntime {r['machine']['onnxruntime']}; "
        "`quantize` at the defaults but the format, test split:",
        "",
        "| student | file | accepted | fp32 layers | bytes | top-1 | drop (points) | agreement |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in r["students"]:
        for name, a in s["accuracy"].items():
            q = s["quantize"].get(name, {})
            verdict = "—" if name == "fp32" else ("yes" if q["accepted"] else "refused")
            layers = q.get("int8/fp32_layer_count", "—")
            lines.append(
                f"| {s['label']} ({s['arch']}) | {names[name]} | {verdict} | {layers} | "
                f"{a['bytes']:,} | {pct(a['test_top1'])} | {100 * a['test_top1_drop']:+.2f} | "
                f"{pct(a['test_agreement'])} |"
            )
    lines += [
        "",
        "Milliseconds per call, the three files in alternating rounds; QDQ's speed-up over "
        "QOperator is the median of per-round ratios (p10–p90):",
        "",
        "| student | threads | batch | fp32 ms | QOperator ms | QDQ ms | QDQ over QOperator |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in r["students"]:
        for x in s["speed"]:
            lo, hi = x.get("qdq_vs_qoperator_p10_p90", (0.0, 0.0))
            ratio = f"{x['qdq_vs_qoperator']:.2f}x ({lo:.2f}–{hi:.2f})" if lo else "—"
            ms = [f"{x[f'{n}_ms']:.2f}" if f"{n}_ms" in x else "—" for n in names]
            lines.append(
                f"| {s['label']} | {x['threads']} | {x['batch']} | {' | '.join(ms)} | {ratio} |"
            )
    both = [s for s in r["students"] if {"qdq", "qoperator"} <= set(s["accuracy"])]
    same = sum(
        s["accuracy"]["qdq"]["test_top1"] == s["accuracy"]["qoperator"]["test_top1"] for s in both
    )
    larger = [s["accuracy"]["qdq"]["bytes"] / s["accuracy"]["qoperator"]["bytes"] - 1 for s in both]
    ratios = [x["qdq_vs_qoperator"] for s in both for x in s["speed"]]
    if both:
        lines += [
            "",
            f"Where both formats were accepted ({len(both)} of {len(r['students'])} students): "
            f"the same test top-1 on {same}; the QDQ file {100 * min(larger):.0f}–"
            f"{100 * max(larger):.0f} % larger; QDQ's speed-up over QOperator between "
            f"{min(ratios):.2f}x and {max(ratios):.2f}x across threads and batch sizes.",
        ]
    return "\n".join(lines) + "\n"


def _per_student(
    students: list[dict], key: str, label: Callable[[dict], str], cell: Callable[[dict], str]
) -> list[str]:
    """One table row per entry of each student's `key` list: `label` of the first student's
    entry, then `cell` of every student's entry at that place."""
    return [
        f"| {label(row)} | " + " | ".join(cell(s[key][i]) for s in students) + " |"
        for i, row in enumerate(students[0][key])
    ]


def int8_calibration() -> str:
    """Plain INT8 under each calibration and weight granularity, and the fallback under each layer
    ranking (benchmarks/int8_fallback.json)."""
    r = read("benchmarks/int8_fallback.json")
    students = r["students"]
    head = " | ".join(f"{s['arch']} ({s['val_images']:,} val)" for s in students)
    lines = [
        f"Measured on {machine_line(r['machine'])}. Plain INT8 (stem and classifier fp32, no "
        "fallback): agreement with fp32 on validation / test, and how many activation ranges "
        "differ from minmax's:",
        "",
        f"| calibration | weights | {head} |",
        "|---|---|" + "---|" * len(students),
        *_per_student(
            students,
            "calibration",
            lambda row: (
                f"{row['calibrate_method']} | "
                f"{'per channel' if row['per_channel'] else 'per tensor'}"
            ),
            lambda c: (
                f"{pct(c['val_agreement'])} / {pct(c['test_agreement'])} "
                f"({c['ranges_unlike_minmax']} of {c['tensors']})"
            ),
        ),
        "",
        "`quantize` at the defaults under each `quantize.rank` (validation agreement of the file "
        "it kept or, refused, of the best it reached; fp32 layers including stem and classifier; "
        "builds):",
        "",
        f"| rank | {head} |",
        "|---|" + "---|" * len(students),
        *_per_student(
            students,
            "fallback",
            lambda row: row["rank"],
            lambda f: (
                f"{'accepted' if f['accepted'] else 'refused'}, "
                f"{pct(f['int8/val_agreement'])}, {f['int8/fp32_layer_count']} fp32, "
                f"{f['int8/quantize_builds']} builds"
            ),
        ),
    ]
    return "\n".join(lines) + "\n"


def _ship_label(student: dict) -> str:
    """`pair, budget, seed s, objective` from a user-path ship's path (work/<pair>/<budget>/
    <seed>/<objective>/student.pt)."""
    pair, budget, seed, objective = Path(student["student"]).parts[-5:-1]
    return f"{pair} {budget} s{seed} {objective}"


def int8_ships() -> str:
    """Calibration and ranking on the user-path benchmark's shipped students
    (benchmarks/int8_ships.json, written by benchmarks.int8_fallback)."""
    r = read("benchmarks/int8_ships.json")
    ships = r["students"]
    shown = [("minmax", True), ("percentile", True), ("minmax", False), ("entropy_2048", True)]

    def plain(s: dict, method: str, per_channel: bool) -> dict:
        return next(
            c
            for c in s["calibration"]
            if c["calibrate_method"] == method and c["per_channel"] is per_channel
        )

    def ranked(s: dict, rank: str) -> dict:
        return next(f for f in s["fallback"] if f["rank"] == rank)

    def fallback(f: dict) -> str:
        verdict = "accepted" if f["accepted"] else "refused"
        return f"{verdict}, {f['int8/fp32_layer_count']} fp32, {f['int8/quantize_builds']} builds"

    head = " | ".join(f"{m} {'per channel' if c else 'per tensor'}" for m, c in shown)
    lines = [
        f"Measured on {machine_line(r['machine'])}: the user-path benchmark's {len(ships)} shipped "
        "students (one per pair, budget and seed; 1,000 validation photos). Plain INT8 agreement "
        "with fp32, validation / test, then `quantize` at the defaults under each `quantize.rank`:",
        "",
        f"| ship | student | {head} | rank error | rank agreement |",
        "|---|---|" + "---|" * (len(shown) + 2),
    ]
    for s in ships:
        cells = [
            f"{pct(c['val_agreement'])} / {pct(c['test_agreement'])}"
            for c in (plain(s, m, pc) for m, pc in shown)
        ]
        ranks = [fallback(ranked(s, k)) for k in ("error", "agreement")]
        lines.append(f"| {_ship_label(s)} | {s['arch']} | {' | '.join(cells + ranks)} |")

    def val(s: dict, shown_at: int) -> float:
        return plain(s, *shown[shown_at])["val_agreement"]

    def wins(a: int, b: int) -> str:  # how often shown[a] beats and trails shown[b] on val
        up, down = (sum(val(s, x) > val(s, y) for s in ships) for x, y in ((a, b), (b, a)))
        return f"above on {up} of {len(ships)} ships, below on {down}"

    fewer = sum(
        ranked(s, "agreement")["int8/fp32_layer_count"]
        < ranked(s, "error")["int8/fp32_layer_count"]
        for s in ships
    )
    accepted = sum(
        ranked(s, "error")["accepted"] and ranked(s, "agreement")["accepted"] for s in ships
    )
    lines += [
        "",
        f"Against per-channel `minmax` on validation, `percentile`: {wins(1, 0)}; per-tensor "
        f"weights: {wins(2, 0)}; `entropy_2048`: {wins(3, 0)}. Both rankings accept {accepted} "
        f"of {len(ships)}; ranking by agreement needs fewer fp32 layers on {fewer}.",
    ]
    return "\n".join(lines) + "\n"


def int8_margin() -> str:
    """The classifier's precision and quantize's margin on the user-path ships
    (benchmarks/int8_margin.json)."""
    from benchmarks.int8_margin import head_table, margin_table
    from pipeline.core.config import Params

    r = read("benchmarks/int8_margin.json")
    min_agreement = Params().verify.int8.min_agreement  # the default gate the rows were held to
    defaults = (Params().quantize.agreement_margin_se, Params().quantize.drop_margin_se)
    rows = {h: [x for x in r["head"] if x["fp32_head"] is h] for h in (False, True)}

    def summary(h: bool) -> str:
        test = [x["test_agreement"] for x in rows[h]]
        passed = sum(x["verify_passed"] for x in rows[h])
        return (
            f"{passed} of {len(test)} pass `verify` on test, agreement {pct(sum(test) / len(test))}"
            f" on average and {pct(min(test))} at the lowest"
        )

    lines = [
        f"Measured on {machine_line(r['machine'])}. Plain INT8 (no fallback) of every shipped "
        f"student: with the classifier in fp32, {summary(True)}; with it quantized, "
        f"{summary(False)}.",
        "",
        head_table(r["head"]),
        "",
    ]
    for agreement, drop in r["settings"]:
        at = [
            x
            for x in r["rows"]
            if (x["agreement_margin_se"], x["drop_margin_se"]) == (agreement, drop)
        ]
        got = [x for x in at if x["accepted"]]
        failed = [x for x in got if not x["verify_passed"]]
        on_drop = sum("top-1 is" in x["reason"] for x in at if not x["accepted"])
        on_agreement = sum(x["test_agreement"] < min_agreement for x in failed)
        lines.append(
            f"- margins {agreement:g} (agreement), {drop:g} (top-1 drop)"
            f"{', the defaults' if (agreement, drop) == defaults else ''}: {len(got)} of {len(at)} "
            f"accepted, {len(at) - len(got)} "
            f"refused ({on_drop} on the top-1 drop); {len(failed)} of those accepted then failed "
            f"`verify` on test ({on_agreement} on agreement)."
        )
    return "\n".join([*lines, "", margin_table(r["rows"])]) + "\n"


def short_runs() -> str:
    """SOKD's variants on short runs of two pairs (benchmarks/short_runs.json)."""
    from benchmarks.paired import paired

    r = read("benchmarks/short_runs.json")
    lines = [f"Measured on {machine_line(r['machine'])}. {r['provenance']}", ""]
    for name, g in r["grids"].items():
        res = g["results"]
        base = {i: 100 * row["test"] for i, row in enumerate(res["vanilla"])}
        lines += [
            f"**{name}** (teacher test top-1 {pct(g['teacher_top1']['test'])}):",
            "",
            "| variant | settings | test top-1 | − vanilla, paired | seeds ahead |",
            "|---|---|---|---|---|",
        ]
        for variant, rows in res.items():
            tests = [100 * row["test"] for row in rows]
            mean = sum(tests) / len(tests)
            std = (sum((t - mean) ** 2 for t in tests) / max(1, len(tests) - 1)) ** 0.5
            objective, knobs = g["variants"][variant]
            how = objective + "".join(f", {k}={v}" for k, v in knobs.items())
            c = None if variant == "vanilla" else paired(dict(enumerate(tests)), base)
            versus = (
                f"{c.mean:+.2f} [{c.low:+.2f}, {c.high:+.2f}] | {c.wins}/{c.n}" if c else "— | —"
            )
            lines.append(f"| {variant} | {how} | {mean:.2f} ± {std:.2f} | {versus} |")
        lines.append("")
    return "\n".join(lines)


def short_runs_trace() -> str:
    """The first steps of SOKD, with and without the warm-up (benchmarks/short_runs.json)."""
    t = read("benchmarks/short_runs.json")["trace"]
    lines = [
        f"`{t['teacher']}` → `{t['student']}`, 3 epochs: validation top-1 every few steps (the "
        "student's with batch statistics) and the weighted loss terms of that step; "
        "`sokd_no_warmup` is the paper's setting, `sokd` the default (a one-epoch ramp):",
        "",
        "| run | step | bridge | student | loss | student/kl_bridge | bridge/kl_student | "
        "bridge/kl_teacher |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in ("sokd_no_warmup", "sokd"):
        measured = [(i, r) for i, r in enumerate(t[run]["steps"]) if "val/bridge" in r]
        picked = dict(measured[:4] + measured[4::8] + measured[-1:])  # early steps, then sparse
        lines += [
            f"| `{run}` | {i} | {pct(r['val/bridge'])} | {pct(r['val/student'])} | "
            f"{r['loss']:.2f} | {r['student/kl_bridge']:.2f} | {r['bridge/kl_student']:.2f} | "
            f"{r['bridge/kl_teacher']:.2f} |"
            for i, r in picked.items()
        ]
    finals = ", ".join(
        f"`{run}` {pct(t[run]['val_top1_final'])}" for run in ("sokd_no_warmup", "sokd")
    )
    return "\n".join(lines) + f"\n\nThe students' final validation top-1: {finals}.\n"


def short_runs_comparison() -> str:
    """SOKD with and without the warm-up on the comparison's budget, paired over seeds."""
    from benchmarks.paired import paired

    c = read("benchmarks/short_runs.json")["comparison_check"]
    (old, before), (new, after) = c["test_top1_last"].items()
    diff = paired(
        {int(k): 100 * v for k, v in after.items()}, {int(k): 100 * v for k, v in before.items()}
    )
    mean = {label: 100 * sum(v.values()) / len(v) for label, v in c["test_top1_last"].items()}
    return (
        f"On the comparison's budget ({c['setting'].split(' Seeds')[0]}) and "
        f"{machine_line(c['machine'])}: SOKD with {new} {mean[new]:.2f} %, with {old} "
        f"{mean[old]:.2f} % test top-1 (means over {diff.n} seeds); the default minus the paper: "
        f"{diff.mean:+.2f} points, 95 % paired interval [{diff.low:+.2f}, {diff.high:+.2f}], "
        f"ahead on {diff.wins} of {diff.n} seeds.\n"
    )


def budget_front() -> str:
    """The budget preset's run (benchmarks/budget_front.json): every candidate as profile timed
    it, every trained student, what shipped and why, and verify's verdict."""
    f = read("benchmarks/budget_front.json")
    limits = ", ".join(f"`{k}: {v}`" for k, v in f["budget"].items() if v and k != "threads")
    lines = [
        f"`dvc exp run -n {f['experiment']}` (the preset's line above), budget {limits}; "
        f"measured on {machine_line(f['machine'])}.",
        "",
        "| candidate | INT8 p90 ms | INT8 bytes | MACs / image | profile's verdict |",
        "|---|---|---|---|---|",
    ]
    for arch, c in f["candidates"].items():
        verdict = "within budget" if c["within_budget"] else f"over: {c['over_budget']}"
        lines.append(
            f"| `{arch}` | {c['int8_p90_ms']:.3f} | {c['bytes']:,} | {c['macs'] / 1e6:.1f} M "
            f"| {verdict} |"
        )
    lines += [
        "",
        "| student | validation top-1 | test top-1 | INT8 p90 ms (profile) | why not shipped |",
        "|---|---|---|---|---|",
    ]
    for name, st in f["students"].items():
        why = "**shipped**" if name == f["shipped"] else st["why_not"]
        lines.append(
            f"| `{name}` | {pct(st['val_top1'])} | {pct(st['test_top1'])} | "
            f"{st['int8_p90_ms']:.3f} | {why} |"
        )
    v = f["verify"]
    verdict = "met" if v["budget/passed"] else f"missed ({v['budget/failures']})"
    lines += [
        "",
        f"`verify`: the shipped {v['budget/file']} file measured {v['budget/latency_p90_ms']:.3f}"
        f" ms p90 and {v['budget/bytes']:,} bytes: budget {verdict}; gate "
        f"{'passed' if v['gate/passed'] else 'failed'}.",
        "",
        "![Validation top-1 of every trained student against its INT8 file's p90 latency; the "
        "budget dashed, the shipped student starred](figures/budget_front.png)",
    ]
    return "\n".join(lines) + "\n"


BUDGET_BENCHMARKS = (("budget_fmnist", "Fashion-MNIST"), ("budget_photos", "Photo folders"))


def budget_benchmark() -> str:
    """The budget benchmark (benchmarks/budget_fmnist.json, budget_photos.json): per budget,
    how often the shipped file met it, the shipped student against the oracle and the default."""
    from benchmarks.budget_search import table

    lines = []
    for name, title in BUDGET_BENCHMARKS:
        r = read(f"benchmarks/{name}.json")
        seeds = sorted({c["seed"] for c in r["cells"].values()})
        some = next(iter(r["cells"].values()))
        candidates = ", ".join(f"`{a}`" for a in some["candidates"])
        cut = f" Cells not run: {', '.join(r['missing'])}." if r.get("missing") else ""
        lines += [
            f"**{title}**: candidates {candidates}; `distill.arch` `{some['default_arch']}`; "
            f"seeds {seeds}; measured on {machine_line(r['machine'])}.{cut}",
            "",
            table(r),
        ]
    return "\n".join(lines)


RENDERERS: dict[str, Callable[[], str]] = {
    "budget-front": budget_front,
    "budget-benchmark": budget_benchmark,
    "quickstart": quickstart,
    "presets": presets,
    "preset-photos": preset_photos,
    "comparison": comparison,
    "user-path": user_path,
    "speed-cpu": speed_cpu,
    "speed-gpu": speed_gpu,
    "int8-files": int8_files,
    "int8-speed": int8_speed,
    "int8-format": int8_format,
    "int8-calibration": int8_calibration,
    "int8-ships": int8_ships,
    "int8-margin": int8_margin,
    "short-runs": short_runs,
    "short-runs-trace": short_runs_trace,
    "short-runs-comparison": short_runs_comparison,
}


def render_text(text: str) -> str:
    """`text` with every rendered block rendered afresh."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in RENDERERS:
            raise SystemExit(f"error: unknown rendered block {name!r}; known: {list(RENDERERS)}")
        return match.group(1) + RENDERERS[name]() + match.group(4)

    return BLOCK.sub(fill, text)


def rendered_files(committed: bool = False) -> dict[Path, tuple[str, str]]:
    """Every file this command writes: (its fresh text, its text now), figures aside;
    `committed`: both from the committed pages and JSON."""
    COMMITTED["on"] = committed
    try:
        files = {path: render_text(text_of(path)) for path in DOCS}
        dvc_yaml = ROOT / "dvc.yaml"
        files[dvc_yaml] = artifacts_meta(text_of(dvc_yaml))
        current = {path: text_of(path) for path in files}
    finally:
        COMMITTED["on"] = False
    return {path: (text, current[path]) for path, text in files.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report differences, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for path, (text, current) in rendered_files(committed=args.check).items():
        if text != current:
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(text)
    if not args.check:
        from benchmarks.figures import draw_all

        draw_all(FIGURES)
    if args.check and stale:
        print(f"stale: {', '.join(stale)}; run `make docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
