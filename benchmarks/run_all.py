"""Run every benchmark once, each in its own process, then write benchmarks/results/README.md.

Run: python benchmarks/run_all.py [--quick] [--skip load,startup,...] [--summary-only]
--quick uses fewer rounds and images (minutes instead of ~half an hour on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from _common import REPO, RESULTS, machine

HERE = REPO / "benchmarks"


def steps(quick: bool) -> dict[str, list[str]]:
    """Name -> command line of each benchmark."""
    r = ["--rounds", "3" if quick else "5"]
    return {
        "e2e_resnet18": ["bench_e2e.py", "--arch", "resnet18", *r],
        "e2e_resnet14": ["bench_e2e.py", "--arch", "resnet14", *r],
        "engine": ["bench_engine.py", "--rounds", "10" if quick else "30"],
        "int8": ["bench_int8.py", "--n", "100" if quick else "400", "--rounds", "8" if quick else "20"],
        "gradcam": ["bench_gradcam.py", "--rounds", "7" if quick else "15"],
        "efficiency": ["bench_efficiency.py", "--rounds", "9" if quick else "15", "--n", "100" if quick else "500",
                       "--compile"],
        "startup": ["bench_startup.py", "--runs", "2" if quick else "3"],
        "load": ["load_test.py", "--streams", "5", "--visitors", "10", "--requests", "5"],
        "synth": ["bench_synth.py", "--n", "100" if quick else "400"],
        "finetune": ["bench_finetune.py", *(["--n", "120", "--epochs", "4"] if quick else [])],
    }


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _measured_on() -> str:
    """Each result file's CPU, as its JSON records it: "cpu (a, b); other cpu (c)"."""
    where: dict[str, list[str]] = {}
    for path in sorted(RESULTS.glob("*.json")):
        m = json.loads(path.read_text()).get("machine")
        cpu = m.get("cpu", "?") if isinstance(m, dict) else f"not recorded ({m})"
        where.setdefault(cpu, []).append(path.stem)
    return "; ".join(f"{cpu} ({', '.join(names)})" for cpu, names in where.items())


def _reproduce() -> str:
    """The command that writes this folder's results (naming the folder when it is not the default)."""
    if RESULTS == HERE / "results":
        return "python benchmarks/run_all.py"
    where = RESULTS.relative_to(REPO) if RESULTS.is_relative_to(REPO) else RESULTS
    return f"POSTURE_BENCH_RESULTS={where} python benchmarks/run_all.py"


def summary() -> str:
    """The Markdown summary of whatever results exist."""
    m = machine()
    lines = ["# Benchmark results", "",
             f"Machine writing this summary: {m['cpu']}, {m['cores']} cores, {m['torch_threads']} torch threads, "
             f"torch {m['torch']}, CPU capability {m['cpu_capability']}, AVX512-BF16: {m['avx512_bf16']}. "
             f"Where each result was measured: {_measured_on()}. Absolute times drift with "
             "whatever else the machine runs; every ratio below comes from candidates interleaved round by round "
             "in one process (median of per-round ratios).", "",
             f"Reproduce: `{_reproduce()}` (or one script at a time; each writes its JSON here).", ""]
    for arch in ("resnet18", "resnet14"):
        e = _load(f"e2e_{arch}")
        if e:
            s = e["stages"]
            lines += [f"## End to end, {arch} @ {e['input_size']} px (precision {e['precision']})", "",
                      f"12 MP phone JPEG file ({e['photo']}) -> verdict + Grad-CAM overlay JPEG bytes.", "",
                      "| measure | value | target |", "|---|---|---|",
                      f"| ours vs naive tutorial pipeline | **{e['speedup_vs_naive']}x faster** | >= 10x |",
                      f"| ours (JPEG overlay) / bare fp32 forward | **{e['ours_over_bare_forward']}x** | <= 4x |",
                      f"| ours (PNG level 1) / bare fp32 forward | {e['ours_png_over_bare_forward']}x | |",
                      f"| ours with precision=fp32 / bare fp32 forward | {e['ours_fp32_over_bare_forward']}x | |",
                      *([f"| ours from the picture alone (`mirror=False`) / bare fp32 forward | "
                         f"{e['ours_single_view_over_bare_forward']}x | |",
                         f"| ours / ours from the picture alone (the cost of mirror averaging) | {e['mirror_cost']}x | |"]
                        if "mirror_cost" in e else []),
                      f"| same verdict as naive | {sum(v['ours'] == v['naive'] for v in e['verdicts'])}"
                      f"/{len(e['verdicts'])} photos | all |", "",
                      "Stages (median ms): " + ", ".join(f"{k} {v['median_ms']:.1f}" for k, v in s.items()), ""]
    en = _load("engine")
    if en:
        lines += ["## Serving against ONNX Runtime (batch 1, no explanation, same weights)", "",
                  f"CPU: {en['machine']['cpu']} ({en['machine']['cpu_capability']}, native bf16: "
                  f"{en['machine']['avx512_bf16']}); fp32 GEMM {en['gemm_fp32_gflop_per_s']} GFLOP/s. "
                  "ONNX Runtime runs the whole exported model with its default settings; `serving_auto` is what "
                  "`Predictor(precision=\"auto\")` runs here, `serving_fp32` the same with precision fp32. "
                  "Ratio: ONNX Runtime's time over the path's (>= 1: the path is at least as fast).", "",
                  "| model | ONNX Runtime ms | serving auto ms | ratio | serving fp32 ms | ratio | eager fp32 ms | ratio |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in en["cases"]:
            p = c["paths"]
            lines.append(f"| {c['model']} @ {c['input']} px (auto: {c['serving_auto']['backbone']}) | "
                         f"{p['onnxruntime']['median_ms']:.2f} | {p['serving_auto']['median_ms']:.2f} | "
                         f"**{p['serving_auto']['onnxruntime_over_this']}** | {p['serving_fp32']['median_ms']:.2f} | "
                         f"{p['serving_fp32']['onnxruntime_over_this']} | {p['eager_fp32']['median_ms']:.2f} | "
                         f"{p['eager_fp32']['onnxruntime_over_this']} |")
        lines.append("")
    q = _load("int8")
    if q:
        lines += ["## int8 (precision=\"int8\", ONNX Runtime static quantization)", "",
                  "| model | accuracy fp32 | accuracy int8 | verdict agreement | fp32 ms | int8 ms | auto ms | "
                  "int8 vs fp32 | int8 vs auto |", "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {r['model']} @ {r['input']} px | {r['accuracy_fp32']:.1%} | {r['accuracy_int8']:.1%} | "
                  f"{r['verdict_agreement']:.1%} | {r['ms']['fp32']} | {r['ms']['int8']} | {r['ms']['auto']} | "
                  f"{r['int8_speedup_vs_fp32']}x | {r['int8_speedup_vs_auto']}x |" for r in q["models"]]
        lines += ["", f"Rule: {q['rule']}.", ""]
    g = _load("gradcam")
    if g:
        lines += ["## Grad-CAM cost (predict with explanation vs without, same image)", "",
                  "| model / precision | explained layer | predict ms | + explain ms | overhead (target <= 15%) |",
                  "|---|---|---|---|---|"]
        lines += [f"| {k} | {v.get('layer', '')} | {v['plain_ms']:.1f} | {v['explain_ms']:.1f} | {v['overhead']:+.1%} |"
                  for k, v in g["results"].items()]
        lines.append("")
    f = _load("efficiency")
    if f:
        gm = f["gemm"]
        lines += ["## Efficiency: resnet18, batch 1, 224 px", "",
                  f"{f['gflop_per_forward']} GFLOP per forward (FlopCounterMode). Limit: torch.mm {gm['n']}x{gm['n']}: "
                  f"fp32 {gm['fp32_gflop_per_s']} GFLOP/s, bf16 {gm['bf16_gflop_per_s']} GFLOP/s (same run).", "",
                  "| path | ms | GFLOP/s | vs fp32 eager | of fp32 GEMM | of bf16 GEMM |", "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {v['median_ms']:.1f} | {v['gflop_per_s']} | {v['speedup_vs_fp32_eager']}x | "
                  f"{v['of_fp32_gemm']:.0%} | {v['of_bf16_gemm']:.0%} |" for k, v in f["paths"].items()]
        if f.get("torch_compile_first_call_s"):
            lines.append(f"\ntorch.compile first call: {f['torch_compile_first_call_s']} s.")
        a = f.get("agreement")
        if a:
            lines += ["", f"bf16 serving vs fp32 on {a['images']} synthetic images: verdict agreement "
                      f"{a['verdict_agreement']:.1%}, accuracy fp32 {a['accuracy_fp32']:.1%} vs bf16 "
                      f"{a['accuracy_bf16']:.1%} (gap {a['accuracy_gap_points']} points), max probability difference "
                      f"{a['max_probability_diff']}, Grad-CAM Pearson min {a['gradcam_pearson_min']} / median "
                      f"{a['gradcam_pearson_median']} over {a['gradcam_images']} images."]
        lines.append("")
    s = _load("startup")
    if s:
        lines += ["## Start-up", "", "| measure | seconds |", "|---|---|",
                  f"| `python -c \"import posture\"` | {s['import_posture_s']} |",
                  f"| `python -m posture --help` | {s['cli_help_s']} |",
                  f"| `python -c \"import torch, torchvision\"` (floor) | {s['import_torch_torchvision_s']} |",
                  f"| `python app.py` -> first answered /predict (resnet18) | {s['app_to_first_prediction_s']} |", ""]
    ld = _load("load")
    if ld:
        streams = ld.get("streams", 0)
        lines += ["## Load", "",
                  f"{streams} live-monitor streams (resnet14, chromium fake camera, one browser session each) and "
                  f"{ld['visitors']} concurrent gradio_client visitors x {ld['requests_each']} /predict calls "
                  f"({ld['model']}, {ld['photo']}) while a resnet14 training run (started through /train) was "
                  f"{'running throughout' if ld['training_running_throughout'] else 'running (it finished early)'}: "
                  f"answered {ld['answered']}, **errors {ld['errors']}**, p50 {ld['p50_s']} s, p95 {ld['p95_s']} s, "
                  f"max {ld['max_s']} s, {ld['throughput_per_s']} predictions/s."
                  + (f" Streams: {ld['stream_frames_per_s']} frames/s each (lowest {ld['stream_frames_per_s_min']}, "
                     f"{ld['stream_frames_per_s_total']} in all) over the same window." if streams else "")
                  + (f" Chromium and the clients ran at niceness {ld['client_nice']}; over the window the app "
                     f"process kept {ld['cores_busy_app']} cores busy on average, the whole machine "
                     f"{ld['cores_busy_all']}." if "cores_busy_app" in ld else ""), "",
                  "Thread settings: each process uses torch's default of one intra-op thread per core "
                  "(2 here; OMP_NUM_THREADS unset). /predict runs one call at a time and /train one job at a time; "
                  "monitor frames share their own limit (`POSTURE_MAX_STREAMS`, 8), so the streams are judged side "
                  "by side while visitors queue. Chromium, the app and the visitors' clients share the 2 cores.", ""]
    lines += _targets()
    for name in ("synth", "finetune"):
        extra = _load(name)
        if extra:
            lines += [f"## {name}", "", "```", json.dumps({k: v for k, v in extra.items() if k != 'machine'},
                                                           indent=1)[:1500], "```", ""]
    log = RESULTS / "synth.txt"
    if log.is_file():
        lines += ["## synth", "", "```", log.read_text().strip(), "```", ""]
    return "\n".join(lines)


def _targets() -> list[str]:
    """The speed and agreement targets, met or not, with the reason where one is missed."""
    e, g, f, ld = _load("e2e_resnet18"), _load("gradcam"), _load("efficiency"), _load("load")
    rows = []
    for arch in ("resnet18", "resnet14"):
        e = _load(f"e2e_{arch}")
        if not e:
            continue
        same = sum(v["ours"] == v["naive"] for v in e["verdicts"])
        rows.append((f"e2e >= 10x faster than naive ({arch})", e["speedup_vs_naive"] >= 10, f"{e['speedup_vs_naive']}x"))
        rows.append((f"e2e within 4x bare forward ({arch})", e["ours_over_bare_forward"] <= 4,
                     f"{e['ours_over_bare_forward']}x"
                     + ("" if e["ours_over_bare_forward"] <= 4 else
                        f": out of reach for this file and model: decoding the 12 MP JPEG at libjpeg's smallest "
                        f"draft scale (1/8) takes {e.get('decode_floor_over_bare_forward')}x this model's bare forward, "
                        f"and with the prediction itself (letterbox, forward, Grad-CAM) "
                        f"{e.get('floor_over_bare_forward')}x, before any overlay is drawn")))
        rows.append((f"same verdict as naive ({arch})", same == len(e["verdicts"]),
                     f"{same}/{len(e['verdicts'])}" + ("" if same == len(e["verdicts"]) else
                     ": the naive pipeline stretches the photo to a square, which can flip low-confidence verdicts")))
    en = _load("engine")
    if en:
        for c in en["cases"]:
            r = c["paths"]["serving_auto"]["onnxruntime_over_this"]
            rows.append((f"serving at least as fast as ONNX Runtime ({c['model']} @ {c['input']} px, "
                         f"{en['machine']['cpu_capability']})", r >= 1.0, f"{r}x"))
        big = next((c for c in en["cases"] if c["model"] == "resnet18" and c["input"] == 224), None)
        if big:
            share = big["paths"]["serving_fp32"]["of_fp32_gemm"]
            rows.append(("resnet18 @ 224 px fp32 serving >= 75% of the fp32 GEMM rate (a target for AVX2 CPUs)",
                         share >= 0.75, f"{share:.0%} on this {en['machine']['cpu_capability']} CPU"))
    q = _load("int8")
    if q:
        for r in q["models"]:
            built = r["backends"]["int8"] == "onnxruntime-int8"
            rows.append((f"int8 >= 1.3x fp32, accuracy within 0.5 points ({r['model']})", r["kept"] and built,
                         f"{r['int8_speedup_vs_fp32']}x, {r['accuracy_gap_points']} points" + ("" if built else
                         f": the quantized model failed serving's build check, so int8 serves {r['backends']['int8']}")))
    if g:
        for key, v in g["results"].items():
            why = "" if v["overhead"] <= 0.15 else (
                f": explained at {v.get('layer', 'the last stage')}; Captum's LayerGradCam on the head after it "
                f"(eager fp32, forward and backward) costs {v['captum_call_ms']} ms beyond the head's forward, "
                f"{v['captum_floor_overhead']:+.1%} of this prediction")
            rows.append((f"Grad-CAM adds <= 15% ({key})", v["overhead"] <= 0.15, f"{v['overhead']:+.1%}{why}"))
    if f:
        s = f["paths"]["bf16_serving"]
        a = f.get("agreement") or {}
        rows.append(("serving path >= 1.5x fp32 eager", s["speedup_vs_fp32_eager"] >= 1.5, f"{s['speedup_vs_fp32_eager']}x"))
        rows.append((">= 70% of bf16 GEMM rate", s["of_bf16_gemm"] >= 0.7,
                     f"{s['of_bf16_gemm']:.0%} (torch.compile "
                     f"{f['paths'].get('bf16_torch_compile', {}).get('of_bf16_gemm', 0):.0%})"))
        if a:
            rows.append(("bf16 accuracy within 0.5 points of fp32", a["accuracy_gap_points"] <= 0.5,
                         f"{a['accuracy_gap_points']} points, {a['verdict_agreement']:.1%} agreement"))
            rows.append(("bf16 Grad-CAM Pearson >= 0.99", (a["gradcam_pearson_min"] or 0) >= 0.99,
                         f"min {a['gradcam_pearson_min']}"))
    if ld:
        rows.append(("load: zero errors (streams, visitors and training at once)", ld["errors"] == 0,
                     f"{ld['errors']} errors, p95 {ld['p95_s']} s"
                     + (f", streams >= {ld['stream_frames_per_s_min']} frames/s" if ld.get("streams") else "")))
    out = ["## Targets", "", "| target | met | measured |", "|---|---|---|"]
    out += [f"| {t} | {'yes' if ok else '**no**'} | {m} |" for t, ok, m in rows]
    return out + [""]


def main() -> None:
    """Run the selected benchmarks, then write the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip", default="", help="comma-separated names to skip")
    parser.add_argument("--only", default="", help="comma-separated names to run")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    skip, only = set(filter(None, args.skip.split(","))), set(filter(None, args.only.split(",")))
    failed = []
    if not args.summary_only:
        for name, cmd in steps(args.quick).items():
            if name in skip or (only and name not in only):
                continue
            print(f"== {name}: {' '.join(cmd)}", flush=True)
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]], cwd=REPO,
                                  capture_output=True, text=True, env={**__import__("os").environ,
                                                                       "PYTHONPATH": str(REPO)})
            print(proc.stdout[-3000:], proc.stderr[-2000:] if proc.returncode else "", flush=True)
            if name == "synth" and proc.returncode == 0:  # bench_synth prints, it writes no JSON
                (RESULTS / "synth.txt").write_text(proc.stdout)
            if proc.returncode:
                failed.append(name)
            print(f"   {name}: {time.perf_counter() - start:.0f} s, exit {proc.returncode}", flush=True)
    (RESULTS / "README.md").write_text(summary())
    print(f"wrote {RESULTS / 'README.md'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
