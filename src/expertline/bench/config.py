"""``expertline bench config``: a large configuration, imported and turned into match sets.

Generates a realistic document (at scale 1.0: 100,000 experts with sparse proficiencies over
20 skills, languages, a region, a certification flag and seniority; 1,000 queues with varied
selections, a third of them escalating), then measures:

- the import a user runs (``config import``): YAML parse + validation, then the atomic apply
  into the database, through the configuration store;
- in a fresh process, as a runtime would: loading the applied document, building the
  eligibility index over every queue and escalation step, materializing the match sets and
  the routing core's config; that process's own peak RSS (so the import's memory does not
  hide in it, nor it in the import's);
- incremental updates: one expert's attributes changing, one queue's selection changing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from expertline.bench.common import (
    BenchOptions,
    BenchResult,
    Stopwatch,
    current_rss_mb,
    peak_rss_mb,
    percentile,
)

SKILLS = [f"skill_{i:02d}" for i in range(20)]
LANGUAGES = ["en", "es", "fr", "de", "it", "pt", "ja", "zh"]
LANGUAGE_WEIGHTS = [60, 25, 15, 12, 6, 8, 4, 5]
REGIONS = ["amer", "latam", "emea", "emea-north", "apac", "apac-south", "anz", "india"]
FULL_EXPERTS = 100_000
FULL_QUEUES = 1_000
# Queues whose selection uses a function outside the vectorized subset (`matches`), so the
# per-expert fallback is exercised and its cost shows up in the figures.
FALLBACK_QUEUES = 1


def generate(experts: int, queues: int, seed: int = 7) -> dict[str, Any]:
    """A valid configuration document as plain data (what YAML would parse into)."""
    rng = random.Random(seed)
    doc: dict[str, Any] = {
        "attributes": [
            *({"name": s, "type": "proficiency"} for s in SKILLS),
            {"name": "language", "type": "list", "values": LANGUAGES},
            {"name": "region", "type": "string"},
            {"name": "certified", "type": "boolean"},
            {"name": "seniority", "type": "number"},
        ],
        "experts": [],
        "queues": [],
        "entry_points": [],
        "presence": [
            {
                "id": "corp-xmpp",
                "kind": "xmpp",
                "jid": "router@example.test",
                "password_env": "EXPERTLINE_XMPP_PASSWORD",
                "host": "127.0.0.1",
                "port": 5222,
            }
        ],
    }
    for i in range(experts):
        attrs: dict[str, Any] = {
            s: rng.randint(1, 100) for s in rng.sample(SKILLS, rng.randint(2, 6))
        }
        langs = {"en"} if rng.random() < 0.7 else set()
        langs.update(rng.choices(LANGUAGES, LANGUAGE_WEIGHTS, k=rng.randint(0, 2)))
        if not langs:
            langs = {"en"}
        attrs["language"] = sorted(langs)
        attrs["region"] = rng.choice(REGIONS)
        if rng.random() < 0.3:
            attrs["certified"] = True
        attrs["seniority"] = round(rng.uniform(0, 30), 1)
        doc["experts"].append(
            {
                "id": f"e{i:06d}",
                "name": f"Expert {i}",
                "im": f"e{i:06d}@example.test",
                "phone": f"sip:{1_000_000 + i}@pbx.example.test",
                "attributes": attrs,
                "max_tasks": 1 + (i % 7 == 0),
            }
        )
    orders = ["longest_idle", "most_skilled", "least_busy", "round_robin", "random"]
    for q in range(queues):
        skill, other = rng.sample(SKILLS, 2)
        lang = rng.choices(LANGUAGES, LANGUAGE_WEIGHTS)[0]
        region, region2 = rng.sample(REGIONS, 2)
        low = rng.randrange(10, 50, 5)
        high = rng.randrange(50, 95, 5)
        # Each selection has one proficiency threshold {t}; escalation steps widen the
        # selection by lowering it, as a supervisor would ("billing >= 70" -> 50 -> 30).
        if q < FALLBACK_QUEUES:
            template = f"region.matches('^(emea|apac)') && {skill} >= {{t}}"
        else:
            template = rng.choice(
                [
                    f"{skill} >= {{t}} && '{lang}' in language",
                    f"{skill} >= {{t}} && region == '{region}' && certified",
                    f"({skill} >= {{t}} || {other} >= {{t}}) && '{lang}' in language",
                    f"seniority >= {rng.randint(1, 15)}.0 && {skill} > {{t}}",
                    f"language.exists(l, l in ['{lang}', 'de']) && {skill} >= {{t}}",
                    f"size(language) >= 2 && {skill} >= {{t}}",
                    f"region in ['{region}', '{region2}'] && {skill} + {other} >= {{t}} + {low}",
                    f"region.startsWith('{region[:3]}') && {skill} >= {{t}} && !certified",
                    f"{skill} >= {{t}} && ('{lang}' in language || seniority > 20.0)",
                ]
            )
        select = template.format(t=high)
        queue: dict[str, Any] = {
            "id": f"q{q:04d}",
            "name": f"Queue {q}",
            "select": select,
            "order": (order := rng.choice(orders)),
            "offer_to": rng.choice([1, 1, 1, 2, 3, "all"]),
            "offer_timeout": "20s",
            "max_wait": f"{rng.choice([60, 120, 300])}s",
            "priority": rng.choice([0, 0, 0, 1, 5]),
        }
        if order == "most_skilled" or rng.random() < 0.2:
            queue["skill"] = skill
        if rng.random() < 0.35:
            steps = [{"after": "30s", "select": template.format(t=max(1, high - 20))}]
            if rng.random() < 0.5:
                steps.append({"after": "90s", "select": template.format(t=low)})
            queue["escalate"] = steps
        if q + 1 < queues and rng.random() < 0.3:
            queue["on_max_wait"] = {"overflow": f"q{q + 1:04d}"}
        elif rng.random() < 0.3:
            queue["on_max_wait"] = {"label": "sip:agents@cc.example.test"}
        doc["queues"].append(queue)
        doc["entry_points"].append({"dialed_number": f"+1800555{q:04d}", "queue": queue["id"]})
    return doc


def run(options: BenchOptions) -> BenchResult:
    from expertline.config.store import apply_document
    from expertline.config.validate import check_yaml
    from expertline.db import migrate
    from expertline.db.engine import make_engine

    experts = max(10, round(FULL_EXPERTS * options.scale))
    queues = max(FALLBACK_QUEUES + 2, round(FULL_QUEUES * options.scale))
    sizes = f"{experts:,} experts, {queues:,} queues"
    result = BenchResult("config")
    load = os.getloadavg()[0]
    result.notes.append(
        f"load average at start {load:.1f} on {os.cpu_count()} CPUs: wall times include any "
        "contention; CPU-time rows do not"
    )

    text = yaml.dump(generate(experts, queues), Dumper=yaml.CSafeDumper, sort_keys=False)
    with tempfile.TemporaryDirectory(prefix="expertline-bench-") as tmp:
        url = options.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
        backend = url.split(":", 1)[0].split("+", 1)[0]
        engine = make_engine(url)
        migrate.upgrade(engine)

        sw, cpu = Stopwatch(), time.process_time()
        doc, problems = check_yaml(text)
        parsed, parsed_cpu = sw.seconds(), time.process_time() - cpu
        if doc is None:
            raise RuntimeError(f"generated document is invalid: {problems[:3]}")
        applied = apply_document(engine, doc, actor="bench", source="bench")
        total, total_cpu = sw.seconds(), time.process_time() - cpu
        result.add(
            "import: YAML parse + validate",
            parsed,
            "s",
            context=f"{sizes}, {len(text) / 1e6:.0f} MB YAML",
        )
        result.add(
            "import: apply to database",
            total - parsed,
            "s",
            context=f"{backend}, {applied.added:,} objects",
        )
        result.add("import total (config import)", total, "s", "<= 20", sizes)
        result.add(
            "import, CPU time",
            total_cpu,
            "s",
            context=f"parse + validate {parsed_cpu:.1f} s, apply {total_cpu - parsed_cpu:.1f} s",
        )
        result.add("RSS after import (import process)", current_rss_mb(), "MiB")
        result.add("peak RSS (import process)", _own_peak_rss_mb(), "MiB")
        del doc, text
        engine.dispose()

        ctx = mp.get_context("spawn")
        receiver, sender = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_runtime_side, args=(url, sender), daemon=True)
        child.start()
        sender.close()
        if not receiver.poll(600):
            child.kill()
            raise RuntimeError("the eligibility process gave no result within 600 s")
        figures: dict[str, Any] = receiver.recv()
        child.join(30)

    result.add("CEL grammar tables (once per process)", figures["warm_s"], "s")
    result.add("load applied document (runtime process)", figures["load_s"], "s", context=backend)
    result.add("RSS with the document loaded", figures["rss_loaded"], "MiB")
    result.add(
        "eligibility build, every queue and step",
        figures["build_s"],
        "s",
        "<= 5",
        f"{experts:,} experts x {figures['selections']:,} distinct selections",
    )
    result.add(
        "eligibility build, CPU time", figures["build_cpu"], "s", context="same, CPU seconds"
    )
    result.add("match sets + routing config", figures["config_s"], "s", context="frozensets, specs")
    result.add("match sets + routing config, CPU", figures["config_cpu"], "s")
    result.add(
        "peak RSS (runtime process)",
        figures["peak_rss"],
        "MiB",
        "<= 1024",
        "load + index + routing config",
    )
    result.add(
        "RSS growth for index + routing config", figures["rss_after"] - figures["rss_loaded"], "MiB"
    )
    result.add(
        "selections vectorized",
        figures["vectorized"],
        "count",
        context=f"of {figures['selections']:,}",
    )
    result.add("queues on the per-expert fallback", figures["fallback_queues"], "count")
    result.add(
        "average match-set size", figures["avg_match"], "experts", context="per queue and step"
    )
    result.add(
        "expert update (p50)",
        figures["update_p50_ms"],
        "ms",
        context=f"{figures['updates']} random attribute changes",
    )
    result.add("expert update (p99)", figures["update_p99_ms"], "ms")
    result.add(
        "queue selection change (mean)",
        figures["set_queue_ms"],
        "ms",
        context="new text, full column evaluation",
    )
    result.add(
        "unchanged re-sync of the index",
        figures["resync_s"],
        "s",
        context="a new version with nothing changed",
    )
    if figures["fallback_reasons"]:
        result.notes.append("fallback: " + "; ".join(figures["fallback_reasons"]))
    return result


def _own_peak_rss_mb() -> float:
    """This process's own high-water RSS. ``ru_maxrss`` survives exec on Linux, so a spawned
    child would report its parent's peak; the kernel's per-address-space VmHWM does not."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def _runtime_side(url: str, sender: Any) -> None:
    """Runs in a fresh process: what a runtime node does with the applied configuration."""
    from expertline.config.store import load_document
    from expertline.db.engine import make_engine
    from expertline.eligibility import EligibilityIndex, warm_up
    from expertline.eligibility.build import build_routing_config

    engine = make_engine(url)
    sw = Stopwatch()
    warm_up()  # once per process, like the imports: the CEL grammar's parse tables
    warm_s = sw.seconds()
    sw = Stopwatch()
    version, doc = load_document(engine)
    load_s = sw.seconds()
    rss_loaded = current_rss_mb()

    sw, cpu = Stopwatch(), time.process_time()
    index = EligibilityIndex.from_document(doc)
    build_s, build_cpu = sw.seconds(), time.process_time() - cpu
    sw, cpu = Stopwatch(), time.process_time()
    config = build_routing_config(doc, version, index)
    config_s, config_cpu = sw.seconds(), time.process_time() - cpu
    rss_after = current_rss_mb()
    selections, vectorized = index.selection_count()
    sizes = [len(s) for steps in config.matches.values() for s in steps]

    sw = Stopwatch()
    index.sync(doc)
    resync_s = sw.seconds()

    rng = random.Random(11)
    latencies = []
    expert_ids = index.expert_ids
    for _ in range(500):
        eid = rng.choice(expert_ids)
        attrs = dict(doc.expert_map[eid].attributes)
        attrs[rng.choice(SKILLS)] = rng.randint(1, 100)
        started = time.perf_counter()
        index.update_expert(eid, attrs)
        latencies.append((time.perf_counter() - started) * 1000)
    queue_ids = index.queue_ids[FALLBACK_QUEUES:]
    started = time.perf_counter()
    changed = 0
    for qid in rng.sample(queue_ids, min(20, len(queue_ids))):
        index.set_queue(qid, [f"{rng.choice(SKILLS)} >= {rng.randint(1, 99)} && certified"])
        changed += 1
    set_queue_ms = (time.perf_counter() - started) * 1000 / max(1, changed)
    fallback = index.fallback_queues()
    sender.send(
        {
            "load_s": load_s,
            "warm_s": warm_s,
            "rss_loaded": rss_loaded,
            "build_s": build_s,
            "build_cpu": build_cpu,
            "config_s": config_s,
            "config_cpu": config_cpu,
            "rss_after": rss_after,
            "peak_rss": _own_peak_rss_mb(),
            "selections": selections,
            "vectorized": vectorized,
            "fallback_queues": len(fallback),
            "fallback_reasons": sorted({f"{q}: {r}" for q, r in fallback.items()})[:5],
            "avg_match": sum(sizes) / max(1, len(sizes)),
            "updates": len(latencies),
            "update_p50_ms": percentile(latencies, 50),
            "update_p99_ms": percentile(latencies, 99),
            "set_queue_ms": set_queue_ms,
            "resync_s": resync_s,
        }
    )
    sender.close()
