"""A small self-contained sample page, served by each modality's BentoML server at ``/ui/``.

One HTML document with inline CSS and JS (no CDN, nothing fetched but the server's own
endpoints): a person picks a lineage and an iteration in each of two panels — a replace lineage
beside an accumulate lineage by default — asks for samples and sees them side by side, with the
model card of what answered. The page knows nothing of modalities: a service describes its
sample endpoint, the request fields to offer and how to show the answer in a :class:`PageSpec`:
``texts`` (a numbered list of strings), ``table`` (rows of numbers) or ``images`` (one base64
PNG of the answer, shown as an ``<img>`` from a ``data:`` URL — no image is fetched).

The page calls ``POST /models`` (the lineages, their trained iterations and the start-up
model) and ``POST <endpoint>`` with ``lineage``/``iteration`` set per panel.
"""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

from pydantic import BaseModel, Field

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


class Control(BaseModel):
    """One request field offered on the page (sent when not empty)."""

    name: str
    label: str
    kind: Literal["int", "float", "text"]
    default: int | float | str | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    help: str = ""


class PageSpec(BaseModel):
    """What a service's page asks for and how it shows the answer."""

    title: str
    intro: str = ""
    endpoint: str = Field(pattern=r"^/[A-Za-z0-9_/-]*$", description="the sample endpoint, e.g. /sample")
    controls: list[Control]
    render: Literal["texts", "table", "images"]
    texts_field: str = "texts"  # render "texts": a list of strings
    prefix_field: str | None = None  # render "texts": shown before every text when set (e.g. a prompt)
    matrix_field: str = "x"  # render "table": rows of numbers …
    vector_field: str | None = "y"  # … and one more column
    image_field: str = "png"  # render "images": one base64 PNG (e.g. a grid of the n images) …
    columns_field: str | None = "columns"  # … with this many images per row (for the caption)
    count_field: str | None = "images"  # … of len(answer[count_field]) images (for the caption)
    left_policy: str = "replace"  # the policies the two panels start on
    right_policy: str = "accumulate"


_CSS = """
:root { --ink:#1d2330; --muted:#5b6475; --line:#d9dee7; --accent:#2957a4; --bad:#b42318; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, sans-serif; color: var(--ink); margin: 0; background: #f6f7fa; }
header { padding: 14px 22px; background: #fff; border-bottom: 1px solid var(--line); }
header h1 { font-size: 19px; margin: 0 0 4px; }
header p { margin: 0; color: var(--muted); }
#controls { display: flex; flex-wrap: wrap; gap: 12px 18px; align-items: end; padding: 12px 22px; }
label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); gap: 3px; }
input, select { font: inherit; padding: 4px 6px; border: 1px solid var(--line); border-radius: 4px;
  background: #fff; min-width: 90px; }
input[type=text] { min-width: 260px; }
button { font: inherit; padding: 6px 16px; border: 0; border-radius: 4px; background: var(--accent);
  color: #fff; cursor: pointer; }
button:disabled { opacity: .55; cursor: wait; }
main { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; padding: 0 22px 22px; }
section.panel { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 14px;
  min-width: 0; }
.pick { display: flex; gap: 12px; margin-bottom: 8px; }
.card { font-size: 12px; color: var(--muted); margin: 6px 0 10px; word-break: break-all; }
.error { color: var(--bad); white-space: pre-wrap; }
ol.texts { padding-left: 22px; margin: 0; }
ol.texts li { white-space: pre-wrap; margin-bottom: 10px; padding-bottom: 8px;
  border-bottom: 1px dashed var(--line); }
.prefix { font-weight: 600; }
.scroll { overflow: auto; max-height: 70vh; }
table { border-collapse: collapse; font: 12px/1.3 ui-monospace, monospace; }
th, td { padding: 2px 7px; text-align: right; border-bottom: 1px solid var(--line); }
th { position: sticky; top: 0; background: #fff; }
td.y, th.y { font-weight: 700; border-left: 2px solid var(--line); }
figure.images { margin: 0; }
figure.images img { display: block; max-width: 100%; image-rendering: pixelated; background: #000; }
figure.images figcaption { font-size: 12px; color: var(--muted); margin-top: 6px; }
@media (max-width: 900px) { main { grid-template-columns: 1fr; } }
"""

_JS = r"""
"use strict";
const SPEC = JSON.parse(document.getElementById("spec").textContent);
const BASE = location.pathname.replace(/\/ui\/?$/, "").replace(/\/$/, "");
let LISTING = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

async function post(path, body) {
  const response = await fetch(BASE + path, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
  const text = await response.text();
  let data = null;
  try { data = JSON.parse(text); } catch (e) { data = null; }
  if (!response.ok) {
    const item = Array.isArray(data) ? data[0] : data;
    let message = (item && item.error) || text || response.statusText;
    if (item && Array.isArray(item.detail)) {
      message += ": " + item.detail.map(d => (d.loc || []).join(".") + ": " + d.msg).join("; ");
    }
    throw new Error(response.status + " " + message);
  }
  return data;
}

function buildControls() {
  const box = document.getElementById("controls");
  for (const c of SPEC.controls) {
    const input = el("input", {id: "f-" + c.name, name: c.name, title: c.help || c.label,
                               type: c.kind === "text" ? "text" : "number"});
    if (c.min !== null) input.min = c.min;
    if (c.max !== null) input.max = c.max;
    if (c.step !== null) input.step = c.step; else if (c.kind === "float") input.step = "any";
    if (c.default !== null) input.value = c.default;
    box.append(el("label", {}, c.label, input));
  }
  const button = el("button", {id: "sample", type: "button", text: "Sample both"});
  button.addEventListener("click", sampleAll);
  box.append(button);
}

function requestBody() {
  const body = {};
  for (const c of SPEC.controls) {
    const raw = document.getElementById("f-" + c.name).value.trim();
    if (raw === "") continue;
    body[c.name] = c.kind === "int" ? parseInt(raw, 10) : c.kind === "float" ? parseFloat(raw) : raw;
  }
  return body;
}

function fillIterations(panel) {
  const lineage = LISTING.lineages.find(l => l.name === panel.lineage.value);
  panel.iteration.replaceChildren();
  for (let n = 1; n <= lineage.iterations; n++) {
    const trained = lineage.trained.includes(n);
    const label = trained ? "iteration " + n : "iteration " + n + " (not trained)";
    const option = el("option", {value: String(n), text: label});
    option.disabled = !trained;
    panel.iteration.append(option);
  }
  const last = lineage.trained.length ? lineage.trained[lineage.trained.length - 1] : 1;
  const isDefault = lineage.name === LISTING.default.lineage;
  panel.iteration.value = String(isDefault ? LISTING.default.iteration : last);
}

function buildPanel(id, policy, fallback) {
  const section = document.getElementById(id);
  const lineage = el("select", {name: "lineage", "aria-label": "lineage"});
  for (const l of LISTING.lineages) lineage.append(el("option", {value: l.name, text: l.name + " (" + l.policy + ")"}));
  const chosen = LISTING.lineages.find(l => l.policy === policy && l.trained.length) || fallback;
  lineage.value = chosen.name;
  const iteration = el("select", {name: "iteration", "aria-label": "iteration"});
  const card = el("div", {class: "card"});
  const out = el("div", {class: "out"});
  section.replaceChildren(el("div", {class: "pick"}, el("label", {}, "lineage", lineage),
                                 el("label", {}, "iteration", iteration)), card, out);
  const panel = {section, lineage, iteration, card, out};
  lineage.addEventListener("change", () => fillIterations(panel));
  fillIterations(panel);
  return panel;
}

function showModel(panel, model) {
  panel.card.textContent = model.lineage + " · " + model.policy + " · iteration " + model.iteration +
    " · seed " + model.lineage_seed + " · weights " + model.weights_sha256.slice(0, 12) +
    " · card " + model.card_sha256.slice(0, 12) + " · trained on " + model.train_items + " items";
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function renderImages(panel, data) {
  const encoded = data[SPEC.image_field];
  if (typeof encoded !== "string" || !BASE64.test(encoded)) throw new Error("the answer holds no PNG");
  const count = SPEC.count_field && Array.isArray(data[SPEC.count_field]) ? data[SPEC.count_field].length : null;
  const columns = SPEC.columns_field ? data[SPEC.columns_field] : null;
  const first = data.start || 0;
  let caption = count === null ? "" : count + (count === 1 ? " image" : " images") + ", items " + first + "–" +
    (first + count - 1);
  if (data.shape) caption += (caption ? " · " : "") + data.shape.join("×") + " each";
  if (columns) caption += (caption ? " · " : "") + columns + " per row";
  const image = el("img", {class: "grid", alt: caption || "images", src: "data:image/png;base64," + encoded});
  const figure = el("figure", {class: "images"}, image, el("figcaption", {text: caption}));
  return new Promise((resolve, reject) => {
    image.addEventListener("load", () => {
      // whole-pixel upscaling (crisp), as wide as the panel allows, at most 8×
      const room = panel.section.clientWidth - 30;
      const scale = Math.max(1, Math.min(8, Math.floor(room / image.naturalWidth)));
      image.style.width = image.naturalWidth * scale + "px";
      resolve();
    }, {once: true});
    image.addEventListener("error", () => reject(new Error("the answer's PNG does not decode")), {once: true});
    panel.out.replaceChildren(figure);
  });
}

async function render(panel, data) {
  if (SPEC.render === "images") {
    await renderImages(panel, data);
    return;
  }
  if (SPEC.render === "texts") {
    const list = el("ol", {class: "texts", start: String((data.start || 0) + 1)});
    const prefix = SPEC.prefix_field ? data[SPEC.prefix_field] : null;
    for (const text of data[SPEC.texts_field]) {
      const item = el("li", {class: "sample"});
      if (prefix) item.append(el("span", {class: "prefix", text: prefix}));
      item.append(text);
      list.append(item);
    }
    panel.out.replaceChildren(list);
    return;
  }
  const rows = data[SPEC.matrix_field];
  const extra = SPEC.vector_field ? data[SPEC.vector_field] : null;
  const width = rows.length ? rows[0].length : 0;
  const head = el("tr", {}, el("th", {text: "#"}));
  for (let j = 1; j <= width; j++) head.append(el("th", {text: SPEC.matrix_field + j}));
  if (extra) head.append(el("th", {class: "y", text: SPEC.vector_field}));
  const body = el("tbody");
  rows.forEach((row, i) => {
    const tr = el("tr", {class: "sample"}, el("td", {text: String((data.start || 0) + i)}));
    for (const v of row) tr.append(el("td", {text: v.toFixed(4)}));
    if (extra) tr.append(el("td", {class: "y", text: extra[i].toFixed(4)}));
    body.append(tr);
  });
  panel.out.replaceChildren(el("div", {class: "scroll"}, el("table", {}, el("thead", {}, head), body)));
}

async function samplePanel(panel) {
  panel.section.dataset.state = "busy";
  const body = Object.assign(requestBody(), {lineage: panel.lineage.value,
                                             iteration: parseInt(panel.iteration.value, 10)});
  try {
    const data = await post(SPEC.endpoint, body);
    showModel(panel, data.model);
    await render(panel, data);
    panel.section.dataset.state = "done";
  } catch (error) {
    panel.out.replaceChildren(el("p", {class: "error", text: String(error.message || error)}));
    panel.section.dataset.state = "error";
  }
}

let PANELS = [];
async function sampleAll() {
  const button = document.getElementById("sample");
  button.disabled = true;
  try { await Promise.all(PANELS.map(samplePanel)); } finally { button.disabled = false; }
}

async function start() {
  buildControls();
  try {
    LISTING = await post("/models", {});
  } catch (error) {
    document.getElementById("left").append(el("p", {class: "error", text: String(error.message || error)}));
    return;
  }
  document.getElementById("default").textContent = "Started with " + LISTING.default.lineage +
    ", iteration " + LISTING.default.iteration + ".";
  const first = LISTING.lineages[0];
  const second = LISTING.lineages[1] || first;
  PANELS = [buildPanel("left", SPEC.left_policy, first), buildPanel("right", SPEC.right_policy, second)];
  document.body.dataset.ready = "true";
}
start();
"""


def render_page(spec: PageSpec) -> str:
    """The page as one HTML document (the spec is embedded as JSON; nothing else is fetched)."""
    data = json.dumps(spec.model_dump(mode="json")).replace("<", "\\u003c")  # never closes the script
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(spec.title)}</title>
<link rel="icon" href="data:,">
<style>{_CSS}</style>
</head>
<body>
<header><h1>{html.escape(spec.title)}</h1><p>{html.escape(spec.intro)} <span id="default"></span>
 API: <a href="../docs.json">OpenAPI</a>.</p></header>
<div id="controls"></div>
<main><section class="panel" id="left"></section><section class="panel" id="right"></section></main>
<script type="application/json" id="spec">{data}</script>
<script>{_JS}</script>
</body>
</html>
"""


# Only what the page needs: its own inline code and the server's endpoints (same origin).
_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'")


def page_app(spec: PageSpec) -> ASGIApp:
    """A minimal ASGI app answering GET/HEAD with the page (mount it, e.g. at ``/ui``)."""
    body = render_page(spec).encode()

    async def app(scope: Scope, receive: Callable[[], Awaitable[Message]],
                  send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["method"] not in {"GET", "HEAD"}:
            await send({"type": "http.response.start", "status": 405,
                        "headers": [(b"allow", b"GET, HEAD"), (b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"method not allowed: use GET\n"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"), (b"content-security-policy", _CSP.encode()),
            (b"x-content-type-options", b"nosniff")]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    return app
