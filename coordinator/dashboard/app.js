// premem dashboard: the browser side. Plain ES2020, no build step, no
// framework; charts by the vendored ECharts (vendor/echarts.min.js, the
// global `echarts`). It polls the coordinator's JSON API:
//
//   GET /api/overview                every 2 s
//   GET /api/jobs/<name>/heatmap     every 5 s, for each job card that is open
//
// Authentication is the cookie the coordinator set when the page was opened
// with ?token=…; a 401 stops polling and says so. Every string from the API
// goes into the page through textContent (or, for chart tooltips, which
// ECharts renders as HTML, through escapeHtml): never as markup.
"use strict";

(() => {
  const OVERVIEW_URL = "/api/overview";
  const heatmapUrl = (job) => "/api/jobs/" + encodeURIComponent(job) + "/heatmap";
  const OVERVIEW_EVERY_MS = 2000;
  const HEATMAP_EVERY_MS = 5000;
  const FETCH_TIMEOUT_MS = 10000;
  const NOT_SIGNED_IN = "not signed in: open the URL with ?token=… that premem printed";
  const FORBIDDEN = "not allowed: the token this browser signed in with may not read the dashboard (HTTP 403)";

  // Line colours: P-M, train accuracy, test accuracy, test perplexity.
  const COLORS = ["#2563eb", "#16a34a", "#ea580c", "#7c3aed"];
  // Viridis, so that 0 (dark) and "no row yet" (blank) never look alike.
  const HEAT_COLORS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];

  const STATE_CLASS = {
    "waiting for ranks": "waiting",
    training: "training",
    evaluating: "evaluating",
    complete: "complete",
    "stopped early": "stopped",
    cancelled: "cancelled",
    failed: "failed",
  };

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- helpers

  /** An element: props are attributes (class, text, dataset, on<event>
   *  handled specially); children are nodes or strings (as text). */
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v == null || v === false) continue;
        if (k === "class") e.className = v;
        else if (k === "text") e.textContent = String(v);
        else if (k === "dataset") Object.assign(e.dataset, v);
        else if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, v === true ? "" : String(v));
      }
    }
    for (const c of children.flat()) {
      if (c == null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function setText(e, text) {
    const s = String(text);
    if (e.textContent !== s) e.textContent = s;
  }

  function setClass(e, cls) {
    if (e.className !== cls) e.className = cls;
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  const isNum = (x) => typeof x === "number" && Number.isFinite(x);

  /** 0.125 → "12.5 %"; null → "—". */
  function pct(x) {
    return isNum(x) ? (x * 100).toFixed(1) + " %" : "—";
  }

  /** Axis labels: 0.35 → "35 %", 0.375 → "37.5 %". */
  function pctAxis(v) {
    const p = Math.round(v * 1000) / 10;
    return (Number.isInteger(p) ? p.toFixed(0) : p.toFixed(1)) + " %";
  }

  function fixed(x, digits) {
    return isNum(x) ? x.toFixed(digits) : "—";
  }

  function int(x) {
    return isNum(x) ? Math.round(x).toLocaleString("en-US") : "—";
  }

  /** Learning rates: 0.001 → "1e-3", 0.00025 → "2.5e-4", 0.1 → "0.1". */
  function lr(x) {
    if (!isNum(x)) return "—";
    if (x !== 0 && Math.abs(x) < 0.01) return x.toExponential().replace("e+", "e");
    return String(x);
  }

  function duration(s) {
    if (!isNum(s)) return "—";
    s = Math.max(0, s);
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    const t = Math.floor(s);
    const d = Math.floor(t / 86400);
    const h = Math.floor((t % 86400) / 3600);
    const m = Math.floor((t % 3600) / 60);
    const sec = t % 60;
    const two = (n) => String(n).padStart(2, "0");
    if (d > 0) return `${d} d ${two(h)} h`;
    if (h > 0) return `${h} h ${two(m)} min`;
    return `${m} min ${two(sec)} s`;
  }

  function ago(s) {
    return isNum(s) ? duration(s) + " ago" : "—";
  }

  function clock(date) {
    const two = (n) => String(n).padStart(2, "0");
    return `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
  }

  /** The newest checkpoint (by step) whose `field` is a number, or null. */
  function latestValue(checkpoints, field) {
    let best = null;
    for (const c of checkpoints || []) {
      if (c && isNum(c[field]) && (best === null || c.step > best.step)) best = c;
    }
    return best ? best[field] : null;
  }

  function sortedCheckpoints(job) {
    return (job.checkpoints || []).filter((c) => c && isNum(c.step)).slice().sort((a, b) => a.step - b.step);
  }

  function stateBadgeClass(state) {
    return "badge state-" + (STATE_CLASS[state] || "unknown");
  }

  /** Keeps `container`'s children in the order of `items`, one per key:
   *  creates the missing, updates all, removes the stale. */
  function syncKeyed(container, cache, items, key, create, update, remove) {
    const seen = new Set();
    let prev = null;
    for (const item of items) {
      const k = key(item);
      if (seen.has(k)) continue;
      seen.add(k);
      let entry = cache.get(k);
      if (!entry) {
        entry = create(item);
        cache.set(k, entry);
      }
      // in place before the update, so that charts can measure their size
      const node = entry.node;
      const want = prev ? prev.nextSibling : container.firstChild;
      if (want !== node) container.insertBefore(node, want);
      update(entry, item);
      prev = node;
    }
    for (const [k, entry] of cache) {
      if (!seen.has(k)) {
        if (remove) remove(entry);
        entry.node.remove();
        cache.delete(k);
      }
    }
  }

  // ----------------------------------------------------------------- charts

  const charts = new Set();
  const haveECharts = () => typeof window.echarts === "object" && window.echarts !== null;

  /** A chart that is created on first need (its element must be laid out)
   *  and updated with setOption only when its input changed. */
  class LazyChart {
    constructor(node) {
      this.node = node;
      this.chart = null;
      this.signature = null;
      this.pending = null;
    }
    /** Sets the option for `signature` (a string of its input); applies it
     *  now when the chart is shown, else when it is. */
    update(signature, makeOption) {
      if (signature === this.signature && this.pending === null) return;
      this.signature = signature;
      this.pending = makeOption;
      this.flush();
    }
    flush() {
      if (this.pending === null || !haveECharts() || !this.visible()) return;
      if (!this.chart) {
        this.chart = window.echarts.init(this.node);
        charts.add(this);
      }
      const make = this.pending;
      this.pending = null;
      const { option, opts } = make();
      this.chart.setOption(option, opts || {});
    }
    visible() {
      // (Chromium lays out a closed <details>'s content, just hidden)
      return !this.node.closest("details:not([open])") && this.node.offsetWidth > 0 && this.node.offsetHeight > 0;
    }
    resize() {
      if (this.chart && this.visible()) this.chart.resize();
    }
    dispose() {
      if (this.chart) this.chart.dispose();
      this.chart = null;
      charts.delete(this);
    }
  }

  function resizeCharts() {
    for (const c of charts) c.resize();
  }

  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(resizeCharts, 80);
  });

  const baseText = { fontFamily: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", color: "#334155" };

  function lineOption(job) {
    const cps = sortedCheckpoints(job);
    const pts = (field) => cps.map((c) => [c.step, isNum(c[field]) ? c[field] : null]);
    const line = (name, field, color, extra) => ({
      name,
      type: "line",
      data: pts(field),
      connectNulls: true,
      symbol: "circle",
      symbolSize: 6,
      lineStyle: { width: 2, color },
      itemStyle: { color },
      emphasis: { focus: "series" },
      ...extra,
    });
    return {
      option: {
        textStyle: baseText,
        animationDurationUpdate: 300,
        color: COLORS,
        tooltip: {
          trigger: "axis",
          axisPointer: { type: "line" },
          formatter: (params) => {
            const list = Array.isArray(params) ? params : [params];
            if (list.length === 0) return "";
            const step = (list[0].value || [])[0];
            const rows = list.map((p) => {
              const v = (p.value || [])[1];
              const shown = p.seriesName === "test perplexity" ? fixed(v, 3) : pct(v);
              return `${p.marker}${escapeHtml(p.seriesName)} <b class="tip-value">${escapeHtml(shown)}</b>`;
            });
            return [`step ${escapeHtml(int(step))}`, ...rows].join("<br>");
          },
        },
        legend: { top: 0, left: "center", itemWidth: 18, itemHeight: 10, textStyle: { fontSize: 12 } },
        grid: { left: 56, right: 62, top: 38, bottom: 46 },
        xAxis: {
          type: "value",
          name: "step",
          nameLocation: "middle",
          nameGap: 28,
          min: 0,
          minInterval: 1,
          splitLine: { show: false },
        },
        yAxis: [
          {
            type: "value",
            min: 0,
            max: 1,
            interval: 0.25,
            axisLabel: { formatter: pctAxis },
            splitLine: { lineStyle: { color: "#e2e8f0" } },
          },
          {
            type: "value",
            name: "perplexity",
            nameTextStyle: { color: COLORS[3], fontSize: 11 },
            scale: true,
            position: "right",
            axisLabel: { color: COLORS[3], formatter: (v) => fixed(v, 2) },
            splitLine: { show: false },
          },
        ],
        series: [
          line("P-M", "pm", COLORS[0], { lineStyle: { width: 3, color: COLORS[0] }, z: 5 }),
          line("train accuracy", "train_accuracy", COLORS[1]),
          line("test accuracy", "test_accuracy", COLORS[2]),
          line("test perplexity", "test_perplexity", COLORS[3], {
            yAxisIndex: 1,
            lineStyle: { width: 2, type: "dashed", color: COLORS[3] },
            symbol: "emptyCircle",
          }),
        ],
      },
    };
  }

  function heatmapOption(hm) {
    const steps = hm.steps || [];
    const examples = hm.examples || [];
    const acc = hm.accuracy || [];
    const data = [];
    for (let y = 0; y < examples.length; y++) {
      const row = acc[y] || [];
      for (let x = 0; x < steps.length; x++) {
        const v = row[x];
        if (isNum(v)) data.push([x, y, v]);
      }
    }
    const many = examples.length > 60;
    return {
      option: {
        textStyle: baseText,
        animation: false,
        tooltip: {
          trigger: "item",
          formatter: (p) => {
            const [x, y, v] = p.data || [];
            return `${escapeHtml(examples[y] ?? "")}<br>step ${escapeHtml(steps[x] ?? "")}: <b>${escapeHtml(pct(v))}</b>`;
          },
        },
        grid: { left: many ? 24 : 96, right: 16, top: 8, bottom: 78 },
        xAxis: {
          type: "category",
          data: steps.map(String),
          name: "step",
          nameLocation: "middle",
          nameGap: 26,
          splitArea: { show: false },
          axisTick: { show: false },
        },
        yAxis: {
          type: "category",
          data: examples,
          inverse: true,
          name: many ? `${examples.length} examples, earliest learned on top` : "",
          nameLocation: "middle",
          nameGap: 8,
          nameTextStyle: { fontSize: 11, color: "#64748b" },
          axisTick: { show: false },
          axisLine: { show: false },
          axisLabel: { show: !many, fontSize: 10, color: "#64748b" },
        },
        visualMap: {
          type: "continuous",
          min: 0,
          max: 1,
          orient: "horizontal",
          left: "center",
          bottom: 0,
          itemWidth: 12,
          itemHeight: 160,
          text: ["100 %", "0 %"],
          textGap: 8,
          textStyle: { fontSize: 11, color: "#64748b" },
          calculable: false,
          inRange: { color: HEAT_COLORS },
          formatter: pctAxis,
        },
        series: [
          {
            type: "heatmap",
            data,
            progressive: 4000,
            emphasis: { itemStyle: { borderColor: "#0f172a", borderWidth: 1 } },
          },
        ],
      },
      opts: { notMerge: true },
    };
  }

  /** Axis bounds a little outside the data (so points and labels are not
   *  cut) on a round step: {min, max, interval}, within 0..1. */
  function niceBounds(values) {
    let lo = Math.min(...values);
    let hi = Math.max(...values);
    const pad = Math.max((hi - lo) * 0.15, 0.02);
    lo = Math.max(0, lo - pad);
    hi = Math.min(1, hi + pad);
    const steps = [0.01, 0.02, 0.05, 0.1, 0.2, 0.25];
    const interval = steps.find((st) => (hi - lo) / st <= 6) ?? 0.25;
    const round = (v) => Math.round(v * 1e6) / 1e6;
    return {
      min: Math.max(0, round(Math.floor(lo / interval) * interval)),
      max: Math.min(1, round(Math.ceil(hi / interval) * interval)),
      interval,
    };
  }

  function scatterOption(group) {
    const points = (group.points || []).filter((p) => p && isNum(p.pm) && isNum(p.test_accuracy));
    const xb = points.length ? niceBounds(points.map((p) => p.pm)) : { min: 0, max: 1, interval: 0.25 };
    const yb = points.length ? niceBounds(points.map((p) => p.test_accuracy)) : { min: 0, max: 1, interval: 0.25 };
    return {
      option: {
        textStyle: baseText,
        animationDurationUpdate: 300,
        tooltip: {
          trigger: "item",
          formatter: (p) => {
            const d = p.data || {};
            const [x, y] = d.value || [];
            let s = `<b>${escapeHtml(d.name ?? "")}</b><br>P-M ${escapeHtml(pct(x))}<br>test accuracy ${escapeHtml(pct(y))}`;
            if (isNum(d.lr)) s += `<br>lr ${escapeHtml(lr(d.lr))}`;
            if (isNum(d.epochs)) s += `, ${escapeHtml(d.epochs)} epochs`;
            return s;
          },
        },
        grid: { left: 64, right: 48, top: 24, bottom: 50 },
        xAxis: {
          type: "value",
          name: "P-M",
          nameLocation: "middle",
          nameGap: 28,
          ...xb,
          axisLabel: { formatter: pctAxis, hideOverlap: true },
          splitLine: { lineStyle: { color: "#e2e8f0" } },
        },
        yAxis: {
          type: "value",
          name: "test accuracy",
          nameLocation: "middle",
          nameGap: 48,
          ...yb,
          axisLabel: { formatter: pctAxis, hideOverlap: true },
          splitLine: { lineStyle: { color: "#e2e8f0" } },
        },
        series: [
          {
            type: "scatter",
            symbolSize: 12,
            itemStyle: { color: COLORS[0], opacity: 0.85 },
            data: points.map((p) => ({ name: String(p.job), value: [p.pm, p.test_accuracy], lr: p.lr, epochs: p.epochs })),
            label: { show: true, position: "top", distance: 6, formatter: (p) => p.name, fontSize: 11, color: "#334155" },
            labelLayout: { hideOverlap: true },
            emphasis: { scale: 1.4 },
          },
        ],
      },
      opts: { notMerge: true },
    };
  }

  // --------------------------------------------------------------- job card

  const jobViews = new Map(); // name -> JobView
  const jobRows = new Map(); // name -> {node, cells}
  let autoOpened = false;

  class JobView {
    constructor(name) {
      this.name = name;
      this.job = null;
      this.heatmapBusy = false;
      this.heatmapLoaded = false;

      const testid = (id, cls) => el("span", { class: cls, dataset: { testid: id, job: name } }, "—");
      this.title = el("span", { class: "card-title", text: name });
      this.groupTag = el("span", { class: "group-tag", hidden: true });
      this.badge = testid("state", "badge");
      this.pm = testid("pm-latest", "pm-value");
      this.test = testid("test-latest", "stat-value");
      this.stepText = el("span", { class: "stat-value" }, "—");

      const summary = el(
        "summary",
        { class: "card-head" },
        el("span", { class: "chevron", "aria-hidden": "true" }),
        el("span", { class: "card-name" }, this.title, this.groupTag),
        this.badge,
        el(
          "span",
          { class: "head-stats" },
          el("span", { class: "stat stat-pm" }, el("span", { class: "stat-label", text: "P-M" }), this.pm),
          el("span", { class: "stat" }, el("span", { class: "stat-label", text: "test acc." }), this.test),
          el("span", { class: "stat" }, el("span", { class: "stat-label", text: "step" }), this.stepText),
        ),
      );

      this.message = el("p", { class: "job-message", hidden: true });
      this.facts = el("dl", { class: "facts" });

      this.lineEl = el("div", { class: "chart chart-line", "aria-label": `P-M, train and test accuracy of ${name}` });
      this.lineEmpty = el("p", { class: "chart-empty", text: "no checkpoint evaluated yet" });
      this.heatEl = el("div", { class: "chart chart-heatmap", "aria-label": `learning progression of ${name}'s train examples` });
      this.heatEmpty = el("p", { class: "chart-empty", text: "no train example evaluated yet" });
      this.line = new LazyChart(this.lineEl);
      this.heat = new LazyChart(this.heatEl);

      this.advice = el("div", { class: "advice-list" });
      this.trainerFacts = el("dl", { class: "facts compact" });
      this.rankBody = el("tbody");
      this.rankTable = el(
        "table",
        { class: "data small" },
        el("thead", null, el("tr", null, el("th", { text: "rank" }), el("th", { class: "num", text: "step" }), el("th", { class: "num", text: "last heartbeat" }), el("th", { class: "num", text: "tokens / s" }))),
        this.rankBody,
      );
      this.trainerEmpty = el("p", { class: "empty", text: "no trainer group", hidden: true });

      this.cpBody = el("tbody");
      this.cpCount = el("span", { class: "subtle" });
      const cpHead = ["step", "eval tasks", "P-M", "train acc.", "memorized", "test acc.", "test ppl.", "distinct"];
      this.cpTable = el(
        "table",
        { class: "data small" },
        el("thead", null, el("tr", null, cpHead.map((h, i) => el("th", { class: i === 0 ? null : "num", text: h })))),
        this.cpBody,
      );

      const body = el(
        "div",
        { class: "card-body" },
        this.message,
        this.facts,
        el(
          "div",
          { class: "chart-grid" },
          el("div", { class: "chart-box" }, el("h3", { text: "Accuracy over checkpoints" }), el("div", { class: "chart-holder" }, this.lineEl, this.lineEmpty)),
          el(
            "div",
            { class: "chart-box" },
            el("h3", { text: "Learning progression of the train examples" }),
            el("div", { class: "chart-holder" }, this.heatEl, this.heatEmpty),
          ),
        ),
        el(
          "div",
          { class: "info-grid" },
          el("div", { class: "box" }, el("h3", { text: "Advice" }), this.advice),
          el("div", { class: "box" }, el("h3", { text: "Trainers" }), this.trainerFacts, this.rankTable, this.trainerEmpty),
        ),
        el("div", { class: "box" }, el("h3", null, "Checkpoints ", this.cpCount), el("div", { class: "scroll" }, this.cpTable)),
      );

      this.node = el("details", { class: "card job-card", dataset: { job: name } }, summary, body);
      this.node.addEventListener("toggle", () => this.onToggle());
    }

    get open() {
      return this.node.open;
    }

    onToggle() {
      const row = jobRows.get(this.name);
      if (row) row.node.classList.toggle("selected", this.open);
      if (this.open) {
        this.flushCharts();
        refreshHeatmap(this);
      }
    }

    flushCharts() {
      this.line.flush();
      this.heat.flush();
      this.line.resize();
      this.heat.resize();
    }

    update(job) {
      this.job = job;
      if (job.group) {
        this.groupTag.hidden = false;
        setText(this.groupTag, job.group);
      } else {
        this.groupTag.hidden = true;
      }
      setText(this.badge, job.state ?? "unknown");
      setClass(this.badge, stateBadgeClass(job.state));
      const cps = sortedCheckpoints(job);
      setText(this.pm, pct(latestValue(cps, "pm")));
      setText(this.test, pct(latestValue(cps, "test_accuracy")));
      setText(this.stepText, `${int(job.step)} / ${int(job.total_steps)}`);

      // failure or stop reason
      const msg = job.message ? String(job.message) : "";
      this.message.hidden = msg === "";
      setText(this.message, msg);
      setClass(this.message, "job-message" + (job.state === "failed" ? " is-error" : ""));

      const tasks = job.tasks || {};
      const evaluated = cps.filter((c) => isNum(c.pm)).length;
      renderFacts(this.facts, [
        ["learning rate", lr(job.lr)],
        ["epochs", int(job.epochs)],
        ["progress", isNum(job.total_steps) && job.total_steps > 0 && isNum(job.step) ? pct(job.step / job.total_steps) : "—"],
        ["eval tasks", `${int(tasks.pending)} pending · ${int(tasks.leased)} leased · ${int(tasks.done)} done`],
        ["checkpoints", `${cps.length} (${evaluated} with P-M)`],
      ]);

      // line chart
      const hasLine = cps.some((c) => ["pm", "train_accuracy", "test_accuracy", "test_perplexity"].some((f) => isNum(c[f])));
      this.lineEmpty.hidden = hasLine;
      const lineSig = JSON.stringify([job.total_steps, cps.map((c) => [c.step, c.pm, c.train_accuracy, c.test_accuracy, c.test_perplexity])]);
      this.line.update(lineSig, () => lineOption(job));

      this.renderAdvice(job.advice);
      this.renderTrainers(job.trainers);
      this.renderCheckpoints(cps);

      if (this.open) this.flushCharts();
    }

    renderAdvice(advice) {
      const a = advice || {};
      const sig = JSON.stringify([a.findings, a.keep, a.stop]);
      if (this.adviceSig === sig) return;
      this.adviceSig = sig;
      const items = [];
      const findings = Array.isArray(a.findings) ? a.findings : [];
      if (a.stop) {
        items.push(el("div", { class: "advice-stop", dataset: { testid: "advice-stop" } }, el("strong", { text: "stopped early: " }), String(a.stop)));
      }
      for (const f of findings) {
        const text = f && f.text != null ? String(f.text) : String(f && f.rule ? f.rule : "");
        items.push(el("div", { class: "advice-warning", role: "note", dataset: { testid: "advice", rule: f && f.rule ? String(f.rule) : "" } }, text));
      }
      if (findings.length === 0) items.push(el("p", { class: "advice-none", dataset: { testid: "advice-none" }, text: "no warnings" }));
      if (a.keep) {
        const text = typeof a.keep === "object" ? (a.keep.text ?? (isNum(a.keep.step) ? `keep step ${a.keep.step}` : "")) : String(a.keep);
        if (text) items.push(el("div", { class: "advice-keep", dataset: { testid: "advice-keep" } }, String(text)));
      }
      this.advice.replaceChildren(...items);
    }

    renderTrainers(t) {
      if (!t) {
        this.trainerFacts.hidden = true;
        this.rankTable.hidden = true;
        this.trainerEmpty.hidden = false;
        return;
      }
      this.trainerFacts.hidden = false;
      this.trainerEmpty.hidden = true;
      renderFacts(this.trainerFacts, [
        ["world size", int(t.world_size)],
        ["ranks alive", `${int(t.ranks_alive)} / ${int(t.world_size)}`],
        ["generation", int(t.generation)],
      ]);
      const ranks = Array.isArray(t.ranks) ? t.ranks.slice().sort((a, b) => a.rank - b.rank) : [];
      this.rankTable.hidden = ranks.length === 0;
      this.rankBody.replaceChildren(
        ...ranks.map((r) =>
          el(
            "tr",
            { class: isNum(r.last_seen_s) && r.last_seen_s > 30 ? "is-stale" : null },
            el("td", { text: int(r.rank) }),
            el("td", { class: "num", text: int(r.step) }),
            el("td", { class: "num", text: ago(r.last_seen_s) }),
            el("td", { class: "num", text: int(r.tokens_per_s) }),
          ),
        ),
      );
    }

    renderCheckpoints(cps) {
      setText(this.cpCount, `(${cps.length})`);
      const rows = cps.slice().reverse();
      this.cpBody.replaceChildren(
        ...rows.map((c) =>
          el(
            "tr",
            null,
            el("td", { text: int(c.step) }),
            el("td", { class: "num", text: `${int(c.tasks_done)} / ${int(c.tasks_total)}` }),
            el("td", { class: "num strong", text: pct(c.pm) }),
            el("td", { class: "num", text: pct(c.train_accuracy) }),
            el("td", { class: "num", text: pct(c.memorized_fraction) }),
            el("td", { class: "num", text: pct(c.test_accuracy) }),
            el("td", { class: "num", text: fixed(c.test_perplexity, 3) }),
            el("td", { class: "num", text: pct(c.distinct_fraction) }),
          ),
        ),
      );
      if (rows.length === 0) this.cpBody.append(el("tr", null, el("td", { colspan: 8, class: "empty", text: "no checkpoints yet" })));
    }

    setHeatmap(hm) {
      const examples = (hm && hm.examples) || [];
      const steps = (hm && hm.steps) || [];
      const any = examples.length > 0 && steps.length > 0 && (hm.accuracy || []).some((row) => (row || []).some(isNum));
      this.heatEmpty.hidden = any;
      // Taller for many examples, so that each keeps a visible row.
      const height = Math.round(Math.min(720, Math.max(360, 110 + examples.length * 1.2)));
      const h = height + "px";
      if (this.heatEl.style.height !== h) {
        this.heatEl.style.height = h;
        this.heat.resize();
      }
      const sig = JSON.stringify([steps, examples, hm && hm.accuracy]);
      this.heat.update(sig, () => heatmapOption(hm || {}));
    }

    dispose() {
      this.line.dispose();
      this.heat.dispose();
    }
  }

  function renderFacts(dl, pairs) {
    const sig = JSON.stringify(pairs);
    if (dl.dataset.sig === sig) return;
    dl.dataset.sig = sig;
    dl.replaceChildren(...pairs.map(([k, v]) => el("div", null, el("dt", { text: k }), el("dd", { text: v }))));
  }

  function openJob(name, scroll) {
    const view = jobViews.get(name);
    if (!view) return;
    if (!view.open) view.node.open = true; // fires "toggle"
    if (scroll) view.node.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  // ------------------------------------------------------------ jobs table

  function createJobRow(job) {
    const name = String(job.name);
    const cells = {
      name: el("td", { class: "name" }, el("button", { type: "button", class: "link", text: name, onclick: (e) => (e.stopPropagation(), openJob(name, true)) })),
      group: el("td", { class: "muted" }),
      state: el("td", null, el("span", { class: "badge" })),
      progressText: el("span", { class: "progress-text" }),
      bar: el("span", { class: "progress-bar" }),
      tasks: el("td", { class: "num" }),
      pm: el("td", { class: "num strong" }),
      test: el("td", { class: "num" }),
    };
    const progress = el("td", { class: "col-progress" }, cells.progressText, el("span", { class: "progress", role: "presentation" }, cells.bar));
    const node = el("tr", { class: "clickable", title: `show ${name}` }, cells.name, cells.group, cells.state, progress, cells.tasks, cells.pm, cells.test);
    node.addEventListener("click", () => openJob(name, true));
    return { node, cells };
  }

  function updateJobRow(row, job) {
    const c = row.cells;
    const cps = sortedCheckpoints(job);
    setText(c.group, job.group ?? "—");
    const badge = c.state.firstChild;
    setText(badge, job.state ?? "unknown");
    setClass(badge, stateBadgeClass(job.state));
    setText(c.progressText, `${int(job.step)} / ${int(job.total_steps)}`);
    const frac = isNum(job.step) && isNum(job.total_steps) && job.total_steps > 0 ? Math.min(1, Math.max(0, job.step / job.total_steps)) : 0;
    const w = (frac * 100).toFixed(1) + "%";
    if (c.bar.style.width !== w) c.bar.style.width = w;
    setClass(c.bar, "progress-bar state-fill-" + (STATE_CLASS[job.state] || "unknown"));
    const t = job.tasks || {};
    setText(c.tasks, `${int(t.pending)} / ${int(t.leased)} / ${int(t.done)}`);
    setText(c.pm, pct(latestValue(cps, "pm")));
    setText(c.test, pct(latestValue(cps, "test_accuracy")));
    const view = jobViews.get(String(job.name));
    row.node.classList.toggle("selected", !!(view && view.open));
  }

  function renderJobs(jobs) {
    $("jobs-empty").hidden = jobs.length > 0;
    let closedByRemoval = false;
    syncKeyed($("jobs-body"), jobRows, jobs, (j) => String(j.name), createJobRow, updateJobRow);
    syncKeyed(
      $("job-cards"),
      jobViews,
      jobs,
      (j) => String(j.name),
      (j) => new JobView(String(j.name)),
      (view, j) => view.update(j),
      (view) => {
        if (view.open) closedByRemoval = true;
        view.dispose();
      },
    );
    // the first job is open at the start, and when the open ones went away
    const noneOpen = ![...jobViews.values()].some((v) => v.open);
    if (jobs.length > 0 && (!autoOpened || (closedByRemoval && noneOpen))) {
      autoOpened = true;
      openJob(String(jobs[0].name), false);
    }
    // rows reflect open cards (the toggle event comes asynchronously)
    for (const [name, row] of jobRows) {
      const v = jobViews.get(name);
      row.node.classList.toggle("selected", !!(v && v.open));
    }
  }

  // ------------------------------------------------------------ evaluators

  function renderEvaluators(evaluators) {
    $("evaluators-empty").hidden = evaluators.length > 0;
    const rows = evaluators.map((e) =>
      el(
        "tr",
        { class: isNum(e.last_seen_s) && e.last_seen_s > 60 ? "is-stale" : null },
        el("td", { class: "name", text: e.name ?? "" }),
        el("td", { class: "num", text: int(e.leases) }),
        el("td", { class: "num", text: int(e.tasks_done) }),
        el("td", { class: "num", text: int(e.rows) }),
        el("td", { class: "num" + (isNum(e.failures) && e.failures > 0 ? " is-bad" : ""), text: int(e.failures) }),
        el("td", { class: "num", text: fixed(e.tasks_per_min, 1) }),
        el("td", { class: "num", text: ago(e.last_seen_s) }),
      ),
    );
    $("evaluators-body").replaceChildren(...rows);
  }

  // ---------------------------------------------------------------- groups

  const groupViews = new Map();

  class GroupView {
    constructor(name) {
      this.name = name;
      this.kind = el("span", { class: "badge kind" });
      this.runs = el("p", { class: "runs" });
      this.chartEl = el("div", { class: "chart chart-scatter", "aria-label": `P-M against test accuracy of ${name}` });
      this.chartEmpty = el("p", { class: "chart-empty", text: "no run evaluated yet" });
      this.chart = new LazyChart(this.chartEl);
      this.advice = el("ul", { class: "group-advice" });
      this.pointBody = el("tbody");
      this.node = el(
        "article",
        { class: "card group-card", dataset: { group: name } },
        el("header", { class: "group-head" }, el("h3", { class: "card-title", text: name }), this.kind),
        el(
          "div",
          { class: "group-grid" },
          el("div", { class: "chart-box" }, el("h4", { text: "P-M vs test accuracy" }), el("div", { class: "chart-holder" }, this.chartEl, this.chartEmpty)),
          el(
            "div",
            null,
            el("h4", { text: "Advice" }),
            this.advice,
            el("h4", { text: "Runs" }),
            this.runs,
            el(
              "div",
              { class: "scroll" },
              el(
                "table",
                { class: "data small" },
                el(
                  "thead",
                  null,
                  el("tr", null, el("th", { text: "run" }), el("th", { class: "num", text: "lr" }), el("th", { class: "num", text: "epochs" }), el("th", { class: "num", text: "P-M" }), el("th", { class: "num", text: "test acc." })),
                ),
                this.pointBody,
              ),
            ),
          ),
        ),
      );
    }

    update(g) {
      setText(this.kind, g.kind ?? "group");
      const points = Array.isArray(g.points) ? g.points : [];
      const plotted = points.filter((p) => p && isNum(p.pm) && isNum(p.test_accuracy));
      this.chartEmpty.hidden = plotted.length > 0;
      this.chart.update(JSON.stringify(points), () => scatterOption(g));

      const adviceSig = JSON.stringify(g.advice);
      if (this.adviceSig !== adviceSig) {
        this.adviceSig = adviceSig;
        const lines = Array.isArray(g.advice) ? g.advice : [];
        this.advice.replaceChildren(...(lines.length ? lines.map((s) => el("li", { dataset: { testid: "group-advice" }, text: String(s) })) : [el("li", { class: "advice-none", text: "no advice yet" })]));
      }

      const runs = Array.isArray(g.runs) ? g.runs.map(String) : [];
      const runSig = JSON.stringify(runs);
      if (this.runSig !== runSig) {
        this.runSig = runSig;
        const parts = [];
        runs.forEach((r, i) => {
          if (i > 0) parts.push(", ");
          parts.push(el("button", { type: "button", class: "link", text: r, onclick: () => openJob(r, true) }));
        });
        if (parts.length === 0) parts.push("none yet");
        this.runs.replaceChildren(...parts);
      }

      const sorted = points.slice().sort((a, b) => (isNum(b.pm) ? b.pm : -1) - (isNum(a.pm) ? a.pm : -1));
      this.pointBody.replaceChildren(
        ...sorted.map((p) =>
          el(
            "tr",
            null,
            el("td", null, el("button", { type: "button", class: "link", text: String(p.job ?? ""), onclick: () => openJob(String(p.job), true) })),
            el("td", { class: "num", text: lr(p.lr) }),
            el("td", { class: "num", text: int(p.epochs) }),
            el("td", { class: "num strong", text: pct(p.pm) }),
            el("td", { class: "num", text: pct(p.test_accuracy) }),
          ),
        ),
      );
    }

    dispose() {
      this.chart.dispose();
    }
  }

  function renderGroups(groups) {
    $("groups-empty").hidden = groups.length > 0;
    syncKeyed(
      $("groups"),
      groupViews,
      groups,
      (g) => String(g.name),
      (g) => new GroupView(String(g.name)),
      (view, g) => view.update(g),
      (view) => view.dispose(),
    );
  }

  // ------------------------------------------------------------- overview

  function renderOverview(data) {
    const co = data.coordinator || {};
    setText($("coordinator-version"), co.version ? "v" + co.version : "—");
    setText($("uptime"), duration(co.uptime_s));
    renderJobs(Array.isArray(data.jobs) ? data.jobs.filter((j) => j && j.name != null) : []);
    renderEvaluators(Array.isArray(data.evaluators) ? data.evaluators.filter(Boolean) : []);
    renderGroups(Array.isArray(data.groups) ? data.groups.filter((g) => g && g.name != null) : []);
  }

  // ------------------------------------------------------------ networking

  class HttpError extends Error {
    constructor(status, url) {
      super(`HTTP ${status} from ${url}`);
      this.status = status;
    }
  }

  async function getJson(url) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const reply = await fetch(url, {
        credentials: "same-origin",
        cache: "no-store",
        headers: { Accept: "application/json" },
        signal: ctl.signal,
      });
      if (!reply.ok) throw new HttpError(reply.status, url);
      return await reply.json();
    } finally {
      clearTimeout(timer);
    }
  }

  let stopped = false;
  let overviewTimer = 0;
  let heatmapTimer = 0;

  function setConnection(kind, text, detail) {
    const c = $("connection");
    setText(c, text);
    setClass(c, "conn conn-" + kind);
    c.title = detail || "";
    document.body.classList.toggle("stale", kind === "lost" || kind === "stopped");
  }

  function showBanner(text, kind) {
    const b = $("banner");
    setText(b, text);
    setClass(b, "banner banner-" + (kind || "error"));
    b.hidden = false;
  }

  /** Hides the banner if it shows a display error (the others stay). */
  function hideRenderError() {
    const b = $("banner");
    if (b.dataset.kind === "render-error") {
      b.hidden = true;
      b.dataset.kind = "";
    }
  }

  /** Stops all polling for good: the cookie is missing or not allowed. */
  function stop(message, kind) {
    stopped = true;
    clearTimeout(overviewTimer);
    clearTimeout(heatmapTimer);
    showBanner(message, "error");
    $("banner").dataset.kind = kind;
    setConnection("stopped", kind === "not-signed-in" ? "not signed in" : "not allowed");
  }

  /** true when the error ended polling. */
  function handleAuth(err) {
    if (err instanceof HttpError && err.status === 401) {
      stop(NOT_SIGNED_IN, "not-signed-in");
      return true;
    }
    if (err instanceof HttpError && err.status === 403) {
      stop(FORBIDDEN, "forbidden");
      return true;
    }
    return false;
  }

  async function pollOverview() {
    if (stopped) return;
    let data = null;
    try {
      data = await getJson(OVERVIEW_URL);
    } catch (err) {
      if (handleAuth(err)) return;
      const why = err instanceof HttpError ? `HTTP ${err.status}` : err && err.name === "AbortError" ? "timed out" : "no reply";
      setConnection("lost", "connection lost, retrying", why);
    }
    if (stopped) return;
    if (data !== null) {
      setConnection("ok", "live");
      setText($("last-update"), clock(new Date()));
      try {
        renderOverview(data);
        hideRenderError();
      } catch (err) {
        console.error("premem dashboard: could not show /api/overview", err);
        showBanner("could not show the coordinator's reply: " + (err && err.message ? err.message : String(err)), "warning");
        $("banner").dataset.kind = "render-error";
      }
    }
    overviewTimer = setTimeout(pollOverview, OVERVIEW_EVERY_MS);
  }

  async function refreshHeatmap(view) {
    if (stopped || view.heatmapBusy || !jobViews.has(view.name)) return;
    view.heatmapBusy = true;
    try {
      const hm = await getJson(heatmapUrl(view.name));
      if (!stopped && jobViews.get(view.name) === view) view.setHeatmap(hm);
    } catch (err) {
      if (handleAuth(err)) return;
      if (err instanceof HttpError && err.status === 404) view.setHeatmap(null);
      // other failures: the overview poll shows the connection state
    } finally {
      view.heatmapBusy = false;
    }
  }

  async function pollHeatmaps() {
    if (stopped) return;
    const open = [...jobViews.values()].filter((v) => v.open);
    for (const v of open) {
      await refreshHeatmap(v);
      if (stopped) return;
    }
    heatmapTimer = setTimeout(pollHeatmaps, HEATMAP_EVERY_MS);
  }

  // ------------------------------------------------------------------ start

  function start() {
    // The token has done its work (the coordinator set the cookie when it
    // served this page): keep it out of the address bar and history.
    try {
      const u = new URL(window.location.href);
      if (u.searchParams.has("token")) {
        u.searchParams.delete("token");
        window.history.replaceState(null, "", u.pathname + u.search + u.hash);
      }
    } catch (_) {
      /* not important */
    }
    if (!haveECharts()) {
      showBanner("the chart library (/dashboard/vendor/echarts.min.js) did not load: charts are not shown", "warning");
      $("banner").dataset.kind = "no-charts";
    }
    pollOverview().then(() => {
      if (!stopped) heatmapTimer = setTimeout(pollHeatmaps, HEATMAP_EVERY_MS);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
