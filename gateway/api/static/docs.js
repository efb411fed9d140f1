// Renders /openapi.json as a readable page with a "try it" form per endpoint.
// Self-contained (no CDN): edge devices are often offline.
"use strict";

(() => {
  const TOKEN_KEY = "tidegate.token";
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined) n.textContent = text;
    return n;
  };

  // `code` spans in descriptions become <code> elements (text only, never HTML).
  function rich(tag, cls, text) {
    const node = el(tag, cls);
    String(text || "").split("`").forEach((part, i) => {
      node.append(i % 2 ? el("code", "", part) : document.createTextNode(part));
    });
    return node;
  }

  function renderOp(path, method, op) {
    const box = el("details", "panel op");
    const summary = el("summary");
    summary.append(el("span", "method", method.toUpperCase()), el("span", "path", path), el("span", "summary", op.summary || ""));
    box.append(summary);
    const body = el("div", "op-body");
    if (op.description) body.append(rich("p", "", op.description));
    const inputs = [];
    if (op.parameters && op.parameters.length) {
      const table = el("table");
      const head = el("tr");
      ["parameter", "description", "value"].forEach((h) => head.append(el("th", "", h)));
      table.append(head);
      for (const p of op.parameters) {
        const tr = el("tr");
        const name = el("td");
        name.append(el("code", "", p.name));
        const input = el("input");
        input.name = p.name;
        input.placeholder = p.example || (p.schema && p.schema.enum ? p.schema.enum.join(" | ") : "");
        inputs.push(input);
        const cell = el("td");
        cell.append(input);
        tr.append(name, rich("td", "", p.description), cell);
        table.append(tr);
      }
      body.append(table);
    }
    const codes = Object.entries(op.responses || {}).map(([c, r]) => c + " " + r.description).join(" · ");
    body.append(el("p", "status-line", "Responses: " + codes));
    const tryRow = el("div", "try");
    const button = el("button", "", "Send request");
    button.type = "button";
    const url = el("code", "", path);
    tryRow.append(button, url);
    body.append(tryRow);
    const out = el("pre");
    out.hidden = true;
    body.append(out);
    button.addEventListener("click", async () => {
      const q = new URLSearchParams();
      for (const i of inputs) if (i.value.trim()) q.set(i.name, i.value.trim());
      const target = path + (q.toString() ? "?" + q.toString() : "");
      url.textContent = target;
      const headers = {};
      const token = localStorage.getItem(TOKEN_KEY);
      if (token) headers.Authorization = "Bearer " + token;
      out.hidden = false;
      out.textContent = "…";
      try {
        const r = await fetch(target, { headers, cache: "no-store" });
        let text = await r.text();
        if ((r.headers.get("content-type") || "").includes("json")) {
          try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* keep raw */ }
        }
        if (text.length > 20000) text = text.slice(0, 20000) + "\n… (truncated)";
        out.textContent = r.status + " " + r.statusText + "\n\n" + text;
      } catch (err) {
        out.textContent = "request failed: " + err.message;
      }
    });
    box.append(body);
    return box;
  }

  async function main() {
    $("token").value = localStorage.getItem(TOKEN_KEY) || "";
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      localStorage.setItem(TOKEN_KEY, $("token").value.trim());
    });
    const doc = await (await fetch("/openapi.json")).json();
    $("intro").replaceWith(rich("p", "", doc.info.title + " " + doc.info.version + " — " + doc.info.description));
    const ops = $("ops");
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(item)) ops.append(renderOp(path, method, op));
    }
  }

  main().catch((err) => ($("intro").textContent = "Could not load /openapi.json: " + err.message));
})();
